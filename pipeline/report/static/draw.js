"use strict";
(function () {
  const model = JSON.parse(document.getElementById("digits-model").textContent);
  const P = model.prepare;          // image.py's constants: SIDE, BOX, CENTRE, ...
  const f32 = Math.fround;          // NumPy computes the image in float32: round as it does

  // ---- The weights: W1 (784, H), b1 (H,), W2 (H, 10), b2 (10,), row-major, one after
  // the other in the order the page gives (network.pack's).
  function decodeWeights(base64, shapes, order) {
    const text = atob(base64);
    const view = new DataView(new ArrayBuffer(text.length));
    for (let i = 0; i < text.length; i++) view.setUint8(i, text.charCodeAt(i));
    const params = {};
    let offset = 0;
    for (const name of order) {
      const size = shapes[name].reduce((a, b) => a * b, 1);
      const values = new Float32Array(size);
      for (let i = 0; i < size; i++) values[i] = view.getFloat32(offset + 4 * i, true);
      params[name] = values;
      offset += 4 * size;
    }
    params.inputs = shapes.W1[0];
    params.hidden = shapes.W1[1];
    params.classes = shapes.W2[1];
    return params;
  }
  const net = decodeWeights(model.data, model.shapes, model.order);

  // Python's round(): a half goes to the even neighbour (2.5 -> 2, 3.5 -> 4).
  function roundHalfEven(x) {
    const r = Math.round(x);
    return Math.abs(x % 1) === 0.5 && r % 2 !== 0 ? r - 1 : r;
  }

  // ---- Preparing a drawing: image.py's functions, one by one, under their JS names.
  // An image is {data: Float32Array, w, h}, row-major.

  // Pillow's resampling filters, with their reach in input pixels at scale 1.
  const BOX = {support: 0.5, at: x => (x > -0.5 && x <= 0.5 ? 1 : 0)};
  const BILINEAR = {support: 1, at: x => Math.max(1 - Math.abs(x), 0)};
  const sinc = x => (x === 0 ? 1 : Math.sin(x * Math.PI) / (x * Math.PI));
  const LANCZOS = {support: 3, at: x => (x >= -3 && x < 3 ? sinc(x) * sinc(x / 3) : 0)};

  // Pillow's weights for one axis: output pixel o averages inputs first[o] ... with
  // weights[o]. Shrinking widens the filter by the scale, so it averages like an
  // anti-aliased camera rather than picking pixels.
  function axisWeights(inSize, outSize, filter) {
    const scale = inSize / outSize;
    const widen = Math.max(scale, 1);
    const reach = filter.support * widen;
    const first = [], weights = [];
    for (let o = 0; o < outSize; o++) {
      const centre = (o + 0.5) * scale;
      const lo = Math.max(Math.trunc(centre - reach + 0.5), 0);
      const hi = Math.min(Math.trunc(centre + reach + 0.5), inSize);
      const ws = [];
      let total = 0;
      for (let i = lo; i < hi; i++) {
        const wgt = filter.at((i - centre + 0.5) * (1 / widen));
        ws.push(wgt);
        total += wgt;
      }
      weights.push(total === 0 ? ws : ws.map(v => v / total));
      first.push(lo);
    }
    return {first, weights};
  }

  // Image.resize on a float32 ("F") image to w x h: rows first, then columns, each
  // pass rounding to float32; an axis whose size does not change is left alone.
  function resize(img, w, h, filter) {
    let {data, w: iw, h: ih} = img;
    if (w !== iw) {
      const {first, weights} = axisWeights(iw, w, filter);
      const out = new Float32Array(w * ih);
      for (let y = 0; y < ih; y++) {
        for (let x = 0; x < w; x++) {
          const ws = weights[x], at = y * iw + first[x];
          let sum = 0;
          for (let k = 0; k < ws.length; k++) sum += data[at + k] * ws[k];
          out[y * w + x] = sum;
        }
      }
      [data, iw] = [out, w];
    }
    if (h !== ih) {
      const {first, weights} = axisWeights(ih, h, filter);
      const out = new Float32Array(iw * h);
      for (let y = 0; y < h; y++) {
        for (let x = 0; x < iw; x++) {
          const ws = weights[y], at = first[y] * iw + x;
          let sum = 0;
          for (let k = 0; k < ws.length; k++) sum += data[at + k * iw] * ws[k];
          out[y * iw + x] = sum;
        }
      }
      [data, ih] = [out, h];
    }
    return {data, w: iw, h: ih};
  }

  // Grey dilation by a k x k square, outside the image counting as 0 (down the
  // columns, then along the rows): strokes widen by k - 1. Of negated values, it erodes.
  function maxFilter({data, w, h}, k) {
    const lo = Math.floor(k / 2), hi = k - 1 - lo;
    // The max over each window of `count` lines of n pixels, `step` apart in `src`;
    // line j starts at j * next.
    const pass = (src, n, step, count, next) => {
      const out = new Float32Array(w * h);
      for (let j = 0; j < count; j++) {
        for (let i = 0; i < n; i++) {
          const from = Math.max(i - lo, 0), to = Math.min(i + hi, n - 1);
          let m = from > i - lo || to < i + hi ? 0 : -Infinity;
          for (let d = from; d <= to; d++) m = Math.max(m, src[j * next + d * step]);
          out[j * next + i * step] = m;
        }
      }
      return out;
    };
    return {data: pass(pass(data, h, w, w, 1), w, 1, h, w), w, h};
  }

  // The k-th smallest of `a` (0-based), reordering `a` so that a[i] <= it for i < k.
  // Quickselect, splitting in three around the pivot: a drawing is mostly equal
  // values (paper), which a two-way split would handle in quadratic time.
  function select(a, k) {
    let lo = 0, hi = a.length - 1;
    for (;;) {
      const [x, y, z] = [a[lo], a[(lo + hi) >> 1], a[hi]];
      const pivot = Math.max(Math.min(x, y), Math.min(Math.max(x, y), z));   // middle one
      let lt = lo, i = lo, gt = hi;                 // [lo, lt) < pivot, (gt, hi] > pivot
      while (i <= gt) {
        const v = a[i];
        if (v < pivot) { a[i++] = a[lt]; a[lt++] = v; }
        else if (v > pivot) { a[i] = a[gt]; a[gt--] = v; }
        else i++;
      }
      if (k < lt) hi = lt - 1;
      else if (k > gt) lo = gt + 1;
      else return pivot;
    }
  }

  // NumPy's median of float32 values: of an even count, the float32 mean of the middle
  // two. (Sorting 78,400 values for it took most of a 280x280 drawing's preparation.)
  function median(values) {
    const a = Float32Array.from(values);
    const mid = a.length >> 1;
    const upper = select(a, mid);
    if (a.length % 2) return upper;
    let lower = -Infinity;
    for (let i = 0; i < mid; i++) lower = Math.max(lower, a[i]);
    return f32(f32(lower + upper) / 2);
  }

  // read_grey: Pillow's grey level (ITU-R 601-2 luma); with transparent parts, the
  // strokes are where the image is opaque, whatever their colour, black on white.
  function greyLevels(imageData) {
    const {width: w, height: h, data: rgba} = imageData;
    const data = new Float32Array(w * h);
    let seeThrough = false;
    for (let i = 0; i < w * h; i++) seeThrough = seeThrough || rgba[4 * i + 3] < 255;
    for (let i = 0; i < w * h; i++) {
      data[i] = seeThrough ? f32(1 - f32(rgba[4 * i + 3] / 255))
        : f32(Math.floor((rgba[4 * i] * 19595 + rgba[4 * i + 1] * 38470
                          + rgba[4 * i + 2] * 7471 + 0x8000) / 65536) / 255);
    }
    return {data, w, h};
  }

  // paper: the paper's brightness near each pixel, under dark ink: the brightest
  // level in a window a quarter of the image wide, on a COARSE-pixel copy, smoothed.
  function paper(img) {
    const shrink = P.coarse / Math.max(img.w, img.h);
    const small = resize(img, Math.max(1, roundHalfEven(img.w * shrink)),
                         Math.max(1, roundHalfEven(img.h * shrink)), BOX);
    const lit = maxFilter(small, Math.max(1, Math.floor(Math.max(small.w, small.h) / 4)));
    const smooth = resize(lit, Math.max(1, Math.floor(lit.w / 8)),
                          Math.max(1, Math.floor(lit.h / 8)), BOX);
    return resize(smooth, img.w, img.h, BILINEAR).data;
  }

  // paper_is_light: most of a page is paper, so its median is the paper's shade;
  // ink lies in the tail that reaches further from it (the outermost TAIL left out).
  function paperIsLight(grey) {
    const levels = Float32Array.from(grey).sort();
    const n = levels.length - 1;
    const mid = levels[Math.floor(n / 2)];
    return mid - levels[Math.floor(P.tail * n)] >= levels[Math.floor((1 - P.tail) * n)] - mid;
  }

  // ink: 1 where the stroke is strongest, 0 on the paper, whichever is the lighter,
  // measured against the paper near it; null when the image is one flat shade. A
  // drawing is its own page: the page, frame and specks of a photo are not looked for.
  function ink({data: grey, w, h}) {
    const light = paperIsLight(grey);
    const darkInk = light ? grey : grey.map(v => 1 - v);
    const ground = paper({data: darkInk, w, h}).map(v => Math.max(v, f32(1e-3)));
    const strokes = new Float32Array(w * h);
    let peak = -Infinity;
    for (let i = 0; i < w * h; i++) {
      strokes[i] = f32(ground[i] - darkInk[i]) / ground[i];
      peak = Math.max(peak, strokes[i]);
    }
    if (peak < 0.1) return null;
    const relative = strokes.map(v => v / peak);
    // Soft threshold: paper texture goes to 0, strokes keep their grey edges. The
    // paper's spread (median absolute deviation as a standard deviation) sets the floor.
    const centre = median(relative);
    const spread = 1.4826 * median(relative.map(v => Math.abs(v - centre)));
    const floor = Math.min(Math.max(P.noise_floor, P.noise_sigmas * spread), 0.5);
    const [low, span] = [f32(floor), f32(1 - floor)];
    return {data: relative.map(v => Math.min(Math.max(f32(v - low) / span, 0), 1)), w, h};
  }

  // Mean stroke width: a stroke of width s and length L has area s*L and an
  // outline of 2*L, so s = 2 * area / outline (pixels above 0.5 count as ink).
  function strokeWidth({data, w, h}) {
    let area = 0, outline = 0;
    for (let y = 0; y < h; y++) {
      for (let x = 0; x < w; x++) {
        const on = data[y * w + x] > 0.5;
        area += on;
        if (y > 0 && on !== data[(y - 1) * w + x] > 0.5) outline++;
        if (x > 0 && on !== data[y * w + x - 1] > 0.5) outline++;
      }
    }
    return 2 * area / Math.max(outline, 1);
  }

  // ink_box: the rows and columns holding ink, found on every step-th pixel, where
  // an opening (erode, then dilate, k x k) drops specks narrower than k pixels.
  function inkBox({data, w, h}) {
    const step = Math.max(1, Math.floor(Math.max(w, h) / 300));
    const sw = Math.ceil(w / step), sh = Math.ceil(h / step);
    let solid = {data: new Float32Array(sw * sh), w: sw, h: sh};
    for (let y = 0; y < h; y++) {          // a copy's pixel: does its step x step block hold ink?
      for (let x = 0; x < w; x++) {
        if (data[y * w + x] > 0) solid.data[Math.floor(y / step) * sw + Math.floor(x / step)] = 1;
      }
    }
    const k = Math.floor(Math.min(sw, sh) / 100);
    if (k > 1) {
      const negated = img => ({...img, data: img.data.map(v => -v)});
      const opened = maxFilter(negated(maxFilter(negated(solid), k)), k);
      if (opened.data.some(v => v > 0)) solid = opened;
    }
    let top = sh, bottom = -1, left = sw, right = -1;
    for (let y = 0; y < sh; y++) {
      for (let x = 0; x < sw; x++) {
        if (solid.data[y * sw + x] > 0) {
          top = Math.min(top, y); bottom = Math.max(bottom, y);
          left = Math.min(left, x); right = Math.max(right, x);
        }
      }
    }
    return {top: top * step, left: left * step,
            bottom: Math.min((bottom + 1) * step, h), right: Math.min((right + 1) * step, w)};
  }

  // fit_box: crop to the ink, widen thin strokes, scale the longer side to BOX.
  function fitBox(strokes) {
    const {data, w} = strokes;
    const {top, left, bottom, right} = inkBox(strokes);
    const cw = right - left, ch = bottom - top;
    let crop = {data: new Float32Array(cw * ch), w: cw, h: ch};
    for (let y = 0; y < ch; y++) {
      crop.data.set(data.subarray((top + y) * w + left, (top + y) * w + left + cw), y * cw);
    }
    const work = 8 * P.box;                 // keeps the dilation cheap
    if (Math.max(cw, ch) > work) {
      const shrink = work / Math.max(cw, ch);
      crop = resize(crop, Math.max(1, roundHalfEven(cw * shrink)),
                    Math.max(1, roundHalfEven(ch * shrink)), BOX);
      const peak = crop.data.reduce((a, b) => Math.max(a, b), 0);
      crop.data = crop.data.map(v => v / peak);   // a hairline averages to faint grey
    }
    const grow = roundHalfEven(P.stroke * Math.max(crop.w, crop.h) / P.box - strokeWidth(crop));
    if (grow >= 2) crop = maxFilter(crop, grow + 1);
    const scale = P.box / Math.max(crop.w, crop.h);
    const fitted = resize(crop, Math.max(1, roundHalfEven(crop.w * scale)),
                          Math.max(1, roundHalfEven(crop.h * scale)), LANCZOS);
    fitted.data = fitted.data.map(v => Math.min(Math.max(v, 0), 1));   // Lanczos overshoots
    return fitted;
  }

  // centre_by_mass: place the digit in SIDE x SIDE with its centre of mass on
  // pixel (CENTRE, CENTRE), to the nearest pixel, as MNIST did.
  function centreByMass({data, w, h}) {
    let mass = 0, r = 0, c = 0;
    for (let y = 0; y < h; y++) {
      for (let x = 0; x < w; x++) {
        const v = data[y * w + x];
        mass += v; r += y * v; c += x * v;
      }
    }
    const clip = (v, hi) => Math.min(Math.max(v, 0), hi);
    const top = clip(roundHalfEven(P.centre - r / mass), P.side - h);
    const left = clip(roundHalfEven(P.centre - c / mass), P.side - w);
    const field = new Float32Array(P.side * P.side);
    for (let y = 0; y < h; y++) {
      field.set(data.subarray(y * w, y * w + w), (top + y) * P.side + left);
    }
    return field;
  }

  // prepare: a canvas's ImageData -> the 784 pixels in [0, 1] the network receives,
  // stored as 8-bit grey levels and scaled back as the preprocess stage scales
  // training images; null when there is no ink.
  function prepare(imageData) {
    const strokes = ink(greyLevels(imageData));
    if (strokes === null) return null;
    const field = centreByMass(fitBox(strokes));
    const toUnit = f32(1 / 255);
    return field.map(v => f32(roundHalfEven(f32(v * 255)) * toUnit));
  }

  // ---- The forward pass: network.forward for one image.
  function forward(pixels) {
    if (pixels.length !== net.inputs) {
      throw new Error(`expected ${net.inputs} pixels, found ${pixels.length}`);
    }
    const H = net.hidden, C = net.classes;
    const hidden = new Float64Array(H);
    for (let i = 0; i < net.inputs; i++) {
      const x = pixels[i];
      if (x === 0) continue;                // most of a digit is paper: 0 adds nothing
      for (let j = 0; j < H; j++) hidden[j] += x * net.W1[i * H + j];
    }
    for (let j = 0; j < H; j++) hidden[j] = Math.max(hidden[j] + net.b1[j], 0);   // ReLU
    const logits = new Float64Array(C);
    for (let j = 0; j < H; j++) {
      if (hidden[j] === 0) continue;
      for (let k = 0; k < C; k++) logits[k] += hidden[j] * net.W2[j * C + k];
    }
    for (let k = 0; k < C; k++) logits[k] += net.b2[k];
    const top = Math.max(...logits);        // exp never overflows; softmax is unchanged
    const exps = logits.map(z => Math.exp(z - top));
    const total = exps.reduce((a, b) => a + b, 0);
    return {probs: Array.from(exps, e => e / total), hidden};
  }

  window.digits = {
    prepare,
    classify: pixels => forward(pixels).probs,
  };

  // ---- The panel: the pen, and drawing what the network makes of the drawing.
  const canvas = document.getElementById("digit-canvas");
  const pen = canvas.getContext("2d", {willReadFrequently: true});
  pen.lineWidth = Number(canvas.dataset.pen);
  pen.lineCap = pen.lineJoin = "round";
  const seen = document.getElementById("digit-input").getContext("2d");
  const hiddenView = document.getElementById("digit-hidden");
  const fired = hiddenView.getContext("2d");

  function clear() {
    pen.fillStyle = "#fff";                 // opaque paper: read by its colours, as image.py does
    pen.fillRect(0, 0, canvas.width, canvas.height);
    pen.fillStyle = pen.strokeStyle = "#000";
    update();
  }

  // Pointer coordinates in canvas pixels (CSS may scale the canvas on small screens).
  function at(event) {
    const box = canvas.getBoundingClientRect();
    return [(event.clientX - box.left) * canvas.width / box.width,
            (event.clientY - box.top) * canvas.height / box.height];
  }

  let last = null;                          // the pen's last point while it is down
  let pending = false;
  function schedule() {                     // one update a frame, however many moves
    if (!pending) { pending = true; requestAnimationFrame(update); }
  }
  canvas.addEventListener("pointerdown", event => {
    if (event.button !== 0) return;         // the main button, a finger or a pen tip
    event.preventDefault();
    canvas.setPointerCapture(event.pointerId);
    last = at(event);
    pen.beginPath();
    pen.arc(last[0], last[1], pen.lineWidth / 2, 0, 2 * Math.PI);
    pen.fill();
    schedule();
  });
  canvas.addEventListener("pointermove", event => {
    if (last === null) return;
    // A pen or fast finger reports several points a frame: draw through them all.
    const moves = event.getCoalescedEvents ? event.getCoalescedEvents() : [];
    for (const move of moves.length ? moves : [event]) {
      const point = at(move);
      pen.beginPath();
      pen.moveTo(last[0], last[1]);
      pen.lineTo(point[0], point[1]);
      pen.stroke();
      last = point;
    }
    schedule();
  });
  for (const type of ["pointerup", "pointercancel"]) {
    canvas.addEventListener(type, () => { last = null; schedule(); });
  }
  document.getElementById("digit-clear").addEventListener("click", clear);

  // Grey levels 0..1 -> an ImageData, dark where the value is high (like the report's figures).
  function shade(values, w, h) {
    const out = new ImageData(w, h);
    for (let i = 0; i < w * h; i++) {
      const v = i < values.length ? 255 - Math.round(255 * values[i]) : 204;
      out.data.set([v, v, v, 255], 4 * i);
    }
    return out;
  }

  function update() {
    pending = false;
    const pixels = prepare(pen.getImageData(0, 0, canvas.width, canvas.height));
    const {probs, hidden} = pixels ? forward(pixels) : {probs: [], hidden: []};
    const best = probs.length ? probs.indexOf(Math.max(...probs)) : -1;
    document.getElementById("digit-top").textContent = best < 0 ? "\u2013" : String(best);
    document.getElementById("digit-top-p").textContent = best < 0
      ? "draw a digit in the box" : `${(100 * probs[best]).toFixed(1)}% sure`;
    for (let k = 0; k < net.classes; k++) {
      const p = probs.length ? probs[k] : 0;
      document.getElementById(`digit-fill-${k}`).style.width = `${100 * p}%`;
      document.getElementById(`digit-p-${k}`).textContent = `${(100 * p).toFixed(1)}%`;
    }
    seen.putImageData(shade(pixels || new Float32Array(P.side * P.side), P.side, P.side), 0, 0);
    const most = Math.max(0, ...hidden);
    const relative = Array.from(hidden, v => (most > 0 ? v / most : 0));
    fired.putImageData(shade(relative.length ? relative : new Float32Array(net.hidden),
                             hiddenView.width, hiddenView.height), 0, 0);
    const active = hidden.filter(v => v > 0).length;
    document.getElementById("digit-active").textContent = pixels
      ? `${active} of the ${net.hidden} hidden units fire` : `The ${net.hidden} hidden units`;
  }

  clear();
})();

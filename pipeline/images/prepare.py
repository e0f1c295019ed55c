"""A picture of a digit -> the 784 pixels the network reads, as MNIST's were made.

Grey levels; the page found inside the picture (a desk, a frame around it are left
out); light ink on a dark ground (inverted when the ink is the darker shade: the one
further from the page's median); specks dropped; cropped to the ink, scaled to fit a 20x20 box keeping its
aspect, and placed in a 28x28 field with its centre of mass at the centre.
`predict-image` prepares image files so, and the report's drawing panel does the same
in JavaScript (pipeline/report/static/draw.js) for a clean drawing, which is its own
page and has no specks.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from PIL import Image, ImageOps, UnidentifiedImageError

from pipeline.errors import PipelineError
from pipeline.images.pixels import scale

SIDE = 28              # the field MNIST digits live in
BOX = 20               # the box the digit is scaled to fit
CENTRE = 14.0          # where MNIST puts the centre of mass (row and column, 0-based)
NOISE_FLOOR = 0.15     # ink fainter than this, relative to the darkest stroke, is paper
NOISE_SIGMAS = 4.0     # and so is ink within this many of the paper's standard deviations
STROKE = 2.0           # MNIST's median stroke width in the 20x20 box, in pixels (ink > 0.5)
COARSE = 64            # pixels a side of the copy the paper's brightness is estimated on
PAGE_SIDE = 128        # pixels a side of the copy the page is looked for on
PAGE_SHARE = 0.4       # a page is at least this share of the picture's height and width
LINE_PAPER = 0.8       # a line of the picture crossing the page is paper at this quantile
STEP = 3               # lines of the copy an edge between a page and its surround spans
EDGE = 0.25            # a surround is darker than the page by this share of its level
TAIL = 0.001           # the share of levels at each end left out as noise
SWAPPED = 0.75         # paper and ink are in doubt when one tail is this share of the other
FRAME = 0.6            # an outer line of the page inked over this share is a frame
SPECK = 0.2            # ink apart from the digit, smaller than this share of it, is a speck
NO_DIGIT = 1 / 20      # ink less wide and tall than this share of the page is no digit
SMALL = 1 / 8          # and less than this share is a doubtful one
SHOWN = 256            # pixels a side, at most, of the page kept to be shown
# Far above a phone photo (48 MP), far below Pillow's own guard (179 MP): a small PNG of
# 13000 x 13000 would otherwise take 4 GB and seconds before it is refused or read.
MAX_PIXELS = 64_000_000


def read_grey(path: Path) -> np.ndarray:
    """An image file as grey levels (H, W) float32 in [0, 1]. In an image with
    transparent parts the strokes are where it is opaque, whatever their colour:
    they come back black on white. Raises PipelineError naming the file when
    unreadable."""
    path = Path(path)
    try:
        with Image.open(path) as img:
            if img.width * img.height > MAX_PIXELS:     # known from the header, not decoded
                raise PipelineError(f"{path}: too large: expected an image of at most "
                                    f"{MAX_PIXELS:,} pixels, found {img.width} x {img.height}")
            img = ImageOps.exif_transpose(img)          # phone photos carry their rotation
            if img.mode in ("I", "I;16", "I;16B", "I;16L"):
                wide = np.asarray(img, dtype=np.float32)
                return wide / (65535.0 if wide.max() > 255 else 255.0)
            if img.mode in ("RGBA", "LA", "PA") or "transparency" in img.info:
                alpha = np.asarray(img.convert("RGBA"), dtype=np.float32)[..., 3]   # (H, W)
                if alpha.min() < 255:
                    return 1.0 - alpha / 255.0
            grey = np.asarray(img.convert("L"), dtype=np.float32)   # (H, W)
    except FileNotFoundError:
        raise PipelineError(f"{path}: file not found") from None
    except IsADirectoryError:
        raise PipelineError(f"{path}: expected an image file, found a directory") from None
    except Image.DecompressionBombError:
        raise PipelineError(f"{path}: expected an image of at most {2 * Image.MAX_IMAGE_PIXELS:,} "
                            "pixels (Pillow's guard against decompression bombs)") from None
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise PipelineError(f"{path}: cannot read as an image (expected PNG or JPEG; "
                            f"{exc.__class__.__name__})") from None
    return grey / 255.0


def paper(grey: np.ndarray) -> np.ndarray:
    """The paper's brightness (H, W) under dark ink on light paper: the image's
    brightest level near each pixel, so that uneven light and tinted paper are not
    taken for ink. Estimated on a copy of COARSE pixels a side, where each pixel
    takes the maximum of a window a quarter of the image wide (wider than a
    stroke, so ink drops out), then smoothed, and scaled back up."""
    h, w = grey.shape
    shrink = COARSE / max(h, w)
    small = _resize(grey, (max(1, round(w * shrink)), max(1, round(h * shrink))),
                    Image.Resampling.BOX)                          # averaging tames noise
    lit = _max_filter(small, max(1, max(small.shape) // 4))
    smooth = _resize(lit, (max(1, lit.shape[1] // 8), max(1, lit.shape[0] // 8)),
                     Image.Resampling.BOX)
    return _resize(smooth, (w, h), Image.Resampling.BILINEAR)


def paper_is_light(grey: np.ndarray) -> tuple[bool, bool]:
    """Whether the paper is the lighter shade of the page's grey levels (H, W), and
    whether that is in doubt. Most of a page is paper, so its median is the paper's
    shade; ink lies in the tail that reaches further from it (levels beyond the
    darkest and lightest TAIL of the pixels are left out as noise). In doubt when the
    other tail reaches nearly as far (SWAPPED as far)."""
    levels = np.sort(grey, axis=None)                                 # (H * W,)
    mid = levels[(len(levels) - 1) // 2]
    dark = mid - levels[int(TAIL * (len(levels) - 1))]
    bright = levels[int((1 - TAIL) * (len(levels) - 1))] - mid
    return bool(dark >= bright), bool(min(dark, bright) > SWAPPED * max(dark, bright))


def ink(grey: np.ndarray, light: bool | None = None) -> np.ndarray:
    """Grey levels (H, W) -> ink (H, W) in [0, 1]: 1 where the stroke is strongest,
    0 on the paper. `light` says the paper is the lighter shade (by default the
    commoner shade is the paper, `paper_is_light`).

    Ink is measured against the paper around it, relative to its brightness: under
    light falling off across the page, a stroke is as dark a fraction of the paper
    near it everywhere. On evenly lit paper this is a plain difference."""
    if light is None:
        light = paper_is_light(grey)[0]
    dark_ink = grey if light else 1.0 - grey
    ground = np.maximum(paper(dark_ink), 1e-3)
    strokes = (ground - dark_ink) / ground
    peak = float(strokes.max())
    if peak < 0.1:
        return np.zeros_like(grey)
    relative = strokes / peak
    # Soft threshold: paper texture and JPEG noise go to 0, strokes keep their grey edges.
    # Most pixels are paper, so their spread (the median absolute deviation, scaled to a
    # standard deviation) measures the noise; a noisy photo gets a higher floor.
    spread = 1.4826 * float(np.median(np.abs(relative - np.median(relative))))
    floor = min(max(NOISE_FLOOR, NOISE_SIGMAS * spread), 0.5)
    return np.clip((relative - floor) / (1 - floor), 0.0, 1.0)


def find_page(grey: np.ndarray) -> tuple[slice, slice] | None:
    """The page inside a larger picture, (rows, columns), or None when the page is
    the whole picture. What surrounds a page (a desk, a frame, the dark margin of an
    underexposed scan) is darker than its paper. On a copy PAGE_SIDE pixels a side,
    a side has a surround when its outermost row (or column) is darker than the
    middle ones by EDGE of their level (and at least 0.1) and there is a step up to
    the page in the outer two fifths: a rise, over STEP lines, a quarter of the way to
    the page's level. The page starts at the top of that step, which also leaves
    out the lines where the edge blurs the page into its surround.
    Light falling off across the page, or a shadow on part of it, changes the levels
    gradually, less steeply than a page's edge. What is left must be a page: PAGE_SHARE
    of the picture's height and width at least, and mostly paper (a quarter of the way
    from the surround's level to the page's, or lighter: a shadow may fall on it),
    along its edge and in three corners."""
    h, w = grey.shape
    shrink = min(1.0, PAGE_SIDE / max(h, w))
    small = grey if shrink == 1 else _resize(
        grey, (max(1, round(w * shrink)), max(1, round(h * shrink))), Image.Resampling.BOX)
    if min(small.shape) <= 4 * STEP:
        return None
    spans = []
    # A line's level: its LINE_PAPER quantile, which on the page is paper, even where
    # the line crosses the digit and the desk beside the page.
    for profile in (np.quantile(small, LINE_PAPER, axis=1), np.quantile(small, LINE_PAPER, axis=0)):
        n = len(profile)
        level = float(np.median(profile[2 * n // 5: max(3 * n // 5, 2 * n // 5 + 1)]))
        dark = level - max(0.1, EDGE * level)
        outer = max(1, n * 2 // 5)               # the page holds the middle fifth
        rise = np.pad(profile[STEP:] - profile[:-STEP], (0, STEP))   # (n,) over STEP lines
        fall = np.pad(profile[:-STEP] - profile[STEP:], (STEP, 0))
        step = max(0.1, (level - min(profile[0], profile[-1])) / 4)
        first = _step_up(rise[:outer], step) if profile[0] < dark else 0
        last = n - 1 - (_step_up(fall[::-1][:outer], step) if profile[-1] < dark else 0)
        # A quarter of the way from the darker outermost line to the page's level.
        surround = min(profile[0], profile[-1])
        spans.append((first, last + 1, n, surround + (level - surround) / 4
                      if (first, last) != (0, n - 1) else np.inf))
    (r0, r1, nr, lit_rows), (c0, c1, nc, lit_cols) = spans
    # Light ink on a dark ground also has dark outer lines: a page is large, mostly
    # paper, paper along its edge and in three of its corners at least (a shadow may
    # darken one); a bold digit's box is not.
    crop = small[r0:r1, c0:c1] >= min(lit_rows, lit_cols)
    rim = np.concatenate([crop[0], crop[-1], crop[:, 0], crop[:, -1]])
    corners = crop[[0, 0, 1, 1, -1, -1, -2, -2], [0, -1, 1, -2, 0, -1, 1, -2]].reshape(4, 2)
    if (r0, r1, c0, c1) == (0, nr, 0, nc) or min((r1 - r0) / nr, (c1 - c0) / nc) < PAGE_SHARE \
            or crop.mean() < 0.5 or rim.mean() < 0.5 or corners.all(axis=1).sum() < 3:
        return None
    return (slice(r0 * h // nr, -(-r1 * h // nr)), slice(c0 * w // nc, -(-c1 * w // nc)))


def _step_up(rise: np.ndarray, step: float) -> int:
    """How many lines in from the outside the page starts: after the first rise of
    `rise` (n,) (the change over STEP lines, outside in) of at least `step`, followed
    on up; 0 when there is none (the level changes gradually: light falling off)."""
    if not (rise >= step).any():
        return 0
    i = int(np.argmax(rise >= step))
    while i + 1 < len(rise) and rise[i + 1] >= rise[i] - 0.01:
        i += 1
    return i + STEP


def _components(mask: np.ndarray) -> np.ndarray:
    """Labels (h, w) of the 8-connected regions of `mask`: each pixel of a region
    gets the flat index of the region's first pixel; pixels outside get h * w."""
    h, w = mask.shape
    outside = h * w
    labels = np.where(mask, np.arange(h * w).reshape(h, w), outside)
    while True:
        padded = np.pad(labels, 1, constant_values=outside)
        low = np.where(mask, sliding_window_view(padded, (3, 3)).min(axis=(-2, -1)), outside)
        # A label is a pixel of the same region: taking that pixel's label skips ahead.
        low = np.append(low.ravel(), outside)[low]
        if np.array_equal(low, labels):
            return labels
        labels = low


def strip_frame(strokes: np.ndarray) -> tuple[slice, slice]:
    """The rows and columns of `strokes` (H, W) inside a frame: outer lines inked
    over FRAME of their length (a scan's border), up to a twentieth of the side."""
    h, w = strokes.shape
    on = strokes > 0.5
    top, bottom, left, right = 0, h, 0, w
    most = max(3, min(h, w) // 20)
    while top < most and on[top, left:right].mean() > FRAME:
        top += 1
    while h - bottom < most and bottom - 1 > top and on[bottom - 1, left:right].mean() > FRAME:
        bottom -= 1
    while left < most and on[top:bottom, left].mean() > FRAME:
        left += 1
    while w - right < most and right - 1 > left and on[top:bottom, right - 1].mean() > FRAME:
        right -= 1
    return slice(top, bottom), slice(left, right)


def drop_specks(strokes: np.ndarray) -> np.ndarray:
    """`strokes` (H, W) without the specks: pieces of ink less than SPECK as wide
    and tall as the largest piece. Pieces are found on a copy about PAGE_SIDE pixels
    a side, whose pixel says whether its block holds ink."""
    step = max(1, -(-max(strokes.shape) // PAGE_SIDE))
    h, w = strokes.shape
    blocks = np.zeros((-(-h // step) * step, -(-w // step) * step), bool)
    blocks[:h, :w] = strokes > 0
    solid = blocks.reshape(len(blocks) // step, step, -1, step).any(axis=(1, 3))
    labels = _components(solid)
    found = np.unique(labels[solid])
    if len(found) < 2:
        return strokes
    rows, cols = np.indices(solid.shape)
    extent = np.array([max(np.ptp(rows[labels == f]), np.ptp(cols[labels == f])) + 1
                       for f in found])
    keep = np.isin(labels, found[extent >= SPECK * extent.max()])
    keep = np.repeat(np.repeat(keep, step, axis=0), step, axis=1)[:h, :w]
    return np.where(keep, strokes, 0.0)


def _resize(a: np.ndarray, size: tuple[int, int], how: Image.Resampling) -> np.ndarray:
    """Resize a float image (h, w) to `size` = (width, height) with Pillow."""
    return np.asarray(Image.fromarray(np.ascontiguousarray(a, dtype=np.float32)).resize(size, how))


def _max_filter(a: np.ndarray, k: int) -> np.ndarray:
    """Grey dilation of `a` (h, w) by a k x k square: each pixel takes its window's max."""
    lo, hi = k // 2, k - 1 - k // 2
    padded = np.pad(a, ((lo, hi), (lo, hi)))
    rows = sliding_window_view(padded, k, axis=0).max(axis=-1)      # (h, w + k - 1)
    return sliding_window_view(rows, k, axis=1).max(axis=-1)        # (h, w)


def stroke_width(strokes: np.ndarray) -> float:
    """Mean stroke width in pixels: for a stroke of width w and length L the area
    is about w*L and the outline about 2*L, so w = 2 * area / outline."""
    mask = strokes > 0.5
    outline = (np.count_nonzero(mask[1:] != mask[:-1])
               + np.count_nonzero(mask[:, 1:] != mask[:, :-1]))
    return 2.0 * np.count_nonzero(mask) / max(outline, 1)


def ink_box(strokes: np.ndarray) -> tuple[slice, slice]:
    """The rows and columns of `strokes` (H, W) that hold the ink, specks of noise
    left out. They are found on a copy whose pixel says whether an s x s block holds
    ink (s keeps it about 300 pixels a side, so the box may be up to s - 1 pixels
    wide of the ink), where an opening (a min filter, then a max filter, k x k)
    removes ink narrower than k pixels, k a hundredth of the copy's side."""
    step = max(1, max(strokes.shape) // 300)
    h, w = strokes.shape
    blocks = np.zeros((-(-h // step) * step, -(-w // step) * step), bool)
    blocks[:h, :w] = strokes > 0
    solid = blocks.reshape(len(blocks) // step, step, -1, step).any(axis=(1, 3))
    k = min(solid.shape) // 100
    if k > 1:
        opened = _max_filter(-_max_filter(-solid.astype(np.float32), k), k) > 0
        solid = opened if opened.any() else solid
    rows, cols = np.flatnonzero(solid.any(axis=1)), np.flatnonzero(solid.any(axis=0))
    return (slice(rows[0] * step, (rows[-1] + 1) * step),
            slice(cols[0] * step, (cols[-1] + 1) * step))


def fit_box(strokes: np.ndarray, box: int = BOX,
            within: tuple[slice, slice] | None = None) -> np.ndarray:
    """Crop ink (H, W) to its bounding box (`within`, by default `ink_box`) and
    resize it so the longer side is `box` pixels, keeping the aspect ratio. Returns
    (h, w) with max(h, w) == box.

    Strokes thinner than MNIST's pen (a fine pen on a big page would shrink to a
    faint hairline) are first thickened to about STROKE pixels at the final scale.
    """
    crop = strokes[within or ink_box(strokes)]                      # (h, w)
    work = 8 * box                                                  # keeps the dilation cheap
    if max(crop.shape) > work:
        shrink = work / max(crop.shape)
        crop = _resize(crop, (max(1, round(crop.shape[1] * shrink)),
                              max(1, round(crop.shape[0] * shrink))), Image.Resampling.BOX)
        crop = crop / crop.max()                    # a hairline averages to faint grey
    grow = round(STROKE * max(crop.shape) / box - stroke_width(crop))
    if grow >= 2:
        crop = _max_filter(crop, grow + 1)          # a k x k max widens strokes by k - 1
    h, w = crop.shape
    scale = box / max(h, w)
    # Pillow widens its filter when shrinking, so this averages like MNIST's anti-aliasing.
    resized = _resize(crop, (max(1, round(w * scale)), max(1, round(h * scale))),
                      Image.Resampling.LANCZOS)
    return np.clip(resized, 0.0, 1.0)


def centre_by_mass(digit: np.ndarray, side: int = SIDE) -> np.ndarray:
    """Place `digit` (h, w) in a (side, side) field so that its centre of mass
    falls on pixel (CENTRE, CENTRE), to the nearest pixel, as in MNIST."""
    h, w = digit.shape
    mass = digit.sum()
    r = float((digit.sum(axis=1) * np.arange(h)).sum() / mass)
    c = float((digit.sum(axis=0) * np.arange(w)).sum() / mass)
    top = int(np.clip(round(CENTRE - r), 0, side - h))
    left = int(np.clip(round(CENTRE - c), 0, side - w))
    field = np.zeros((side, side), np.float32)
    field[top:top + h, left:left + w] = digit
    return field


@dataclass
class Prepared:
    """An image made into what the network reads, and what was found on the way."""
    pixels: np.ndarray                 # (784,) float32 in [0, 1]
    size: tuple[int, int]              # the picture's (height, width)
    crop: tuple[slice, slice] | None   # the page's rows and columns, when not the whole picture
    page: np.ndarray                   # (h, w) the page's grey levels, at most SHOWN a side
    doubts: list[str]                  # why the answer may be wrong whatever the network says

    def where(self) -> str:
        """Where the page was found, for the output line ("" for the whole picture)."""
        if self.crop is None:
            return ""
        (r, c), (h, w) = self.crop, self.size
        return (f"page found inside the picture: rows {r.start}-{r.stop - 1}, "
                f"columns {c.start}-{c.stop - 1} of {h}x{w}")


def prepare_page(grey: np.ndarray, where: str = "image") -> Prepared:
    """Grey levels (H, W) in [0, 1] -> the page found in them and one MNIST-style
    row (784,) float32, scaled exactly as the preprocess stage scales training images.
    Raises PipelineError when there is no digit: no ink, or only a mark far smaller
    than a handwritten digit on that page."""
    found = find_page(grey)
    rows, cols = found or (slice(0, grey.shape[0]), slice(0, grey.shape[1]))
    page = grey[rows, cols]
    light, swapped = paper_is_light(page)
    strokes = ink(page, light)
    inner = strip_frame(strokes)
    if found or inner != (slice(0, page.shape[0]), slice(0, page.shape[1])):
        top, left = rows.start + inner[0].start, cols.start + inner[1].start
        rows = slice(top, top + inner[0].stop - inner[0].start)
        cols = slice(left, left + inner[1].stop - inner[1].start)
        page, strokes = grey[rows, cols], strokes[inner]
        found = True
    if not strokes.any():
        raise PipelineError(f"{where}: found no digit (the image is one flat shade)")
    # Specks apart from the digit are left out of its box (within it, they are too
    # faint to matter, and a drawing keeps every stroke as the page's panel does).
    r, c = ink_box(drop_specks(strokes))
    tall, wide = r.stop - r.start, c.stop - c.start
    side = min(page.shape)
    if max(tall, wide) < NO_DIGIT * side:
        raise PipelineError(f"{where}: found no digit (only a mark {wide}x{tall} pixels on a "
                            f"{page.shape[1]}x{page.shape[0]} page, far smaller than a "
                            "handwritten digit)")
    doubts = []
    if max(tall, wide) < SMALL * side:
        doubts.append("a small mark for a digit on this page")
    if swapped:
        doubts.append("paper and ink may be swapped")
    field = centre_by_mass(fit_box(strokes, within=(r, c)))          # (28, 28)
    pixels = np.round(field * 255).astype(np.uint8).reshape(1, SIDE * SIDE)
    # A small copy: a phone photo's full grey levels need not stay in memory for --show.
    shrink = min(1.0, SHOWN / max(page.shape))
    shown = _resize(page, (max(1, round(page.shape[1] * shrink)),
                           max(1, round(page.shape[0] * shrink))), Image.Resampling.BOX)
    return Prepared(scale(pixels)[0], grey.shape, (rows, cols) if found else None,
                    shown, doubts)


def prepare(grey: np.ndarray, where: str = "image") -> np.ndarray:
    """Grey levels (H, W) in [0, 1] -> one MNIST-style row (784,) float32, scaled
    exactly as the preprocess stage scales training images (`prepare_page`)."""
    return prepare_page(grey, where).pixels


def prepare_files(paths: list[Path]) -> list[Prepared | PipelineError]:
    """Each image file prepared, or the error that says why it cannot be: one bad
    file does not hold back the others."""
    prepared: list = []
    for path in paths:
        try:
            prepared.append(prepare_page(read_grey(path), str(path)))
        except PipelineError as exc:
            prepared.append(exc)
    return prepared


def sheet(prepared: list[Prepared], zoom: int = 6, gap: int = 4) -> Image.Image:
    """The images as the network received them, enlarged `zoom` times, side by side
    in one picture: white ink on black, as MNIST's. When a page was found inside a
    larger picture, the crop is shown under its image, fitted to the same square."""
    tile = SIDE * zoom
    cropped = any(p.crop is not None for p in prepared)
    out = Image.new("L", (len(prepared) * (tile + gap) - gap, tile * (2 if cropped else 1)
                          + (gap if cropped else 0)), 64)
    for i, item in enumerate(prepared):
        digit = Image.fromarray(np.round(item.pixels.reshape(SIDE, SIDE) * 255).astype(np.uint8))
        out.paste(digit.resize((tile, tile), Image.Resampling.NEAREST), (i * (tile + gap), 0))
        if item.crop is not None:
            crop = Image.fromarray(np.round(item.page * 255).astype(np.uint8))
            crop.thumbnail((tile, tile), Image.Resampling.BOX)
            out.paste(crop, (i * (tile + gap), tile + gap))
    return out

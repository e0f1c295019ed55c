"""A picture of a digit -> the 784 pixels the network reads, as MNIST's were made.

Grey levels, light ink on a dark ground (inverted when the ground is light), cropped
to the ink, scaled to fit a 20x20 box keeping its aspect, and placed in a 28x28 field
with its centre of mass at the centre. `predict-image` prepares image files so, and the
report's drawing panel does the same in JavaScript (pipeline/report/static/draw.js).
"""
from __future__ import annotations

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
# Far above a phone photo (48 MP), far below Pillow's own guard (179 MP): a small PNG of
# 13000 x 13000 would otherwise take 4 GB and seconds before it is refused or read.
MAX_PIXELS = 64_000_000


def read_grey(path: Path) -> np.ndarray:
    """An image file as grey levels (H, W) float32 in [0, 1]; transparent parts
    count as white paper. Raises PipelineError naming the file when unreadable."""
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
                rgba = img.convert("RGBA")
                paper = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
                img = Image.alpha_composite(paper, rgba)
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


def ink(grey: np.ndarray) -> np.ndarray:
    """Grey levels (H, W) -> ink (H, W) in [0, 1]: 1 where the stroke is strongest,
    0 on the paper, whichever of the two is the lighter.

    Ink is measured against the paper around it, relative to its brightness: under
    light falling off across the page, a stroke is as dark a fraction of the paper
    near it everywhere. On evenly lit paper this is a plain difference."""
    border = np.concatenate([grey[0], grey[-1], grey[:, 0], grey[:, -1]])
    light = float(np.median(border)) >= 0.5   # the border is mostly paper, even if ink touches it
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


def fit_box(strokes: np.ndarray, box: int = BOX) -> np.ndarray:
    """Crop ink (H, W) to its bounding box and resize it so the longer side is
    `box` pixels, keeping the aspect ratio. Returns (h, w) with max(h, w) == box.

    Strokes thinner than MNIST's pen (a fine pen on a big page would shrink to a
    faint hairline) are first thickened to about STROKE pixels at the final scale.
    """
    crop = strokes[ink_box(strokes)]                                # (h, w)
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


def prepare(grey: np.ndarray, where: str = "image") -> np.ndarray:
    """Grey levels (H, W) in [0, 1] -> one MNIST-style row (784,) float32, scaled
    exactly as the preprocess stage scales training images."""
    strokes = ink(grey)
    if not strokes.any():
        raise PipelineError(f"{where}: found no digit (the image is one flat shade)")
    field = centre_by_mass(fit_box(strokes))                         # (28, 28)
    pixels = np.round(field * 255).astype(np.uint8).reshape(1, SIDE * SIDE)
    return scale(pixels)[0]                                          # (784,)


def prepare_files(paths: list[Path]) -> list[np.ndarray | PipelineError]:
    """Each image file prepared (784,), or the error that says why it cannot be:
    one bad file does not hold back the others."""
    prepared: list = []
    for path in paths:
        try:
            prepared.append(prepare(read_grey(path), str(path)))    # (784,)
        except PipelineError as exc:
            prepared.append(exc)
    return prepared


def sheet(prepared: list[np.ndarray], zoom: int = 6, gap: int = 4) -> Image.Image:
    """The images as the network received them (each (784,) in [0, 1]), enlarged
    `zoom` times, side by side in one picture: white ink on black, as MNIST's."""
    tile = SIDE * zoom
    out = Image.new("L", (len(prepared) * (tile + gap) - gap, tile), 64)
    for i, pixels in enumerate(prepared):
        digit = Image.fromarray(np.round(pixels.reshape(SIDE, SIDE) * 255).astype(np.uint8))
        out.paste(digit.resize((tile, tile), Image.Resampling.NEAREST), (i * (tile + gap), 0))
    return out



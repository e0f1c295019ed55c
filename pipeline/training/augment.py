"""Random distortions of digit images, a whole batch at a time. NumPy, and numba for
shifts made as training takes its batches (`Augmenter.take`); no I/O.

Each output pixel p of an image samples that image, bilinearly, at the point
    A p + t + alpha * d(p)
where A (rotation, scale, shear about the centre) and the shift t are drawn per
image, and d is a random displacement field: white noise smoothed by a Gaussian of
width sigma (the elastic distortion of Simard, Steinkraus and Platt, 2003). Points
outside the image read zero. Images are rows (N, side*side) of a square side.
"""
from __future__ import annotations

import functools
import threading

import numpy as np

from pipeline.nn import jit

CHUNK = 256         # images per pass: each temporary (0.8 MB) stays in a 1-2 MB L2 cache


def smoothing_basis(side: int, sigma: float, keep: float = 0.9999) -> np.ndarray:
    """L (side, k) with L @ L.T close to G @ G.T, G the Gaussian smoothing matrix.

    Smoothing noise U (side, side) of variance v gives the field G U G.T, a Gaussian
    field with covariance v * (G G.T) (x) (G G.T). L Z L.T, with Z (k, k) of the same
    variance, has that covariance up to the dropped eigenvalues, and costs k*k random
    numbers instead of side*side: sigma = 4 on 28 pixels needs k = 7 to keep 99.99%
    of the variance.
    """
    i = np.arange(side)
    radius = np.arange(-side, side + 1)
    kernel_sum = np.exp(-0.5 * (radius / sigma) ** 2).sum()     # zeros beyond the edge
    G = np.exp(-0.5 * ((i[:, None] - i[None, :]) / sigma) ** 2) / kernel_sum   # (side, side)
    w, V = np.linalg.eigh(G @ G.T)
    w, V = w[::-1].clip(0), V[:, ::-1]                          # largest first
    k = int(np.searchsorted(np.cumsum(w) / w.sum(), keep)) + 1
    return V[:, :k] * np.sqrt(w[:k])


class Augmenter:
    """Draws and applies random distortions, each uniform in a range centred on none:

    shift: pixels, uniform in [-shift, shift] on each axis.
    rotate, shear: degrees, uniform in [-rotate, rotate] and [-shear, shear].
    scale: the image grows by a factor uniform in [1 - scale, 1 + scale].
    elastic_alpha, elastic_sigma: the displacement field's scale (pixels per unit of
    smoothed noise) and smoothness (pixels); alpha = 0 turns it off.
    """

    def __init__(self, side: int = 28, shift: float = 0.0, rotate: float = 0.0,
                 scale: float = 0.0, shear: float = 0.0, elastic_alpha: float = 0.0,
                 elastic_sigma: float = 4.0):
        self.side = side
        self.shift, self.rotate, self.scale, self.shear = shift, rotate, scale, shear
        self.elastic_alpha = elastic_alpha
        centre = (side - 1) / 2
        rows, cols = np.mgrid[0:side, 0:side]
        grid = [cols.ravel() - centre, rows.ravel() - centre, np.ones(side * side)]
        if elastic_alpha:
            L = smoothing_basis(side, elastic_sigma)
            # field[i, j] = sum_ab L[i, a] Z[a, b] L[j, b], with Z of unit variance here
            # standing for noise uniform in [-1, 1], of variance 1/3.
            grid += list(np.kron(L, L).T * (elastic_alpha / np.sqrt(3.0)))
        # Sampling points are coefficients (per image) @ basis, one matrix product.
        self.basis = np.array(grid, np.float32)                  # (3 + k*k, side*side)
        self._kept = threading.local()                           # see _scratch

    @property
    def active(self) -> bool:
        """False when every distortion is zero, so images would come back unchanged."""
        return any((self.shift, self.rotate, self.scale, self.shear, self.elastic_alpha))

    @property
    def shift_only(self) -> bool:
        """True when the only distortion is a shift, which `translate` does faster."""
        return not any((self.rotate, self.scale, self.shear, self.elastic_alpha))

    @property
    def shifts_as_taken(self) -> bool:
        """True when `take` shifts rows as they are taken, in one compiled pass (shifts
        alone, with numba): fast enough to need no thread of its own (pipeline/feed.py)."""
        return self.active and self.shift_only and _shift_kernel() is not None

    def draw_shifts(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """The shifts (2, n), x then y, that a call on n images draws from rng."""
        return np.concatenate([rng.uniform(-self.shift, self.shift, (2, min(CHUNK, n - start)))
                               for start in range(0, n, CHUNK)], axis=1)

    def take(self, X: np.ndarray, rows: np.ndarray, shifts: np.ndarray,
             out: np.ndarray) -> np.ndarray:
        """X[rows] (B, side*side) translated by shifts (2, B), each within [-shift,
        shift], into `out`: the same bits as `translate`, in one compiled pass
        without the copy of the rows when it can."""
        margin, kernel, rows = int(np.ceil(self.shift)), _shift_kernel(), np.asarray(rows)
        if (kernel is not None and _fits(X, rows, shifts, out, self.side)
                and kernel(X, rows.astype(np.intp, copy=False),
                           np.ascontiguousarray(shifts, np.float64), out, self.side, margin)):
            return out
        # What the loop turned down: NumPy's take raises a clear error, or knows what
        # to do (a negative row counts from the end).
        if shifts.size and np.abs(shifts).max() > margin:
            raise ValueError(f"take: shifts reach {np.abs(shifts).max():g} pixels, "
                             f"beyond this augmenter's {self.shift:g}")
        np.take(X, rows, axis=0, out=out)
        return translate(out, shifts, self.side, out, self._scratch(len(out), out.dtype))

    def sample_points(self, n: int, rng: np.random.Generator,
                      out: np.ndarray | None = None) -> np.ndarray:
        """Random sampling points (2, n, side*side): x then y, in pixels. `out`, if
        given, is a float32 buffer of at least 2*n rows of side*side."""
        angle = np.deg2rad(rng.uniform(-self.rotate, self.rotate, n))
        shear = np.tan(np.deg2rad(rng.uniform(-self.shear, self.shear, n)))
        zoom = rng.uniform(1 - self.scale, 1 + self.scale, n)
        shift = rng.uniform(-self.shift, self.shift, (2, n))
        cos, sin = np.cos(angle) / zoom, np.sin(angle) / zoom
        coef = np.empty((2, n, len(self.basis)), np.float32)      # (2, n, 3 + k*k)
        # [x; y] = R(angle) [[1, shear], [0, 1]] / zoom @ [u; v] + centre + shift
        coef[0, :, 0], coef[0, :, 1] = cos, cos * shear - sin
        coef[1, :, 0], coef[1, :, 1] = sin, sin * shear + cos
        coef[:, :, 2] = (self.side - 1) / 2 + shift
        if self.elastic_alpha:
            coef[:, :, 3:] = rng.standard_normal((2, n, len(self.basis) - 3), np.float32)
        out = None if out is None else out[:2 * n]
        return np.matmul(coef.reshape(2 * n, -1), self.basis, out=out).reshape(2, n, -1)

    def __call__(self, images: np.ndarray, rng: np.random.Generator,
                 out: np.ndarray | None = None) -> np.ndarray:
        """Distorted copies (N, side*side) of images (N, side*side), freshly drawn.

        `out` may be `images` itself: each chunk is read before it is written.
        """
        out = np.empty_like(images) if out is None else out
        scratch = self._scratch(min(CHUNK, len(images)), images.dtype)
        for start in range(0, len(images), CHUNK):
            part = images[start:start + CHUNK]
            if self.shift_only:
                shifts = rng.uniform(-self.shift, self.shift, (2, len(part)))
                translate(part, shifts, self.side, out[start:start + CHUNK], scratch)
            else:
                points = self.sample_points(len(part), rng, out=scratch.points)
                warp(part, points, self.side, out[start:start + CHUNK], scratch)
        return out

    def _scratch(self, n: int, dtype: np.dtype) -> Scratch | ShiftScratch:
        """Buffers for chunks of n images, kept from call to call, one set per thread:
        the feed calls once a block, and fresh buffers each time made its epochs
        slower (docs/speed.md)."""
        key, kept = getattr(self._kept, "buffers", (None, None))
        if key != (n, dtype):
            kept = (ShiftScratch(n, self.side, int(np.ceil(self.shift)), dtype)
                    if self.shift_only else Scratch(n, self.side, dtype))
            self._kept.buffers = ((n, dtype), kept)
        return kept


class Scratch:
    """Buffers for warping up to n images at a time, reused from chunk to chunk.

    Fresh temporaries of this size cost page faults on every chunk once the C
    allocator starts returning freed memory to the system: that made a warp
    four times slower, depending on what the process had allocated before.
    """

    def __init__(self, n: int, side: int, dtype: np.dtype = np.float32):
        pad = side + 3
        # Zeros around each image: one pixel before it, two after, so that every point
        # from -1 to side has its 2x2 cell inside the frame.
        self.framed = np.zeros((n, pad, pad), dtype)
        self.points = np.empty((2 * n, side * side), np.float32)
        self.fraction = np.empty((2, n, side * side), np.float32)
        self.corner = np.empty((2, n, side * side), np.float32)
        self.index32 = np.empty((n, side * side), np.int32)
        self.index = np.empty((n, side * side), np.intp)
        self.gathered = np.empty((4, n, side * side), dtype)


def warp(images: np.ndarray, points: np.ndarray, side: int,
         out: np.ndarray | None = None, scratch: Scratch | None = None) -> np.ndarray:
    """Sample each image (N, side*side) bilinearly at its points (2, N, side*side).

    Points are (x, y) in pixels, (0, 0) the centre of the top-left pixel; outside
    the image reads zero. A grid of whole pixels returns the images unchanged.
    `scratch` holds the temporaries (Scratch(N, side) when None).
    """
    n, pad = len(images), side + 3
    scratch = scratch or Scratch(n, side, images.dtype)
    framed = scratch.framed[:n]
    framed[:, 1:side + 1, 1:side + 1] = images.reshape(n, side, side)
    flat = framed.ravel()
    # Clipped so that the 2x2 cell around each point stays inside the frame.
    xy = np.clip(points, -1, side, out=scratch.fraction[:, :n])
    corner = np.floor(xy, out=scratch.corner[:, :n])
    xy -= corner                                                  # fractions, in [0, 1)
    fx, fy = xy
    corner[1] *= pad
    corner[1] += corner[0]
    # Each image's own frame, and the frame's border moving (-1, -1) to (0, 0). Whole
    # numbers below 2**24 are exact in float32.
    corner[1] += np.arange(pad + 1, n * pad * pad, pad * pad, dtype=np.float32)[:, None]
    # (N, side*side) top-left corners. Through int32: NumPy casts float32 to it with
    # SIMD, several times faster than straight to the int64 indices take needs.
    index32 = scratch.index32[:n]
    index32[...] = corner[1]
    index = scratch.index[:n]
    index[...] = index32
    # mode="clip" never clips here (the indices are in range) but, unlike "raise",
    # lets take write straight into `out`.
    top, top_right, bottom, bottom_right = scratch.gathered[:, :n]
    np.take(flat, index, out=top, mode="clip")
    np.take(flat[1:], index, out=top_right, mode="clip")     # views shift the corner for free
    np.take(flat[pad:], index, out=bottom, mode="clip")
    np.take(flat[pad + 1:], index, out=bottom_right, mode="clip")
    top_right -= top
    top_right *= fx
    top += top_right
    bottom_right -= bottom
    bottom_right *= fx
    bottom += bottom_right
    bottom -= top
    bottom *= fy
    return np.add(top, bottom, out=out)


class ShiftScratch:
    """Buffers for `translate` of up to n images at a time by up to `margin` pixels.

    Each holds the n images' frames (wide x wide, wide = side + 2 * margin) one after
    another, flat, with zeros before and after, so that a move of the whole chunk by
    o is one contiguous (n, wide*wide) view: three times faster in NumPy than
    the same move as a slice of each frame."""

    def __init__(self, n: int, side: int, margin: int, dtype: np.dtype = np.float32):
        self.n, self.margin, self.wide = n, margin, side + 2 * margin
        size = n * self.wide ** 2
        self.framed = np.zeros(size + 2 * margin, dtype)              # moves along x
        self.along_x = np.zeros(size + 2 * margin * self.wide, dtype)  # moves along y
        self.along_y = np.empty((n, self.wide ** 2), dtype)
        self.term = np.empty((n, self.wide ** 2), dtype)

    def moved(self, buffer: np.ndarray, by: int, n: int) -> np.ndarray:
        """The first n frames (n, wide*wide) of `buffer`, read `by` elements further on."""
        start = (len(buffer) - self.n * self.wide ** 2) // 2 + by
        return buffer[start:start + n * self.wide ** 2].reshape(n, -1)


def translate(images: np.ndarray, shifts: np.ndarray, side: int,
              out: np.ndarray | None = None, scratch: ShiftScratch | None = None) -> np.ndarray:
    """Each image (N, side*side) sampled bilinearly at its pixel grid moved by its
    shift (2, N), x then y: what `warp` does with such points, several times faster.

    A shifted grid makes bilinear sampling separable, and a sum of whole-pixel
    moves: along x, out[c] = sum over o of hat(dx - o) * image[c + o], where
    hat(d) = max(0, 1 - |d|) is the bilinear weight, for o from -m to m, m the
    ceiling of the largest shift; then the same along y. Outside the image reads
    zero. `scratch` needs a margin of at least m.
    """
    n = len(images)
    scratch = scratch or ShiftScratch(n, side, int(np.ceil(np.abs(shifts).max())), images.dtype)
    m, wide = scratch.margin, scratch.wide
    offsets = np.arange(-m, m + 1)
    # (2, N, 2m + 1): hat(shift - o) for each offset o
    weights = np.maximum(0, 1 - np.abs(shifts[:, :, None] - offsets)).astype(images.dtype)
    framed = scratch.moved(scratch.framed, 0, n).reshape(n, wide, wide)
    framed[:, m:m + side, m:m + side] = images.reshape(n, side, side)   # zero margins
    # Within a frame, a move along y is a move by `wide` in the flat buffer. Frames
    # never mix: a move reaches at most m pixels, and m rows and columns of zeros
    # surround each image.
    for axis, (source, target, step) in enumerate(
            [(scratch.framed, scratch.moved(scratch.along_x, 0, n), 1),
             (scratch.along_x, scratch.along_y[:n], wide)]):
        term = scratch.term[:n]
        for k, o in enumerate(offsets):
            np.multiply(scratch.moved(source, o * step, n), weights[axis, :, k, None],
                        out=term if k else target)
            if k:
                target += term
    out = np.empty_like(images) if out is None else out
    field = out.view()
    field.shape = (n, side, side)          # a view of out, or an error, never a copy
    field[:] = scratch.along_y[:n].reshape(n, wide, wide)[:, m:m + side, m:m + side]
    return out


def _shift_loop(X, rows, shifts, out, side, margin):
    """out[b] = X[rows[b]] translated by shifts[:, b], as `translate` computes it,
    operation for operation: for one image, in its own frame of zeros, the pass
    along x then the pass along y, each a sum over offsets -m..m in that order.
    X (N, side*side) and out (B, side*side) float32, rows (B,), shifts (2, B)
    float64. Nothing is checked as it runs, so first every row must lie within X
    and every shift within the margin m: else it writes nothing and returns False."""
    m, taps, wide = margin, 2 * margin + 1, side + 2 * margin
    for b in range(rows.size):
        if not (0 <= rows[b] < X.shape[0] and abs(shifts[0, b]) <= m and abs(shifts[1, b]) <= m):
            return False
    frame = np.zeros((wide, wide), np.float32)       # the image, m zeros around it
    along_x = np.zeros((wide, side), np.float32)     # rows beyond the image stay zero
    w = np.empty((2, taps), np.float32)
    for b in range(rows.size):
        for axis in range(2):
            for k in range(taps):                    # hat(shift - o), rounded as NumPy does
                w[axis, k] = max(0.0, 1.0 - abs(shifts[axis, b] - (k - m)))
        image = X[rows[b]]
        for r in range(side):
            for c in range(side):
                frame[m + r, m + c] = image[r * side + c]
        for r in range(m, m + side):
            for c in range(side):
                along_x[r, c] = frame[r, c] * w[0, 0]
            for k in range(1, taps):
                for c in range(side):
                    along_x[r, c] += frame[r, c + k] * w[0, k]
        for r in range(side):
            for c in range(side):
                out[b, r * side + c] = along_x[r, c] * w[1, 0]
            for k in range(1, taps):
                for c in range(side):
                    out[b, r * side + c] += along_x[r + k, c] * w[1, k]
    return True


def _fits(X: np.ndarray, rows: np.ndarray, shifts: np.ndarray, out: np.ndarray,
          side: int) -> bool:
    """Whether `_shift_loop` compiled takes these arrays (it checks the values of rows
    and shifts itself): X and out float32, C-contiguous, of images of side*side, out
    (B, side*side) for rows (B,) of integers and shifts (2, B)."""
    return (all(a.dtype == np.float32 and a.ndim == 2 and a.flags.c_contiguous
                and a.shape[1] == side * side for a in (X, out))
            and rows.ndim == 1 and rows.dtype.kind in "iu"
            and len(out) == len(rows) and shifts.shape == (2, len(rows)))


@functools.cache
def _shift_kernel():
    """`_shift_loop` compiled (pipeline/jit.py), or None: then `take` copies the rows
    and calls `translate`."""
    X, out = np.zeros((2, 4), np.float32), np.empty((1, 4), np.float32)
    return jit.compile(_shift_loop, (X, np.zeros(1, np.intp), np.zeros((2, 1)), out, 2, 1),
                       "the shifts")

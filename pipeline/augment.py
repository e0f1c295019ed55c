"""Random distortions of digit images, a whole batch at a time. NumPy only, no I/O.

Each output pixel p of an image samples that image, bilinearly, at the point
    A p + t + alpha * d(p)
where A (rotation, scale, shear about the centre) and the shift t are drawn per
image, and d is a random displacement field: white noise smoothed by a Gaussian of
width sigma (the elastic distortion of Simard, Steinkraus and Platt, 2003). Points
outside the image read zero. Images are rows (N, side*side) of a square side.
"""
from __future__ import annotations

import numpy as np

CHUNK = 2048        # images per pass: keeps the temporaries near 10 MB each


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
    """Draws and applies random distortions, each uniform in a range centred on none.

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
            grid += list(np.kron(L, L).T)      # field[i, j] = sum_ab L[i, a] Z[a, b] L[j, b]
        # Sampling points are coefficients (per image) @ basis, one matrix product.
        self.basis = np.array(grid, np.float32)                  # (3 + k*k, side*side)

    @property
    def active(self) -> bool:
        """False when every distortion is zero, so images would come back unchanged."""
        return any((self.shift, self.rotate, self.scale, self.shear, self.elastic_alpha))

    def sample_points(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """Random sampling points (2, n, side*side): x then y, in pixels."""
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
            # Unit-variance Z stands for noise uniform in [-1, 1], of variance 1/3.
            z = rng.standard_normal((2, n, len(self.basis) - 3))
            coef[:, :, 3:] = z * (self.elastic_alpha / np.sqrt(3.0))
        return (coef.reshape(2 * n, -1) @ self.basis).reshape(2, n, -1)

    def __call__(self, images: np.ndarray, rng: np.random.Generator,
                 out: np.ndarray | None = None) -> np.ndarray:
        """Distorted copies (N, side*side) of images (N, side*side), freshly drawn.

        `out` may be `images` itself: each chunk is read before it is written.
        """
        out = np.empty_like(images) if out is None else out
        for start in range(0, len(images), CHUNK):
            part = images[start:start + CHUNK]
            warp(part, self.sample_points(len(part), rng), self.side, out[start:start + CHUNK])
        return out


def warp(images: np.ndarray, points: np.ndarray, side: int,
         out: np.ndarray | None = None) -> np.ndarray:
    """Sample each image (N, side*side) bilinearly at its points (2, N, side*side).

    Points are (x, y) in pixels, (0, 0) the centre of the top-left pixel; outside
    the image reads zero. A grid of whole pixels returns the images unchanged.
    """
    n, pad = len(images), side + 2
    framed = np.zeros((n, pad, pad), images.dtype)                # a zero border of one pixel
    framed[:, 1:-1, 1:-1] = images.reshape(n, side, side)
    flat = framed.ravel()
    xy = points + np.float32(1.0)                                 # (2, N, side*side), framed
    np.clip(xy, 0, pad - 1.001, out=xy)                           # the 2x2 cell stays in the frame
    corner = np.floor(xy)
    xy -= corner                                                  # fractions, in [0, 1)
    fx, fy = xy
    index = (corner[1] * pad + corner[0]).astype(np.intp)          # (N, side*side) top-left corners
    index += np.arange(0, n * pad * pad, pad * pad)[:, None]      # each image's own frame
    top = np.take(flat, index)
    top_right = np.take(flat[1:], index)                          # views shift the corner for free
    bottom = np.take(flat[pad:], index)
    bottom_right = np.take(flat[pad + 1:], index)
    top_right -= top
    top_right *= fx
    top += top_right
    bottom_right -= bottom
    bottom_right *= fx
    bottom += bottom_right
    bottom -= top
    bottom *= fy
    top += bottom
    if out is None:
        return top
    out[...] = top
    return out

"""The distortions fit draws, by statistics over many draws of
`Augmenter.sample_points`: the affine map of each image is recovered from its
sampling points, and the shift, rotation, scale and shear must each spread as the
params say, on both axes; the elastic field must move points along both axes alike.
Then sampling outside the image, and the augmenter's defaults.
"""

import numpy as np
import pytest

from pipeline.training.augment import CHUNK, Augmenter, smoothing_basis, warp

SIDE = 28
CENTRE = (SIDE - 1) / 2


# --- the distortions: statistics of Augmenter.sample_points ---

# Tolerances are about five standard errors at this many draws, so that they hold for
# any seed (and a reordering of the draws) yet fail when a distortion is off.
DRAWS = 4000


def affine(points: np.ndarray):
    """The affine map behind sampling points (2, n, 784) that have no elastic part:
    (A (n, 2, 2), t (n, 2), worst residual) with point = A @ (p - centre) + centre + t,
    p a pixel's (column, row)."""
    rows, cols = np.mgrid[0:SIDE, 0:SIDE]
    basis = np.stack([cols.ravel() - CENTRE, rows.ravel() - CENTRE, np.ones(SIDE * SIDE)], 1)
    n = points.shape[1]
    flat = points.reshape(2 * n, -1).T.astype(np.float64)            # (784, 2n)
    coef, *_ = np.linalg.lstsq(basis, flat, rcond=None)               # (3, 2n)
    residual = np.abs(basis @ coef - flat).max()
    coef = coef.T.reshape(2, n, 3).transpose(1, 0, 2)                 # (n, 2, 3)
    return coef[:, :, :2], coef[:, :, 2] - CENTRE, residual


def draw(seed=0, n=DRAWS, **options):
    return Augmenter(SIDE, **options).sample_points(n, np.random.default_rng(seed))


def assert_uniform(values: np.ndarray, half: float, what: str):
    """values look drawn uniformly from [-half, half]: the range, the mean, the
    standard deviation half / sqrt(3), and half of them within half / 2."""
    assert values.min() >= -half * (1 + 1e-4) and values.max() <= half * (1 + 1e-4), what
    assert values.min() < -0.95 * half and values.max() > 0.95 * half, what
    assert abs(values.mean()) < 0.05 * half, what
    assert values.std() == pytest.approx(half / np.sqrt(3), rel=0.05), what
    assert np.mean(np.abs(values) < half / 2) == pytest.approx(0.5, abs=0.04), what


def centred_linear(points: np.ndarray) -> np.ndarray:
    """A (n, 2, 2) of points drawn without shifts: checks that they are an exact
    affine map about the centre, with no translation."""
    A, t, residual = affine(points)
    assert residual < 1e-3
    np.testing.assert_allclose(t, 0, atol=1e-4)                # about the centre
    return A


def assert_identity(A: np.ndarray, what: str):
    np.testing.assert_allclose(A, np.broadcast_to(np.eye(2), A.shape), atol=1e-5, err_msg=what)


@pytest.mark.parametrize("shift", [0.5, 2.0])
def test_shift_spreads_uniformly_along_both_axes(shift):
    A, t, residual = affine(draw(shift=shift))
    assert residual < 1e-3
    assert_identity(A, "a shift alone turns, scales or shears")
    assert_uniform(t[:, 0], shift, "shift along x")
    assert_uniform(t[:, 1], shift, "shift along y")
    assert abs(np.corrcoef(t[:, 0], t[:, 1])[0, 1]) < 0.08, "x and y shifts are tied"


def test_rotation_turns_by_a_uniform_angle_and_only_turns():
    A = centred_linear(draw(rotate=15.0))
    a, b, c, d = A[:, 0, 0], A[:, 0, 1], A[:, 1, 0], A[:, 1, 1]
    np.testing.assert_allclose(a, d, atol=1e-5)                # a rotation: [[cos, -sin],
    np.testing.assert_allclose(b, -c, atol=1e-5)               #              [sin, cos]]
    np.testing.assert_allclose(a ** 2 + c ** 2, 1, atol=1e-5)
    assert_uniform(np.degrees(np.arctan2(c, a)), 15.0, "rotation angle")


def test_scale_zooms_by_a_uniform_factor_on_both_axes():
    A = centred_linear(draw(scale=0.2))
    np.testing.assert_allclose(A[:, 0, 1], 0, atol=1e-6)
    np.testing.assert_allclose(A[:, 1, 0], 0, atol=1e-6)
    np.testing.assert_allclose(A[:, 0, 0], A[:, 1, 1], rtol=1e-5)
    # Sampling at points 1/zoom apart shows the image `zoom` times as large.
    assert_uniform(1 / A[:, 0, 0] - 1, 0.2, "zoom")


def test_shear_slants_by_a_uniform_angle():
    A = centred_linear(draw(shear=20.0))
    np.testing.assert_allclose(A[:, 0, 0], 1, atol=1e-6)
    np.testing.assert_allclose(A[:, 1, 1], 1, atol=1e-6)
    np.testing.assert_allclose(A[:, 1, 0], 0, atol=1e-6)
    assert_uniform(np.degrees(np.arctan(A[:, 0, 1])), 20.0, "shear angle")


def test_all_affine_distortions_together_keep_their_own_spreads():
    A, t, residual = affine(draw(shift=1.5, rotate=12.0, scale=0.15, shear=8.0))
    assert residual < 1e-3
    assert_uniform(t[:, 0], 1.5, "shift along x")
    assert_uniform(t[:, 1], 1.5, "shift along y")
    # A = R(angle) [[1, tan(shear)], [0, 1]] / zoom: rotation and shear have det 1.
    zoom = 1 / np.sqrt(np.linalg.det(A))
    assert_uniform(zoom - 1, 0.15, "zoom")
    angle = np.arctan2(A[:, 1, 0], A[:, 0, 0])
    assert_uniform(np.degrees(angle), 12.0, "rotation angle")
    cos, sin = np.cos(angle), np.sin(angle)
    tan_shear = (cos * A[:, 0, 1] + sin * A[:, 1, 1]) * zoom    # (R^T A zoom)[0, 1]
    assert_uniform(np.degrees(np.arctan(tan_shear)), 8.0, "shear angle")
    for a, b in [(angle, zoom), (angle, tan_shear), (zoom, tan_shear), (t[:, 0], angle)]:
        assert abs(np.corrcoef(a, b)[0, 1]) < 0.08, "distortions drawn together are tied"


def elastic_field(alpha: float, sigma: float = 4.0, seed: int = 0, n: int = 2000):
    """Displacements (2, n, 784) of the elastic distortion alone, x then y."""
    rows, cols = np.mgrid[0:SIDE, 0:SIDE]
    points = draw(seed, n, elastic_alpha=alpha, elastic_sigma=sigma)
    return points - np.stack([cols.ravel(), rows.ravel()])[:, None, :]


def test_elastic_field_moves_points_along_both_axes_alike():
    alpha, sigma = 10.0, 4.0
    dx, dy = elastic_field(alpha, sigma)
    spread_x, spread_y = dx.std(), dy.std()
    assert spread_x > 0.1 and spread_y > 0.1
    assert spread_y / spread_x == pytest.approx(1, abs=0.1)
    assert abs(dx.mean()) < 0.05 * spread_x and abs(dy.mean()) < 0.05 * spread_y
    # Far from the edges: noise uniform in [-1, 1] (variance 1/3) smoothed by a unit-sum
    # Gaussian of width sigma, times alpha (as in test_augment.py, on both axes here).
    centre = (SIDE // 2) * SIDE + SIDE // 2
    expected = alpha * np.sqrt(1 / 3 / (4 * np.pi * sigma ** 2))
    assert dx[:, centre].std() == pytest.approx(expected, rel=0.1)
    assert dy[:, centre].std() == pytest.approx(expected, rel=0.1)
    assert abs(np.corrcoef(dx[:, centre], dy[:, centre])[0, 1]) < 0.12, "x and y fields tied"
    # Smooth: neighbours move together, points half an image apart nearly independently
    # (smoothed noise has correlation exp(-d^2 / (4 sigma^2)) at distance d).
    for d in (dx, dy):
        assert np.corrcoef(d[:, centre], d[:, centre + 1])[0, 1] > 0.95
        assert np.corrcoef(d[:, centre], d[:, centre + SIDE])[0, 1] > 0.95
        assert abs(np.corrcoef(d[:, centre], d[:, centre - 12])[0, 1]) < 0.3


def test_elastic_field_grows_with_alpha_and_is_off_at_zero():
    small, large = elastic_field(10.0), elastic_field(20.0)
    np.testing.assert_allclose(large, 2 * small, atol=2e-4)   # float32 points near 27
    np.testing.assert_array_equal(elastic_field(0.0), 0)


def test_elastic_field_is_smoother_for_a_larger_sigma():
    centre = (SIDE // 2) * SIDE + SIDE // 2
    corr = [np.corrcoef(elastic_field(10.0, sigma)[0][:, [centre, centre + 4]].T)[0, 1]
            for sigma in (2.0, 6.0)]
    # exp(-16 / 16) = 0.37 for sigma 2, exp(-16 / 144) = 0.89 for sigma 6.
    assert corr[0] == pytest.approx(np.exp(-1), abs=0.1)
    assert corr[1] == pytest.approx(np.exp(-16 / 144), abs=0.1)


def smoothing_matrix(sigma: float) -> np.ndarray:
    """G (28, 28): smoothing by a Gaussian of width sigma cut at +-28 pixels, scaled
    to a unit sum there, with zeros beyond the image's edge."""
    kernel = np.exp(-0.5 * (np.arange(-SIDE, SIDE + 1) / sigma) ** 2)
    kernel /= kernel.sum()
    return np.stack([np.convolve(np.eye(SIDE)[i], kernel)[SIDE:2 * SIDE] for i in range(SIDE)], 1)


@pytest.mark.parametrize("sigma", [1.5, 4.0, 20.0])
def test_elastic_basis_has_the_covariance_of_smoothed_noise_for_any_width(sigma):
    # For a wide Gaussian the kernel's tails, cut at the edge, weigh in its sum.
    G = smoothing_matrix(sigma)
    L = smoothing_basis(SIDE, sigma)
    np.testing.assert_allclose(L @ L.T, G @ G.T, atol=1e-3 * (G @ G.T).max())


@pytest.mark.parametrize("sigma", [2.0, 4.0, 8.0])
def test_elastic_basis_keeps_the_fewest_components_that_hold_the_variance(sigma):
    total = np.trace(smoothing_matrix(sigma) @ smoothing_matrix(sigma).T)
    L = smoothing_basis(SIDE, sigma)
    held = np.cumsum((L ** 2).sum(axis=0)) / total          # variance kept by the first k
    assert held[-1] >= 0.9999 > held[-2]
    if sigma == 4.0:
        assert L.shape[1] == 7                              # as smoothing_basis says


@pytest.mark.parametrize("options", [dict(shift=3.0), dict(shift=3.0, rotate=0.01)],
                         ids=["shift only", "shift and a warp"])
def test_distorted_images_move_along_both_axes_in_every_chunk(options):
    # A round blob, copied into more images than one chunk holds; its centre of mass
    # moves against each image's shift, so it spreads as the shift does.
    n = 2 * CHUNK + 88
    rows, cols = np.mgrid[0:SIDE, 0:SIDE]
    blob = np.exp(-((cols - CENTRE) ** 2 + (rows - CENTRE) ** 2) / (2 * 2.0 ** 2))
    images = np.repeat(blob.reshape(1, -1).astype(np.float32), n, axis=0)
    out = Augmenter(SIDE, **options)(images, np.random.default_rng(0))
    mass = out.sum(axis=1)
    moved = np.stack([out @ cols.ravel(), out @ rows.ravel()]) / mass - CENTRE   # (2, n)
    for axis, name in enumerate("xy"):
        assert moved[axis].std() == pytest.approx(np.sqrt(3), rel=0.1), name
        assert np.abs(moved[axis]).max() <= 3.05, name
        for start in range(0, n, CHUNK):
            assert moved[axis, start:start + CHUNK].std() > 1.2, f"{name}, chunk at {start}"
    assert abs(np.corrcoef(moved)[0, 1]) < 0.2                # 5 standard errors at n = 600


# --- sampling outside the image ---

def far_outside(dx: float, dy: float) -> np.ndarray:
    """Images of ones sampled at their grid moved by (dx, dy) pixels."""
    rows, cols = np.mgrid[0:SIDE, 0:SIDE]
    grid = np.stack([cols.ravel(), rows.ravel()]).astype(np.float32)[:, None, :]
    points = np.repeat(grid + np.float32([[[dx]], [[dy]]]), 3, axis=1)
    return warp(np.ones((3, SIDE * SIDE), np.float32), points, SIDE)


@pytest.mark.parametrize("dx,dy", [(-40, 0), (0, -40), (-40, -40)])
def test_points_far_left_of_or_above_the_image_read_zero(dx, dy):
    # In memory every image row has other rows and images around it: a point far
    # outside must read none of them.
    np.testing.assert_array_equal(far_outside(dx, dy), 0)


@pytest.mark.parametrize("dx,dy", [(-5.5, 0), (0, -3.25), (-2.75, -1.5)])
def test_points_moved_part_way_out_read_the_image_and_then_zeros(dx, dy):
    # Along each axis, ones with a zero border sampled at c + d read
    # clip(1 + c + d, 0, 1) (d <= 0): one inside, zero past the border, linear between.
    c = np.arange(SIDE)
    expected = np.outer(np.clip(1 + c + dy, 0, 1), np.clip(1 + c + dx, 0, 1))
    for image in far_outside(dx, dy).reshape(3, SIDE, SIDE):
        np.testing.assert_allclose(image, expected, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("dx,dy", [(40, 0), (0, 40), (40, 40), (28, 0)])
def test_points_right_of_or_below_the_image_read_exactly_zero(dx, dy):
    # Nothing of the edge pixel, of other rows or of other images.
    np.testing.assert_array_equal(far_outside(dx, dy), 0)


@pytest.mark.parametrize("options", [dict(shift=2.0), dict(shift=2.0, rotate=10.0)],
                         ids=["shift only", "shift and a warp"])
def test_augmenting_in_place_gives_what_a_copy_would(options):
    # fit distorts its shuffled copy in place: each chunk must be read before it is
    # written, and only once.
    images = np.random.default_rng(0).random((2 * CHUNK + 40, SIDE * SIDE), dtype=np.float32)
    augment = Augmenter(SIDE, **options)
    apart = augment(images, np.random.default_rng(0))
    inplace = images.copy()
    assert augment(inplace, np.random.default_rng(0), out=inplace) is inplace
    np.testing.assert_array_equal(inplace, apart)


# --- defaults and counters that fit and its checkpoints rely on ---

def test_augmenter_defaults_to_28_pixels_and_a_field_of_width_4():
    assert Augmenter().side == 28
    np.testing.assert_array_equal(Augmenter(elastic_alpha=10).basis,
                                  Augmenter(28, elastic_alpha=10, elastic_sigma=4.0).basis)

"""Augmentation: shapes, dtype, range, reproducibility, and the geometry of the warp."""
import threading

import numpy as np
import pytest
from helpers import sample_rows

from pipeline.training import augment as augment_module
from pipeline.training.augment import CHUNK, Augmenter, smoothing_basis, translate, warp

SIDE = 28
EVERYTHING = dict(shift=2, rotate=15, scale=0.15, shear=10, elastic_alpha=34, elastic_sigma=4)


@pytest.fixture(scope="module")
def digits() -> np.ndarray:
    """20 real digits (20, 784), float32 in [0, 1]."""
    rows = [line.split(",")[1:] for line in sample_rows("train.csv.gz", 20)[1:]]
    return np.array(rows, np.float32) / 255


def grid(n: int) -> np.ndarray:
    """The whole-pixel sampling points (2, n, 784) of the unchanged images."""
    rows, cols = np.mgrid[0:SIDE, 0:SIDE]
    return np.stack([np.broadcast_to(c.ravel().astype(np.float32), (n, SIDE * SIDE))
                     for c in (cols, rows)])


@pytest.mark.parametrize("options", [dict(shift=3), dict(rotate=30), dict(scale=0.2),
                                     dict(shear=20), dict(elastic_alpha=34), EVERYTHING])
def test_augmentation_keeps_shape_dtype_and_range(digits, options):
    out = Augmenter(SIDE, **options)(digits, np.random.default_rng(0))
    assert out.shape == digits.shape and out.dtype == np.float32
    # Bilinear sampling mixes pixels with weights that sum to one, zeros outside.
    assert out.min() >= 0 and out.max() <= 1 + 1e-6
    assert not np.array_equal(out, digits)
    # A digit is still a digit: most of its ink is kept.
    assert 0.7 < out.sum() / digits.sum() < 1.3


def test_augmentation_is_reproducible_under_a_seed(digits):
    augment = Augmenter(SIDE, **EVERYTHING)
    a = augment(digits, np.random.default_rng(7))
    b = augment(digits, np.random.default_rng(7))
    c = augment(digits, np.random.default_rng(8))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


@pytest.mark.parametrize("options", [dict(shift=1.5), EVERYTHING])
def test_one_augmenter_serves_threads_at_once(digits, options):
    """Its scratch buffers are per thread: four threads distorting at once, 50 times
    each, get what one call alone gives (a shared set mixed their chunks)."""
    augment = Augmenter(SIDE, **options)
    images = np.tile(digits, (20, 1))                   # 400 rows: two chunks a call
    alone = [augment(images, np.random.default_rng(seed)) for seed in range(4)]
    together = [[] for _ in range(4)]

    def work(seed):
        for _ in range(50):
            together[seed].append(augment(images, np.random.default_rng(seed)))

    workers = [threading.Thread(target=work, args=(seed,)) for seed in range(4)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    for seed in range(4):
        for out in together[seed]:
            np.testing.assert_array_equal(out, alone[seed])


def test_each_image_gets_its_own_distortion(digits):
    same = np.repeat(digits[:1], 4, axis=0)
    out = Augmenter(SIDE, **EVERYTHING)(same, np.random.default_rng(0))
    assert len({row.tobytes() for row in out}) == 4


def test_the_identity_transform_leaves_images_unchanged(digits):
    augment = Augmenter(SIDE)
    assert not augment.active
    np.testing.assert_array_equal(augment(digits, np.random.default_rng(0)), digits)
    np.testing.assert_array_equal(warp(digits, grid(len(digits)), SIDE), digits)


def test_warp_shifts_and_turns_by_whole_pixels(digits):
    images = digits.reshape(-1, SIDE, SIDE)
    x, y = grid(len(digits))
    shifted = warp(digits, np.stack([x + 1, y]), SIDE).reshape(-1, SIDE, SIDE)
    np.testing.assert_array_equal(shifted[:, :, :-1], images[:, :, 1:])   # reads one to the right
    assert (shifted[:, :, -1] == 0).all()                                # outside reads zero
    turned = warp(digits, np.stack([SIDE - 1 - x, SIDE - 1 - y]), SIDE)
    np.testing.assert_array_equal(turned.reshape(-1, SIDE, SIDE), images[:, ::-1, ::-1])


def test_warp_interpolates_between_pixels():
    image = np.zeros((1, SIDE * SIDE), np.float32)
    image[0, 5 * SIDE + 5], image[0, 5 * SIDE + 6] = 1.0, 0.5
    x, y = grid(1)
    half = warp(image, np.stack([x + 0.25, y]), SIDE).reshape(SIDE, SIDE)
    assert half[5, 5] == pytest.approx(0.875) and half[5, 4] == pytest.approx(0.25)


def test_low_rank_fields_have_the_covariance_of_smoothed_noise():
    sigma = 4.0
    kernel = np.exp(-0.5 * (np.arange(-SIDE, SIDE + 1) / sigma) ** 2)
    kernel /= kernel.sum()
    # Smoothing each unit impulse gives the columns of the smoothing matrix G.
    G = np.stack([np.convolve(np.eye(SIDE)[i], kernel)[SIDE:2 * SIDE] for i in range(SIDE)], 1)
    L = smoothing_basis(SIDE, sigma)
    assert L.shape[1] < 10                                    # far fewer than 28 numbers a side
    np.testing.assert_allclose(L @ L.T, G @ G.T, atol=1e-3 * (G @ G.T).max())


def test_elastic_displacements_have_the_expected_size():
    # Noise uniform in [-1, 1] smoothed by a unit-sum Gaussian of width sigma has, far
    # from the edges, a standard deviation near sqrt(1/3 / (4 pi sigma**2)).
    alpha, sigma = 10.0, 4.0
    points = Augmenter(SIDE, elastic_alpha=alpha, elastic_sigma=sigma).sample_points(
        4000, np.random.default_rng(0))
    x, _ = grid(1)
    centre = (SIDE // 2) * SIDE + SIDE // 2
    spread = (points[0, :, centre] - x[0, centre]).std()
    assert spread == pytest.approx(alpha * np.sqrt(1 / 3 / (4 * np.pi * sigma ** 2)), rel=0.1)


@pytest.mark.parametrize("limit", [0.4, 1.0, 2.5])
def test_translate_is_warp_on_a_shifted_grid(digits, limit):
    """The separable shift samples exactly where warp does, inside the image and
    past each of its edges."""
    shifts = np.random.default_rng(1).uniform(-limit, limit, (2, len(digits)))
    points = grid(len(digits)) + shifts[:, :, None].astype(np.float32)
    np.testing.assert_allclose(translate(digits, shifts, SIDE), warp(digits, points, SIDE),
                               atol=2e-6)


@pytest.mark.parametrize("limit", [0.4, 1.0, 1.5, 3.0])
def test_take_shifts_rows_as_translate_does_to_the_bit(digits, limit):
    """`take` gathers and shifts in one compiled pass: the same values as the rows
    copied then translated, past the edges and on pixels of every size (subnormal,
    huge, inf) too, whatever the margin."""
    assert augment_module._shift_kernel() is not None, "numba is in requirements.txt"
    X = np.concatenate([digits, np.full((1, SIDE * SIDE), 3e38, np.float32)])
    X[0, ::7], X[1, ::5], X[2, 400] = 1e-39, 7e37, np.inf
    rng = np.random.default_rng(2)
    rows = rng.integers(0, len(X), 300)
    shifts = rng.uniform(-limit, limit, (2, 300))
    shifts[:, :4] = [[0.0, limit, -limit, 0.5], [0.0, -limit, limit, 0.25]]
    taken = Augmenter(SIDE, shift=limit).take(X, rows, shifts,
                                              np.empty((300, SIDE * SIDE), np.float32))
    with np.errstate(invalid="ignore"):                             # inf * 0 in the sums
        wanted = translate(X[rows], shifts, SIDE)
    np.testing.assert_array_equal(taken.view(np.uint32), wanted.view(np.uint32))


def test_take_draws_and_shifts_as_a_call_does(digits):
    """draw_shifts then take, batch by batch, give what one call on the rows gives
    (chunk by chunk from the same stream), in NumPy as compiled."""
    augment = Augmenter(SIDE, shift=1.5)
    rows = np.random.default_rng(0).integers(0, len(digits), 2 * CHUNK + 37)
    shifts = augment.draw_shifts(len(rows), np.random.default_rng(9))
    for X in (digits, digits.astype(np.float64)):                  # compiled, then NumPy's
        whole = augment(X[rows], np.random.default_rng(9))
        out = np.empty((len(rows), SIDE * SIDE), X.dtype)
        for start in range(0, len(rows), 100):
            augment.take(X, rows[start:start + 100], shifts[:, start:start + 100],
                         out[start:start + 100])
        np.testing.assert_array_equal(out, whole)


def test_take_refuses_what_its_compiled_loop_would_read_or_write_out_of_bounds(digits):
    """The loop checks nothing itself, so `take` leaves NumPy what it cannot do:
    rows past X, images of another size, an `out` of another length or shifts past
    the margin raise, and nothing is written; a negative row counts from the end."""
    augment, shifts = Augmenter(SIDE, shift=1.0), np.zeros((2, 3))
    out = np.full((3, SIDE * SIDE), 7.0, np.float32)
    wider = np.zeros((len(digits), SIDE * SIDE + 1), np.float32)
    for X, rows, into in [(digits, [0, 1, len(digits)], out),
                          (wider, [0, 1, 2], np.zeros((3, SIDE * SIDE + 1), np.float32)),
                          (digits, [0, 1], out)]:
        with pytest.raises((ValueError, IndexError)):
            augment.take(X, np.array(rows), shifts[:, :len(rows)], into)
    with pytest.raises(ValueError, match="beyond this augmenter's 1"):
        augment.take(digits, np.arange(3), shifts + 1.5, out)
    assert (out == 7.0).all()
    np.testing.assert_array_equal(augment.take(digits, np.array([0, 1, -1]), shifts, out),
                                  digits[[0, 1, -1]])


def test_shifts_alone_are_made_in_line_with_numba_only(monkeypatch):
    assert Augmenter(SIDE, shift=1.0).shifts_as_taken
    assert not Augmenter(SIDE, shift=1.0, rotate=5.0).shifts_as_taken
    assert not Augmenter(SIDE).shifts_as_taken
    monkeypatch.setattr(augment_module, "_shift_kernel", lambda: None)   # no numba
    assert not Augmenter(SIDE, shift=1.0).shifts_as_taken


def test_shifts_move_images_on_both_axes_with_their_spread(digits):
    """The centre of mass of each shifted digit moves by its shift (uniform in
    [-s, s], standard deviation s / sqrt(3)) along x and along y alike."""
    s, images = 2.0, np.repeat(digits, 50, axis=0)
    moved = Augmenter(SIDE, shift=s)(images, np.random.default_rng(3))
    coords = np.arange(SIDE)

    def centres(x):
        ink = x.reshape(-1, SIDE, SIDE)
        total = ink.sum(axis=(1, 2))
        return ink.sum(axis=1) @ coords / total, ink.sum(axis=2) @ coords / total   # x, y

    for before, after in zip(centres(images), centres(moved)):
        move = before - after             # sampling at p + t moves the content by -t
        assert abs(move.mean()) < 0.15 and move.std() == pytest.approx(s / np.sqrt(3), rel=0.1)

"""What `fit_mod.fit` trains on, and the distortions it draws.

Each epoch must train on every row exactly once, with its own label, in a new order,
the last partial batch included; with augmentation, on a fresh distortion of every
row. A spy on `network.backward` records each batch, and rows are recognised by
their content, so the checks hold however `fit` gathers its batches.

The distortions are checked by statistics over many draws of
`Augmenter.sample_points`: the affine map of each image is recovered from its
sampling points, and the shift, rotation, scale and shear must each spread as the
params say, on both axes; the elastic field must move points along both axes alike.
"""
import contextlib
import inspect

import numpy as np
import pytest
from helpers import plain_settings

from pipeline.errors import PipelineError
from pipeline.nn import network
from pipeline.nn.optim import RMSprop
from pipeline.training import fit as fit_mod
from pipeline.training.augment import CHUNK, Augmenter, smoothing_basis, warp
from pipeline.training.feed import epoch_rng

SIDE = 28
CENTRE = (SIDE - 1) / 2


# --- the training loop ---

def random_rows(n: int, seed: int = 0):
    """(X, y, X_val, y_val): n distinct random images (n, 784) with labels, and 5
    validation rows."""
    rng = np.random.default_rng(seed)
    X = rng.random((n, SIDE * SIDE), dtype=np.float32)
    y = rng.integers(0, 10, n)
    return X, y, rng.random((5, SIDE * SIDE), dtype=np.float32), rng.integers(0, 10, 5)


@pytest.fixture
def batches(monkeypatch):
    """Every batch `fit` takes a gradient step on, as (images, labels, probs) copies,
    in order. `network.backward` is called once per batch whatever the gathering."""
    seen = []
    real = network.backward
    signature = inspect.signature(real)

    def spy(*args, **kwargs):
        given = signature.bind(*args, **kwargs).arguments
        # Copies: fit may reuse its buffers, and backward overwrites probs.
        seen.append((np.array(given["X"]), np.array(given["y"]), np.array(given["probs"])))
        return real(*args, **kwargs)

    monkeypatch.setattr(network, "backward", spy)
    return seen


@contextlib.contextmanager
def given(augment=None, rate=None):
    """Within it, fit distorts with `augment` and takes its rate from `rate(t)`,
    whatever its settings say (each when given)."""
    with pytest.MonkeyPatch.context() as patch:
        if augment is not None:
            patch.setattr(fit_mod, "augmenter", lambda cfg, side: augment)
        if rate is not None:
            patch.setattr(fit_mod, "Schedule", lambda *args: rate)
        yield


def fit_epochs(data, batches, epochs=3, batch_size=8, augment=None, rate=None, **changes):
    """Run fit on a tiny plain network (Train.plain) with `changes` to its
    settings, `augment` and `rate` as `given` says, and split the spied batches by
    epoch: (params, history, epochs), each epoch a list of (images, labels, probs)."""
    X, y, X_val, y_val = data
    ends = []
    cfg = plain_settings(**{**dict(hidden=4, epochs=epochs, batch_size=batch_size, lr=1e-3,
                                   rms_decay=0.9, eps=1e-8, l2=0.0), **changes})
    with given(augment, rate):
        params, history = fit_mod.fit(X, y, X_val, y_val, cfg, rng=np.random.default_rng(1),
                                    on_epoch=lambda row: ends.append(len(batches)))
    starts = [0] + ends[:-1]
    return params, history, [batches[a:b] for a, b in zip(starts, ends)]


def row_indices(epoch, index: dict) -> np.ndarray:
    """The row of X behind each image the epoch trained on, in training order."""
    found = []
    for images, _, _ in epoch:
        for row in images:
            assert row.tobytes() in index, "fit trained on an image that is not a row of X"
            found.append(index[row.tobytes()])
    return np.array(found)


class Unchanged(Augmenter):
    """An augmenter whose 'distortion' leaves images as they are, so that rows stay
    recognisable on fit's augmented path: made by a feed."""
    shifts_as_taken = False

    def __init__(self):
        super().__init__(SIDE, shift=1.0)

    def __call__(self, images, rng, out=None):
        out = np.empty_like(images) if out is None else out
        out[...] = images
        return out


class UnchangedPerBatch(Unchanged):
    """The same, taken batch by batch as shifts alone are (feed.PerBatch)."""
    shifts_as_taken = True

    def take(self, X, rows, shifts, out):
        return np.take(X, rows, axis=0, out=out)


class Recording(Augmenter):
    """A real augmenter that remembers which row of X each distorted image came from."""

    def __init__(self, X, **options):
        super().__init__(SIDE, **options)
        self.rows = {row.tobytes(): i for i, row in enumerate(X)}
        self.made: dict[bytes, int] = {}

    def __call__(self, images, rng, out=None):
        # Read first: `out` may be `images`.
        source = [self.rows[row.tobytes()] for row in images]
        result = super().__call__(images, rng, out=out)
        self.made.update((row.tobytes(), i) for row, i in zip(result, source))
        return result


AUGMENT = {"plain": None, "augmented": Unchanged, "in line": UnchangedPerBatch}


@pytest.mark.parametrize("augment", AUGMENT)
@pytest.mark.parametrize("n,batch_size", [(50, 8), (50, 1), (50, 50), (50, 64), (7, 3)])
def test_each_epoch_trains_on_every_row_exactly_once(batches, n, batch_size, augment):
    data = random_rows(n)
    X, y = data[:2]
    make = AUGMENT[augment]
    _, history, epochs = fit_epochs(data, batches, batch_size=batch_size,
                                    augment=make() if make else None)
    assert len(epochs) == len(history) == 3
    index = {row.tobytes(): i for i, row in enumerate(X)}
    # Full batches, then the remainder: the last partial batch is trained on too.
    sizes = [batch_size] * (n // batch_size) + ([n % batch_size] if n % batch_size else [])
    for number, epoch in enumerate(epochs, 1):
        assert [len(labels) for _, labels, _ in epoch] == sizes, f"epoch {number}"
        rows = row_indices(epoch, index)
        assert sorted(rows) == list(range(n)), f"epoch {number} missed or repeated rows"
        labels = np.concatenate([labels for _, labels, _ in epoch])
        np.testing.assert_array_equal(labels, y[rows], err_msg="a row trained with another's label")


@pytest.mark.parametrize("augment", AUGMENT)
def test_each_epoch_visits_the_rows_in_a_new_order(batches, augment):
    data = random_rows(50)
    make = AUGMENT[augment]
    _, _, epochs = fit_epochs(data, batches, epochs=4, augment=make() if make else None)
    index = {row.tobytes(): i for i, row in enumerate(data[0])}
    orders = [tuple(row_indices(epoch, index)) for epoch in epochs]
    assert tuple(range(50)) not in orders, "an epoch visited the rows unshuffled"
    assert len(set(orders)) == 4, "two epochs visited the rows in the same order"


def test_each_epoch_trains_on_a_fresh_distortion_of_every_row(batches):
    data = random_rows(45)
    X, y = data[:2]
    augment = Recording(X, shift=2.0, rotate=10.0, elastic_alpha=8.0)
    _, _, epochs = fit_epochs(data, batches, batch_size=16, augment=augment)
    seen_before = set()
    for number, epoch in enumerate(epochs, 1):
        images = [row.tobytes() for batch, _, _ in epoch for row in batch]
        assert all(image in augment.made for image in images), \
            f"epoch {number} trained on an image the augmenter did not make"
        rows = np.array([augment.made[image] for image in images])
        assert sorted(rows) == list(range(len(X))), f"epoch {number} missed or repeated rows"
        labels = np.concatenate([labels for _, labels, _ in epoch])
        np.testing.assert_array_equal(labels, y[rows])
        assert not seen_before & set(images), f"epoch {number} reused an earlier distortion"
        seen_before |= set(images)
        assert not {row.tobytes() for row in X} & set(images), "an undistorted image"


@pytest.mark.parametrize("l2", [0.0, 1e-2])
def test_history_counts_every_row_of_the_epoch(batches, l2):
    # n = 50 in batches of 8: the loss and accuracy are over all 50 rows, the last 2 too.
    data = random_rows(50)
    params, history, epochs = fit_epochs(data, batches, l2=l2)
    for row, epoch in zip(history, epochs):
        probs = np.concatenate([p for _, _, p in epoch])
        labels = np.concatenate([labels for _, labels, _ in epoch])
        assert len(labels) == 50
        assert row["train_accuracy"] == (probs.argmax(axis=1) == labels).mean()
        ce = network.cross_entropy(probs, labels)
        if l2 == 0:
            assert row["loss"] == pytest.approx(ce, rel=1e-5)
    # The L2 term is the one of the weights the epoch ended with.
    assert history[-1]["loss"] == pytest.approx(ce + network.l2_penalty(params, l2), rel=1e-5)
    X_val, y_val = data[2:]
    val = network.predict_proba(params, X_val)
    assert history[-1]["val_accuracy"] == (val.argmax(axis=1) == y_val).mean()
    assert history[-1]["val_loss"] == pytest.approx(network.cross_entropy(val, y_val))


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


# --- what fit hands on: the optimiser's settings, the schedule, the divergence rule ---

def test_fit_steps_the_rate_along_the_schedule_batch_by_batch(batches):
    # Progress t is in epochs, fractional inside one: batch i of B in epoch e runs at
    # the rate for t = e - 1 + i / B (pipeline/schedule.py), one call per batch.
    asked = []
    data = random_rows(50)

    def rate(t):
        asked.append(t)
        return 1e-3

    _, history, epochs = fit_epochs(data, batches, epochs=3, batch_size=8, rate=rate)
    B = len(epochs[0])
    # fit may also ask for the rate at each epoch's start, for the history.
    assert sorted(set(asked)) == [e + i / B for e in range(3) for i in range(B)]
    assert [row["lr"] for row in history] == [1e-3] * 3


def test_fit_takes_the_steps_of_the_loop_written_out():
    """fit's weights are, to the bit, those of the loop written out: shuffled batches,
    forward, backward with the L2 term, NumPy's RMSprop step, a flush each epoch.
    fit leaves the L2 term to a compiled step (and packs the weights first for it):
    neither may change a bit."""
    X, y, X_val, y_val = random_rows(70)
    l2, lr, batch = 1e-2, 1e-2, 16
    cfg = plain_settings(hidden=8, epochs=2, batch_size=batch, lr=lr, rms_decay=0.9,
                         eps=1e-8, l2=l2, schedule="constant")
    fitted, _ = fit_mod.fit(X, y, X_val, y_val, cfg, rng=np.random.default_rng(3))

    rng = np.random.default_rng(3)
    flat, params = network.pack(network.init_params(rng, SIDE * SIDE, 8, 10))
    epoch_seed = int(rng.integers(2 ** 63))
    opt = RMSprop(flat, lr=lr, decay=0.9, eps=1e-8)
    for epoch in (1, 2):
        order = epoch_rng(epoch_seed, epoch).permutation(len(X))
        for start in range(0, len(X), batch):
            rows = order[start:start + batch]
            probs, h = network.forward(params, X[rows])
            grads = network.backward(params, X[rows], h, probs, y[rows], l2)
            opt.step_numpy(flat, network.pack(grads)[0])
        opt.flush(flat)
    for name in network.PARAM_NAMES:
        np.testing.assert_array_equal(fitted[name], params[name], err_msg=name)


def test_fit_passes_its_rate_decay_and_eps_to_rmsprop(batches):
    data = random_rows(40)
    base = dict(epochs=1, lr=1e-3, rms_decay=0.9, eps=1e-8)
    first, _, _ = fit_epochs(data, batches, **base)
    for change in (dict(lr=2e-3), dict(rms_decay=0.5), dict(eps=1e-1)):
        other, _, _ = fit_epochs(data, batches, **{**base, **change})
        assert not np.array_equal(first["W1"], other["W1"]), f"fit ignores {change}"
    again, _, _ = fit_epochs(data, batches, **base)
    np.testing.assert_array_equal(first["W1"], again["W1"])


def test_a_strong_l2_penalty_is_not_divergence(batches):
    # The untrained loss includes the L2 term: with l2 = 1 that term alone is some 26.
    _, history, _ = fit_epochs(random_rows(40), batches, l2=1.0, lr=1e-3)
    assert len(history) == 3


@pytest.fixture
def fake_loss(monkeypatch):
    """Set what fit's network reports: fake_loss(ce, start_penalty, penalty) makes
    every cross-entropy `ce`, the L2 penalty of the untrained weights `start_penalty`
    and every later one `penalty`."""
    def set_(ce, start_penalty, penalty):
        calls = []

        def l2(params, l2):
            calls.append(1)
            return start_penalty if len(calls) == 1 else penalty

        monkeypatch.setattr(network, "cross_entropy", lambda probs, y: ce)
        monkeypatch.setattr(network, "l2_penalty", l2)
    return set_


def fit_once(augment=None, teacher=None, **changes):
    """fit a tiny plain network on 32 random rows, one epoch in one batch unless
    `changes` say otherwise; `augment` as `given` says."""
    X, y, X_val, y_val = random_rows(32)
    cfg = plain_settings(**{**dict(hidden=4, epochs=1, batch_size=32, lr=1e-3, rms_decay=0.9,
                                   eps=1e-8, l2=0.0), **changes})
    with given(augment):
        return fit_mod.fit(X, y, X_val, y_val, cfg, rng=np.random.default_rng(0), teacher=teacher)


def test_divergence_is_a_cross_entropy_above_three_times_ln_10(fake_loss):
    limit = 3 * np.log(10)
    fake_loss(limit, 0.0, 0.0)
    fit_once()                                                 # at the limit: still training
    fake_loss(np.nextafter(limit, np.inf), 0.0, 0.0)
    with pytest.raises(PipelineError, match="training diverged at epoch 1"):
        fit_once()


def test_divergence_is_a_loss_a_hundred_times_the_untrained_one(fake_loss):
    start = np.log(10) + 1.0                                   # an untrained penalty of 1
    fake_loss(1.0, 1.0, 100 * start - 1.0)                     # exactly a hundredfold: fine
    fit_once()
    fake_loss(1.0, 1.0, 100 * start)                           # a little more
    with pytest.raises(PipelineError, match="training diverged at epoch 1"):
        fit_once()


def test_non_finite_weights_are_divergence_even_when_the_loss_is_finite(fake_loss, monkeypatch):
    fake_loss(1.0, 0.0, 0.0)
    real = network.backward

    def poisoned(*args, **kwargs):
        grads = real(*args, **kwargs)
        grads["W1"][0, 0] = np.inf                             # the step makes a weight NaN
        return grads

    monkeypatch.setattr(network, "backward", poisoned)
    with pytest.raises(PipelineError, match="training diverged at epoch 1"), \
            np.errstate(invalid="ignore"):
        fit_once()


def test_history_times_each_epoch():
    import time
    started = time.perf_counter()
    _, history = fit_once(epochs=2)
    took = time.perf_counter() - started
    assert all(0 <= row["seconds"] <= took for row in history)


# --- the network's defaults and batching, as fit and predict use them ---

def test_the_network_defaults_to_784_256_10():
    params = network.init_params(np.random.default_rng(0))
    assert {k: v.shape for k, v in params.items()} == network.shapes() == {
        "W1": (784, 256), "b1": (256,), "W2": (256, 10), "b2": (10,)}


def test_predict_proba_works_a_batch_at_a_time_in_float32(monkeypatch):
    params = network.init_params(np.random.default_rng(0), 20, 8, 10)
    X = np.random.default_rng(1).random((50, 20), dtype=np.float32)
    sizes = []
    real = network.forward
    monkeypatch.setattr(network, "forward", lambda p, x: (sizes.append(len(x)), real(p, x))[1])
    probs = network.predict_proba(params, X, batch_size=20)
    assert sizes == [20, 20, 10]                    # the batch size bounds the memory used
    assert probs.dtype == np.float32 and probs.shape == (50, 10)
    sizes.clear()
    network.predict_proba(params, np.zeros((5000, 20), np.float32))
    assert sizes == [4096, 904]                     # predict.batch_size's default


def test_an_unknown_schedule_names_the_known_ones():
    from pipeline.nn.schedule import Schedule
    with pytest.raises(ValueError, match="expected one of constant, step, cosine"):
        Schedule("linear", 0.01, epochs=3)


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


def test_fit_keeps_float32_weights():
    params, _ = fit_once(epochs=1)
    assert {k: v.dtype for k, v in params.items()} == dict.fromkeys(network.PARAM_NAMES,
                                                                    np.dtype(np.float32))


@pytest.mark.parametrize("options", [dict(shift=2.0), dict(shift=2.0, rotate=10.0)],
                         ids=["shift only", "shift and a warp"])
def test_augmenting_in_place_gives_what_a_copy_would(options):
    # fit distorts its shuffled copy in place: each chunk must be read before it is
    # written, and only once.
    images = random_rows(2 * CHUNK + 40)[0]
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


def test_distillation_is_off_unless_weighted_and_its_temperature_defaults_to_1():
    rng = np.random.default_rng(0)
    params = network.init_params(rng, 20, 8, 10)
    X, y = rng.random((6, 20), dtype=np.float32), rng.integers(0, 10, 6)
    targets = rng.dirichlet(np.ones(10), 6).astype(np.float32)
    plain = network.loss(params, X, y, 0.01)
    assert network.loss(params, X, y, 0.01, targets=targets) == plain          # weight 0
    assert network.loss(params, X, y, 0.01, targets=targets, weight=0.5) == \
        network.loss(params, X, y, 0.01, targets=targets, temperature=1.0, weight=0.5)

    def grads(**options):
        probs, h = network.forward(params, X)
        return network.backward(params, X, h, probs, y, 0.01, **options)

    for name, g in grads(targets=targets).items():
        np.testing.assert_array_equal(g, grads()[name])
    for name, g in grads(targets=targets, weight=0.5).items():
        np.testing.assert_array_equal(g, grads(targets=targets, temperature=1.0, weight=0.5)[name])


def row_targets(images: np.ndarray) -> np.ndarray:
    """A teacher whose soft targets (N, 10) are a function of each image alone."""
    z = images[:, :10].astype(np.float64) * 5
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return (e / e.sum(axis=1, keepdims=True)).astype(np.float32)


@pytest.mark.parametrize("augment", AUGMENT)
def test_each_batch_is_distilled_from_the_teachers_targets_for_its_own_rows(monkeypatch, augment):
    seen = []
    real = network.backward
    signature = inspect.signature(real)

    def spy(*args, **kwargs):
        bound = signature.bind(*args, **kwargs)
        bound.apply_defaults()
        a = bound.arguments
        seen.append((np.array(a["X"]), None if a["targets"] is None else np.array(a["targets"]),
                     a["temperature"], a["weight"]))
        return real(*args, **kwargs)

    monkeypatch.setattr(network, "backward", spy)
    make = AUGMENT[augment]
    options = dict(augment=make() if make else None, distill_temperature=3.0,
                   distill_weight=0.25)
    fit_once(epochs=2, batch_size=8, teacher=row_targets, **options)
    assert len(seen) == 2 * 4
    for images, targets, temperature, weight in seen:
        np.testing.assert_array_equal(targets, row_targets(images))
        assert (temperature, weight) == (3.0, 0.25)          # the settings'
    seen.clear()
    fit_once(epochs=1, batch_size=8, **options)             # no teacher: no distillation
    assert len(seen) == 4 and all(targets is None for _, targets, _, _ in seen)


def test_patience_of_one_still_trains_past_the_first_epoch():
    # The first epoch is always the best so far, so patience 1 stops at the earliest
    # after the second.
    _, history = fit_once(epochs=4, patience=1)
    assert [row["epoch"] for row in history][:2] == [1, 2]

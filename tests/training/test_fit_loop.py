"""What `fit_mod.fit` trains on and hands on.

Each epoch must train on every row exactly once, with its own label, in a new order,
the last partial batch included; with augmentation, on a fresh distortion of every
row. A spy on `network.backward` records each batch, and rows are recognised by
their content, so the checks hold however `fit` gathers its batches. Then the
optimiser's settings, the schedule, the divergence rule, distillation and patience.
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
from pipeline.training.augment import Augmenter
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


def test_fit_keeps_float32_weights():
    params, _ = fit_once(epochs=1)
    assert {k: v.dtype for k, v in params.items()} == dict.fromkeys(network.PARAM_NAMES,
                                                                    np.dtype(np.float32))




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

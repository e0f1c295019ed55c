"""The feed: each epoch's images, made ahead on a thread or not, are the same."""
import threading
import time

import numpy as np
import pytest
from helpers import train_settings

from pipeline.training import augment as augment_module
from pipeline.training import threads
from pipeline.training.augment import Augmenter
from pipeline.training.feed import Ahead, PerBatch, choose_feed, epoch_rng

SIDE = 8


@pytest.fixture
def images():
    return np.random.default_rng(0).random((50, SIDE * SIDE), dtype=np.float32)


def expected(X, augment, seed, epoch):
    rng = epoch_rng(seed, epoch)
    order = rng.permutation(len(X))
    return order, augment(X[order], rng)


def read(feed, n, batch=7):
    """All n rows of the epoch being read, a batch at a time, as training reads them."""
    return np.concatenate([feed.rows(start, start + batch).copy()    # the last may end past n
                           for start in range(0, n, batch)])


@pytest.fixture
def small_chunks(monkeypatch):
    """Distortions drawn 8 images at a time, so that a block of 16 holds two chunks."""
    monkeypatch.setattr(augment_module, "CHUNK", 8)


@pytest.mark.parametrize("ahead", [True, False])
def test_each_epoch_is_its_own_stream_made_ahead_or_not(images, small_chunks, ahead):
    """Made a block of 16 rows at a time, behind the reader, each epoch's images are
    those of one call on the whole epoch: the block boundaries fall between chunks."""
    augment = Augmenter(SIDE, shift=1.0, rotate=10.0)
    with Ahead(images, augment, seed=5, ahead=ahead, block=16) as feed:
        for epoch in range(1, 5):
            order = feed.epoch(epoch, epoch + 1)
            want_order, want = expected(images, augment, 5, epoch)
            np.testing.assert_array_equal(order, want_order)
            np.testing.assert_array_equal(read(feed, len(images)), want)


def test_the_next_epoch_overwrites_only_rows_handed_back(images, small_chunks):
    """One buffer serves both epochs: rows before the reader's position take the
    next epoch's images, a block at a time; rows still to be read stay as they were."""
    augment = Augmenter(SIDE, shift=1.0)
    with Ahead(images, augment, seed=3, ahead=True, block=16) as feed:
        feed.epoch(1, 2)
        shown = feed.images
        before = read(feed, 40)                           # rows 0-39 read, 0-34 handed back
        _, after_two = expected(images, augment, 3, 2)
        deadline = time.monotonic() + 10
        while not np.array_equal(shown[:32], after_two[:32]) and time.monotonic() < deadline:
            time.sleep(0.01)                              # two blocks of epoch 2 come
        np.testing.assert_array_equal(shown[:32], after_two[:32])
        np.testing.assert_array_equal(shown[32:40], before[32:40])   # its third block waits
        np.testing.assert_array_equal(feed.rows(40, 50), expected(images, augment, 3, 1)[1][40:])


def test_epochs_differ_and_a_resumed_feed_starts_anywhere(images):
    augment = Augmenter(SIDE, shift=1.0)
    with Ahead(images, augment, seed=5) as feed:
        first = [feed.epoch(e, e + 1).copy() for e in (1, 2)]
    assert not np.array_equal(*first)
    with Ahead(images, augment, seed=5) as resumed:      # as after a checkpoint at epoch 1
        np.testing.assert_array_equal(resumed.epoch(2), first[1])


def test_an_error_on_the_thread_reaches_the_caller(images):
    calls = []

    def broken(batch, rng, out):
        calls.append(1)
        if len(calls) == 2:
            raise ValueError("distortion failed")
        out[:] = batch
        return out

    with Ahead(images, broken, seed=1, ahead=True) as feed:
        feed.epoch(1, 2)                                  # epoch 2 fails on the thread
        with pytest.raises(ValueError, match="distortion failed"):
            feed.epoch(2, 3)
            feed.rows(0, len(images))


def test_an_error_making_the_next_epoch_lets_this_one_finish(images, small_chunks):
    """Epoch 1 is read to its end (and so can be saved) though epoch 2 failed behind
    it; the error comes when epoch 2's rows are read."""
    augment = Augmenter(SIDE, shift=1.0)
    calls = []

    def fails_in_epoch_two(batch, rng, out):
        calls.append(1)
        if len(calls) > 4:                                # epoch 1 is 4 blocks of 16
            raise ValueError("distortion failed")
        return augment(batch, rng, out=out)

    with Ahead(images, fails_in_epoch_two, seed=1, ahead=True, block=16) as feed:
        feed.epoch(1, 2)
        for start in range(0, len(images), 8):
            feed.rows(start, start + 8)
            time.sleep(0.01)                              # epoch 2's thread fails meanwhile
        feed.epoch(2, 3)
        with pytest.raises(ValueError, match="distortion failed"):
            feed.rows(0, 8)


def test_closing_stops_a_thread_that_waits_for_rows(images):
    augment = Augmenter(SIDE, shift=1.0)
    with Ahead(images, augment, seed=3, ahead=True) as feed:
        feed.epoch(1, 2)
        shown = feed.images
        before = shown.copy()
        feed.close()                       # nothing was handed back: epoch 2 was not begun
        np.testing.assert_array_equal(shown, before)
        assert not [t for t in threading.enumerate() if t.name.startswith("feed-")]


def test_shifts_made_in_line_are_the_feeds(images, small_chunks):
    """PerBatch shifts each batch as it is read: the images a feed makes, epoch by epoch."""
    augment = Augmenter(SIDE, shift=1.5)
    with Ahead(images, augment, seed=4, ahead=True, block=16) as feed, \
            PerBatch(images, augment, seed=4) as in_line:
        for epoch in range(1, 4):
            np.testing.assert_array_equal(in_line.epoch(epoch, epoch + 1),
                                          feed.epoch(epoch, epoch + 1))
            np.testing.assert_array_equal(read(in_line, len(images)), read(feed, len(images)))
        np.testing.assert_array_equal(in_line.rows(0, len(images)),
                                      expected(images, augment, 4, 3)[1])


@pytest.mark.parametrize("cores,blas,ahead,in_line", [
    (2, 2, None, True),         # a feed would take one of BLAS's two threads
    (2, 1, None, False),        # OPENBLAS_NUM_THREADS=1: the feed's core is idle anyway
    (4, 2, None, False),
    (2, 1, False, True),        # not ahead (members side by side): made in line anyway
    (1, 1, None, True),
    (2, None, None, True)])     # BLAS's threads unknown: no core is known to be idle
def test_shifts_are_made_in_line_unless_a_feed_has_an_idle_core(monkeypatch, images, cores,
                                                                blas, ahead, in_line):
    monkeypatch.setattr(threads, "cores", lambda: cores)
    monkeypatch.setattr(threads, "blas_threads", lambda: blas)
    made = choose_feed(images, Augmenter(SIDE, shift=1.0), seed=1, ahead=ahead)
    assert isinstance(made, PerBatch) == in_line
    assert isinstance(choose_feed(images, Augmenter(SIDE, shift=1.0, rotate=5.0), seed=1,
                               ahead=ahead), Ahead)


def test_fit_shifts_in_line_or_through_a_feed_to_the_same_weights(monkeypatch):
    """Shifts alone take PerBatch's path, with numba; without, the feed's. At one BLAS
    thread either way, the weights are the same."""
    from threadpoolctl import threadpool_limits

    from pipeline.training import fit as fit_mod

    rng = np.random.default_rng(0)
    X, y = rng.random((200, 784), dtype=np.float32), rng.integers(0, 10, 200)
    cfg = train_settings(hidden=16, epochs=3, batch_size=32, augment_shift=1.5,
                         augment_rotate=0.0)
    made = []

    def fitted():
        with threadpool_limits(1, user_api="blas"), monkeypatch.context() as patch:
            patch.setattr(PerBatch, "rows", lambda self, *a: made.append(1) or real(self, *a))
            params, _ = fit_mod.fit(X[:160], y[:160], X[160:], y[160:], cfg,
                                  rng=np.random.default_rng(0), ahead=False)
        return params

    real = PerBatch.rows
    in_line = fitted()
    assert made, "shifts alone are made in line"
    monkeypatch.setattr(augment_module, "_shift_kernel", lambda: None)
    made.clear()
    through_feed = fitted()
    assert not made
    for name in in_line:
        np.testing.assert_array_equal(in_line[name], through_feed[name])


def test_fit_ends_with_the_same_weights_with_the_feed_ahead_or_not(monkeypatch):
    # One BLAS thread either way: the thread count itself may change the last bits.
    from threadpoolctl import threadpool_limits

    from pipeline.training import fit as fit_mod

    rng = np.random.default_rng(0)
    X, y = rng.random((200, 784), dtype=np.float32), rng.integers(0, 10, 200)

    def fitted(cores):
        monkeypatch.setattr(threads, "cores", lambda: cores)
        cfg = train_settings(hidden=16, epochs=3, batch_size=32, augment_rotate=5.0)
        with threadpool_limits(1, user_api="blas"):
            params, _ = fit_mod.fit(X[:160], y[:160], X[160:], y[160:], cfg,
                                  rng=np.random.default_rng(0))
        return params

    one, two = fitted(1), fitted(2)
    for name in one:
        np.testing.assert_array_equal(one[name], two[name])


def blas_threads() -> int:
    from threadpoolctl import threadpool_info
    return max(pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas")


def test_blas_has_a_core_fewer_while_the_feed_works_ahead(monkeypatch, images):
    from threadpoolctl import threadpool_limits
    monkeypatch.setattr(threads, "cores", lambda: 3)
    with threadpool_limits(3, user_api="blas"):
        with Ahead(images, Augmenter(SIDE, shift=1.0), seed=1) as feed:
            feed.epoch(1, 2)
            assert blas_threads() == 2
        assert blas_threads() == 3                          # given back
        with Ahead(images, Augmenter(SIDE, shift=1.0), seed=1, ahead=False):
            assert blas_threads() == 3
    with threadpool_limits(1, user_api="blas"):           # as OPENBLAS_NUM_THREADS=1
        with Ahead(images, Augmenter(SIDE, shift=1.0), seed=1):
            assert blas_threads() == 1                      # a cap, never more


def test_blas_threads_come_back_when_training_fails(monkeypatch, images):
    from threadpoolctl import threadpool_limits
    monkeypatch.setattr(threads, "cores", lambda: 3)

    def broken(batch, rng, out):
        raise ValueError("distortion failed")

    with threadpool_limits(3, user_api="blas"):
        with pytest.raises(ValueError, match="distortion failed"):
            with Ahead(images, broken, seed=1) as feed:
                feed.epoch(1, 2)
        assert blas_threads() == 3

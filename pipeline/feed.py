"""Each epoch's training images, shuffled and distorted afresh, made one epoch ahead.

Distorting 37800 images costs about as much as a training epoch's matrix products,
in NumPy on one core. `Feed` makes the next epoch's images on a second thread while
the network trains on this epoch's, so on a machine with two cores or more that cost
is mostly hidden. Meanwhile BLAS gets one core fewer: OpenBLAS's threads wait for
each other by spinning, so a product whose thread shares a core with the feed waits
for it (docs/speed.md, Threads).

Epoch e draws its order and its distortions from a stream of its own,
`epoch_rng(seed, e)`, so its images are the same whether they were made ahead or
not, and a run that resumes at epoch e needs nothing but e. NumPy (and
pipeline.threads for BLAS's threads), no I/O.
"""
from __future__ import annotations

import contextlib
import threading
from typing import Callable

import numpy as np

from pipeline import threads


def epoch_rng(seed: int, epoch: int) -> np.random.Generator:
    """The random stream of epoch `epoch` (1, 2, ...): its order and distortions."""
    return np.random.default_rng([seed, epoch])


class Feed:
    """Epoch e's rows of X (N, D), in a new order and through `augment`.

    `epoch(e, then)` returns (order (N,), images (N, D)), with images[i] the
    distorted X[order[i]], and when `then` is given starts making that epoch's on a
    background thread (`ahead`, by default when there are two cores or more) or
    leaves it for later: the images are the same. Two buffers of X's size take
    turns, so an epoch's images stay valid until the next call (`then` must be an
    epoch of the other parity, as the next one is). Use the feed in a `with`: inside,
    BLAS has at most one thread fewer than cores when it works ahead, and the end
    waits for the thread.
    """

    def __init__(self, X: np.ndarray, augment: Callable, seed: int,
                 ahead: bool | None = None):
        self.X, self.augment, self.seed = X, augment, seed
        self.ahead = threads.cores() > 1 if ahead is None else ahead
        self._buffers = [np.empty_like(X) for _ in range(2 if self.ahead else 1)]
        self._pending: tuple[int, threading.Thread, dict] | None = None
        self._limits = contextlib.ExitStack()         # BLAS's threads, given back on close

    def _make(self, epoch: int) -> np.ndarray:
        """Fill epoch's buffer with its images and return its order."""
        rng = epoch_rng(self.seed, epoch)
        order = rng.permutation(len(self.X))
        out = self._buffers[epoch % len(self._buffers)]
        np.take(self.X, order, axis=0, out=out)
        self.augment(out, rng, out=out)
        return order

    def _start(self, epoch: int) -> None:
        result: dict = {}

        def work() -> None:
            try:
                result["order"] = self._make(epoch)
            except BaseException as exc:        # re-raised in the training thread
                result["error"] = exc

        thread = threading.Thread(target=work, name=f"feed-epoch-{epoch}", daemon=True)
        thread.start()
        self._pending = (epoch, thread, result)

    def _wait(self) -> tuple[int, dict] | None:
        if self._pending is None:
            return None
        epoch, thread, result = self._pending
        self._pending = None
        thread.join()
        if "error" in result:
            raise result["error"]
        return epoch, result

    def epoch(self, epoch: int, then: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(order (N,), images (N, D)) of `epoch`; then starts on epoch `then`."""
        done = self._wait()
        order = done[1]["order"] if done and done[0] == epoch else self._make(epoch)
        if then is not None and self.ahead:
            assert (then - epoch) % 2, "`then` would overwrite the images just returned"
            self._start(then)
        return order, self._buffers[epoch % len(self._buffers)]

    def close(self) -> None:
        """Wait for the thread, if one is running (its work is dropped), and give
        BLAS its threads back, whatever happens while waiting."""
        try:
            if self._pending is not None:
                self._pending[1].join()
                self._pending = None
        finally:
            self._limits.close()

    def __enter__(self) -> "Feed":
        now = threads.blas_threads() if self.ahead else None
        if now is not None:
            self._limits.enter_context(threads.blas_limit(threads.beside_feed(now)))
        return self

    def __exit__(self, *exc) -> None:
        self.close()

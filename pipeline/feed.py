"""Each epoch's training images, shuffled and distorted afresh, made one epoch ahead.

Distorting 37800 images costs about half a training epoch, in NumPy on one core.
`Feed` makes the next epoch's images on a second thread while the network trains
on this epoch's, so on a machine with two cores or more that cost is mostly hidden.

Epoch e draws its order and its distortions from a stream of its own,
`epoch_rng(seed, e)`, so its images are the same whether they were made ahead or
not, and a run that resumes at epoch e needs nothing but e. NumPy only, no I/O.
"""
from __future__ import annotations

import threading
from typing import Callable

import numpy as np


def epoch_rng(seed: int, epoch: int) -> np.random.Generator:
    """The random stream of epoch `epoch` (1, 2, ...): its order and distortions."""
    return np.random.default_rng([seed, epoch])


class Feed:
    """Epoch e's rows of X (N, D), in a new order and through `augment`.

    `epoch(e, then)` returns (order (N,), images (N, D)), with images[i] the
    distorted X[order[i]], and when `then` is given starts making that epoch's on a
    background thread (`ahead`) or leaves it for later (not `ahead`): the results
    are the same. Two buffers of X's size take turns, so an epoch's images stay
    valid until the call after the next. Close the feed (or use it in a `with`)
    before its buffers go: that waits for the thread.
    """

    def __init__(self, X: np.ndarray, augment: Callable, seed: int, ahead: bool = True):
        self.X, self.augment, self.seed, self.ahead = X, augment, seed, ahead
        self._buffers = [np.empty_like(X) for _ in range(2 if ahead else 1)]
        self._pending: tuple[int, threading.Thread, dict] | None = None

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
            self._start(then)
        return order, self._buffers[epoch % len(self._buffers)]

    def close(self) -> None:
        """Wait for the thread, if one is running; its work is dropped."""
        if self._pending is not None:
            self._pending[1].join()
            self._pending = None

    def __enter__(self) -> "Feed":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

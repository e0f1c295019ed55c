"""Each epoch's training images, shuffled and distorted afresh, made ahead.

Distorting 37800 images costs about as much as a training epoch's matrix products,
in NumPy on one core. `Ahead` makes the next epoch's images on a second thread while
the network trains on this epoch's, a block at a time over rows training is done
with, so on a machine with two cores or more that cost is mostly hidden, for one
buffer of the images' size. Meanwhile BLAS gets one core fewer: OpenBLAS's threads
wait for each other by spinning, so a product whose thread shares a core with the
feed waits for it (docs/speed.md, Threads).

Shifts alone cost less than the BLAS thread a feed takes: `PerBatch` shifts each batch
as training takes it, in one compiled pass, and BLAS keeps every core. `choose_feed`
chooses.

Epoch e draws its order and its distortions from a stream of its own,
`epoch_rng(seed, e)`, so its images are the same whether they were made ahead or
not, and a run that resumes at epoch e needs nothing but e. NumPy (with
pipeline.threads for BLAS's threads, and the augmenter's compiled `take` for shifts
made in line), no I/O.
"""
from __future__ import annotations

import contextlib
import threading
from typing import Callable

import numpy as np

from pipeline.training import threads


def epoch_rng(seed: int, epoch: int) -> np.random.Generator:
    """The random stream of epoch `epoch` (1, 2, ...): its order and distortions."""
    return np.random.default_rng([seed, epoch])


BLOCK = 4096        # rows the feed makes at a time; a multiple of augment.CHUNK


class Ahead:
    """Epoch e's rows of X (N, D), in a new order and through `augment`.

    `epoch(e, then)` returns epoch e's order (N,), and when `then` is given starts
    making that epoch's images on a background thread (`ahead`, by default when
    there are two cores or more) or leaves it for later: the images are the same.
    Read them through `rows(start, stop)`, in order: rows[i] is the distorted
    X[order[start + i]]. It waits until the feed has written them, and hands rows
    before `start` back to the feed, which writes epoch `then`'s images over them, a
    block at a time. So one buffer of X's size (`images`, (N, D)) serves both epochs
    (118 MB on Kaggle's data, where two buffers took twice that), and the feed trails
    the reader through it. Use the feed in a `with`: inside, BLAS has at most
    one thread fewer than cores when it works ahead, and the end stops the thread.
    """

    def __init__(self, X: np.ndarray, augment: Callable, seed: int,
                 ahead: bool | None = None, block: int = BLOCK):
        self.X, self.augment, self.seed, self.block = X, augment, seed, block
        self.ahead = threads.cores() > 1 if ahead is None else ahead
        self.images = np.empty_like(X)     # read it through `rows`
        # Guarded by _changed: the epoch being read and how many of its rows are
        # handed back; the epoch being written and how many of its rows are done;
        # each epoch's order once drawn; the first error on a thread.
        self._changed = threading.Condition()
        self._reading, self._written = (0, 0), (0, 0)
        self._orders: dict[int, np.ndarray] = {}
        self._error: BaseException | None = None
        self._stopping = False
        self._thread: threading.Thread | None = None    # the newest; it waits for the one before
        self._next = 0                                   # the epoch that thread makes
        self._limits = contextlib.ExitStack()         # BLAS's threads, given back on close

    def _make(self, epoch: int, after: int | None = None) -> None:
        """Write epoch's images into the buffer, a block at a time. With `after`, each
        block first waits until the reader has handed back those rows of epoch `after`."""
        rng = epoch_rng(self.seed, epoch)
        order = rng.permutation(len(self.X))
        with self._changed:
            self._orders = {epoch: order}
            self._written = (epoch, 0)
            self._changed.notify_all()
        for start in range(0, len(order), self.block):
            stop = min(start + self.block, len(order))
            if after is not None:
                with self._changed:
                    self._changed.wait_for(lambda: self._stopping or self._reading[0] != after
                                           or self._reading[1] >= stop)
                    if self._stopping:
                        return
            out = self.images[start:stop]
            np.take(self.X, order[start:stop], axis=0, out=out)
            # The epoch's stream goes on from block to block: the same draws as one call.
            self.augment(out, rng, out=out)
            with self._changed:
                self._written = (epoch, stop)
                self._changed.notify_all()

    def _start(self, epoch: int, after: int) -> None:
        previous = self._thread

        def work() -> None:
            if previous is not None:
                previous.join()                 # one epoch written at a time, in order
            try:
                if not (self._stopping or self._error):
                    self._make(epoch, after)
            except BaseException as exc:        # re-raised in the reading thread
                with self._changed:
                    self._error = self._error or exc
                    self._changed.notify_all()

        self._thread = threading.Thread(target=work, name=f"feed-epoch-{epoch}", daemon=True)
        self._next = epoch
        self._thread.start()

    def _wait(self, ready: Callable[[], bool]) -> None:
        """Wait, holding _changed, until `ready()`; raise a thread's error if that
        never comes. An error making the next epoch does not stop this one: it is
        raised when that epoch is read (and dropped if it never is)."""
        self._changed.wait_for(lambda: ready() or self._error is not None)
        if not ready():
            raise self._error

    def epoch(self, epoch: int, then: int | None = None) -> np.ndarray:
        """The order (N,) of `epoch`, whose rows come next; then starts on epoch
        `then` (> epoch)."""
        with self._changed:
            self._reading = (epoch, 0)           # every row of the last epoch is handed back
            self._changed.notify_all()
            coming = self._thread is not None and self._next == epoch
            if coming:                            # made ahead, or being made
                self._wait(lambda: epoch in self._orders)
        if not coming:                            # first, resumed, or not made ahead
            self.close_thread()
            self._make(epoch)
        order = self._orders[epoch]
        if then is not None and self.ahead:
            self._start(then, after=epoch)
        return order

    def rows(self, start: int, stop: int) -> np.ndarray:
        """images[start:stop] of the epoch being read, once written; hands back the
        rows before `start`, which the next epoch's may then overwrite."""
        epoch, stop = self._reading[0], min(stop, len(self.X))
        with self._changed:
            self._reading = (epoch, start)
            self._changed.notify_all()
            self._wait(lambda: self._written[0] > epoch
                       or (self._written[0] == epoch and self._written[1] >= stop))
        return self.images[start:stop]

    def close_thread(self) -> None:
        """Stop the feed's threads, if any run, and drop their work."""
        if self._thread is not None:
            with self._changed:
                self._stopping = True
                self._changed.notify_all()
            self._thread.join()                   # it joins the one before
            self._thread, self._stopping, self._error = None, False, None

    def close(self) -> None:
        """Stop the threads (their work is dropped) and give BLAS its threads back,
        whatever happens while waiting."""
        try:
            self.close_thread()
        finally:
            self._limits.close()

    def __enter__(self) -> "Ahead":
        now = threads.blas_threads() if self.ahead else None
        if now is not None:
            self._limits.enter_context(threads.blas_limit(threads.beside_feed(now)))
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def choose_feed(X: np.ndarray, augment, seed: int, ahead: bool | None = None) -> "Ahead | PerBatch":
    """The feed of X's epochs through `augment`: a PerBatch when `per_batch(augment,
    ahead)`, else an Ahead. Either gives the same images."""
    if per_batch(augment, ahead):
        return PerBatch(X, augment, seed)
    return Ahead(X, augment, seed, ahead)


def per_batch(augment, ahead: bool | None = None) -> bool:
    """Whether augment's images are best made in line: it can (`augment.shifts_as_taken`:
    shifts alone, compiled), and an Ahead working ahead would not have a core that
    BLAS leaves idle anyway (as with OPENBLAS_NUM_THREADS=1 on two cores), where it
    costs training nothing. It depends on the cores and the BLAS limit in force,
    never on timing, and both ways give the same images."""
    if not getattr(augment, "shifts_as_taken", False):
        return False
    ahead = threads.cores() > 1 if ahead is None else ahead
    blas = threads.blas_threads()
    return not (ahead and blas is not None and blas < threads.cores())    # no idle core


class PerBatch:
    """What `Ahead` hands out, made as it is read, on the reader's thread: for an
    augmenter whose `take` distorts rows as it gathers them (`per_batch`: shifts
    alone, compiled), which costs less than the BLAS thread a feed takes.

    The same interface as Ahead and the same images: epoch e's order and shifts are
    drawn from `epoch_rng(seed, e)` as Ahead draws them. rows(start, stop) are made
    afresh into a buffer of this object's, valid until the next call.
    """

    def __init__(self, X: np.ndarray, augment, seed: int):
        assert augment.shifts_as_taken, "PerBatch makes shifts alone: use choose_feed"
        self.X, self.augment, self.seed = X, augment, seed
        self._order = self._shifts = None
        self._out = np.empty((0, X.shape[1]), X.dtype)

    def epoch(self, epoch: int, then: int | None = None) -> np.ndarray:
        """The order (N,) of `epoch`; `then` is ignored: nothing is made ahead."""
        rng = epoch_rng(self.seed, epoch)
        self._order = rng.permutation(len(self.X))
        self._shifts = self.augment.draw_shifts(len(self.X), rng)      # (2, N)
        return self._order

    def rows(self, start: int, stop: int) -> np.ndarray:
        """The epoch's distorted X[order[start:stop]]."""
        stop = min(stop, len(self.X))
        if len(self._out) < stop - start:
            self._out = np.empty((stop - start, self.X.shape[1]), self.X.dtype)
        return self.augment.take(self.X, self._order[start:stop],
                                 self._shifts[:, start:stop], self._out[:stop - start])

    def __enter__(self) -> "PerBatch":
        return self

    def __exit__(self, *exc) -> None:
        pass

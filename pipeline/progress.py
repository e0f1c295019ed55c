"""Progress: tqdm bars when stdout is a terminal, plain log lines otherwise.

Both go through the "pipeline" logger's level, so `--quiet` (level WARNING)
silences them. Bars are drawn on stdout, where the log lines go, and log lines
printed while a bar is open are written above it instead of through it.
"""
from __future__ import annotations

import collections
import contextlib
import io
import logging
import os
import sys
import time
from typing import Callable, Iterator, TextIO

from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

log = logging.getLogger("pipeline")
PACE = 10           # epochs whose pace gives the time left


def bars_wanted(stream: TextIO | None = None) -> bool:
    """Whether to draw bars: progress is not silenced and `stream` is a terminal
    with a width (a pseudo-terminal of 0 columns would show no bar and no lines)."""
    stream = stream or sys.stdout
    if not (log.isEnabledFor(logging.INFO) and hasattr(stream, "isatty") and stream.isatty()):
        return False
    try:
        return os.get_terminal_size(stream.fileno()).columns > 0
    except (AttributeError, ValueError, OSError, io.UnsupportedOperation):
        return True             # a terminal-like stream without a size: let tqdm decide


def _duration(seconds: float) -> str:
    seconds = max(0, round(seconds))
    return f"{seconds // 60}:{seconds % 60:02d}" if seconds >= 60 else f"{seconds} s"


class Epochs:
    """The `on_epoch` hook of train.fit: one bar over the epochs of every member,
    or one log line per epoch with the time left. Use it as a context manager, so
    the bar is closed however training ends (early stopping, an error)."""

    def __init__(self, epochs: int, members: int = 1, desc: str = "train",
                 stream: TextIO | None = None, total: int | None = None, done: int = 0):
        self.bar = None
        self.epochs, self.members, self.desc = epochs, members, desc
        # `total`: every member's epochs, when one (a student) trains longer; `done`:
        # those a resumed run finished before it was stopped.
        self.total, self.done = total or epochs * members, done
        # When the last PACE epochs ended (and training started): the time left goes
        # at their pace, since a run's pace changes (members two at a time, then one
        # alone, then a slower student).
        self.ends = collections.deque([time.perf_counter()], maxlen=PACE + 1)
        stream = stream or sys.stdout
        if bars_wanted(stream):
            self.bar = tqdm(total=self.total, initial=done, desc=desc, unit="epoch",
                            file=stream, dynamic_ncols=True, leave=True)
            self._redirect = logging_redirect_tqdm([log])
            self._redirect.__enter__()

    def __call__(self, row: dict) -> None:
        """Show one epoch's row of the training history."""
        self.done += 1
        member = (f"member {row.get('member', 0) + 1}/{self.members}  "
                  if self.members > 1 else "")
        scores = (f"loss {row['loss']:.4f}  train acc {row['train_accuracy']:.4f}  "
                  f"val acc {row['val_accuracy']:.4f}")
        if self.bar is not None:
            self.bar.set_postfix_str(member + scores, refresh=False)
            self.bar.update(1)
            return
        self.ends.append(time.perf_counter())
        pace = (self.ends[-1] - self.ends[0]) / (len(self.ends) - 1)     # s an epoch
        left = pace * (self.total - self.done)
        lr = f"  lr {row['lr']:.2g}" if "lr" in row else ""
        log.info("%s: %sepoch %d/%d  %s%s  (%.1f s, %s left)", self.desc, member,
                 row["epoch"], row.get("of", self.epochs), scores, lr, row["seconds"],
                 _duration(left))

    def close(self) -> None:
        """Finish the bar, if one is drawn."""
        if self.bar is not None:
            self._redirect.__exit__(None, None, None)
            self.bar.close()
            self.bar = None

    def __enter__(self) -> "Epochs":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


@contextlib.contextmanager
def activity(desc: str, stream: TextIO | None = None) -> Iterator[None]:
    """A bar that shows `desc` and the time taken, for work whose progress cannot
    be measured from outside (ingest parses a whole file in one call)."""
    stream = stream or sys.stdout
    if not bars_wanted(stream):
        yield
        return
    with tqdm(total=1, desc=desc, file=stream, leave=False, dynamic_ncols=True,
              bar_format="{desc}: {elapsed}") as bar, logging_redirect_tqdm([log]):
        yield
        bar.update(1)


def shown(desc: str, fn: Callable, *args, **kwargs):
    """Call fn(*args, **kwargs) inside `activity(desc)`; returns its result."""
    with activity(desc):
        return fn(*args, **kwargs)

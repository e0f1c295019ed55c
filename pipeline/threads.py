"""The CPU cores, BLAS's threads on them, and jobs run side by side on threads.

OpenBLAS splits each matrix product over its threads, and their number changes
the products' last bits (the sums are split differently), so a network trains to
the same weights only with the same number of BLAS threads. Everything here keeps
that number a function of the machine, never of timing. threadpoolctl sets it;
without threadpoolctl (an environment from before it was required) nothing is
limited and nothing runs side by side.
"""
from __future__ import annotations

import contextlib
import os
import threading
from typing import Callable, Iterator


def cores() -> int:
    """The CPU cores this process may run on."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def blas() -> int | None:
    """The threads BLAS uses now, or None when threadpoolctl is missing."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return None
    return max([pool["num_threads"] for pool in threadpool_info()
                if pool["user_api"] == "blas"], default=1)


def beside_feed(threads: int) -> int:
    """BLAS threads while a feed thread works: one core fewer, never more than now.
    A cap, never a raise, so OPENBLAS_NUM_THREADS=1 or a caller's limit stays."""
    return max(1, min(threads, cores() - 1))


@contextlib.contextmanager
def blas_limit(threads: int) -> Iterator[None]:
    """BLAS uses at most `threads` threads inside (no-op without threadpoolctl)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        yield
        return
    with threadpool_limits(threads, user_api="blas"):
        yield


class Stopped(Exception):
    """Raised by a job that saw `stop` set: another job failed or was interrupted."""


def together(jobs: list[Callable[[threading.Event], None]]) -> None:
    """Run each job on a thread of its own, passing all of them one `stop` event,
    and wait for all. The first error (or Ctrl-C) sets `stop`: each job should then
    raise Stopped at its next chance (train's jobs do at their next epoch's end).
    Once all have ended, that first error is raised here."""
    errors: list[BaseException] = []
    stop = threading.Event()

    def guarded(job: Callable[[threading.Event], None]) -> None:
        try:
            job(stop)
        except Stopped:
            pass
        except BaseException as exc:            # re-raised in the calling thread
            errors.append(exc)
            stop.set()

    threads = [threading.Thread(target=guarded, args=(job,), name=f"job-{i}", daemon=True)
               for i, job in enumerate(jobs)]
    for thread in threads:
        thread.start()
    try:
        for thread in threads:
            while thread.is_alive():
                thread.join(0.25)           # in short waits, so Ctrl-C is seen at once
    except BaseException:
        stop.set()
        for thread in threads:
            thread.join()
        raise
    if errors:
        raise errors[0]

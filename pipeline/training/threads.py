"""The CPU cores, BLAS's threads on them, and jobs run side by side on threads.

OpenBLAS splits each matrix product over its threads, and their number changes
the products' last bits (the sums are split differently), so a network trains to
the same weights only with the same number of BLAS threads. Everything here keeps
that number a function of the machine, never of timing. threadpoolctl reads and
sets it; without threadpoolctl (an environment from before it was required)
nothing is limited and nothing runs side by side.
"""
from __future__ import annotations

import contextlib
import logging
import os
import threading
from typing import Callable, Iterator

log = logging.getLogger(__name__)


def cores() -> int:
    """The CPU cores this process may run on."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def _blas_pools() -> list[dict]:
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return []
    return [pool for pool in threadpool_info() if pool["user_api"] == "blas"]


def blas_threads() -> int | None:
    """The threads BLAS uses now, or None when threadpoolctl is missing or finds
    no BLAS it knows."""
    pools = _blas_pools()
    return max(pool["num_threads"] for pool in pools) if pools else None


def limit_is_global() -> bool:
    """Whether a BLAS limit set in one thread holds in every thread, as it does for
    OpenBLAS's own pthreads pool (NumPy's wheels). An OpenMP pool keeps a count for
    each thread, so a limit set here would not reach threads started later."""
    pools = _blas_pools()
    return bool(pools) and all(pool.get("threading_layer") == "pthreads" for pool in pools)


def beside_feed(n: int) -> int:
    """BLAS threads while a feed thread works: one core fewer, never more than n.
    A cap, never a raise, so OPENBLAS_NUM_THREADS=1 or a caller's limit stays."""
    return max(1, min(n, cores() - 1))


@contextlib.contextmanager
def blas_limit(n: int) -> Iterator[None]:
    """BLAS uses n threads inside (no-op without threadpoolctl)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        yield
        return
    with threadpool_limits(n, user_api="blas"):
        yield


class Stopped(Exception):
    """Raised by a job that saw `stop` set: another job failed or was interrupted."""


def together(jobs: list[Callable[[threading.Event], None]], stopping: str = "") -> None:
    """Run each job on a thread of its own, passing all of them one `stop` event,
    and wait for all. The first error or Ctrl-C sets `stop`: each job should then
    raise Stopped at its next chance, and the wait goes on until all have (a second
    Ctrl-C does not cut it short, so no job dies halfway through writing a file).
    `stopping` is logged then. Once all have ended, that first error is raised."""
    errors: list[BaseException] = []
    stop = threading.Event()

    def guarded(job: Callable[[threading.Event], None], began: threading.Event,
                ended: threading.Event) -> None:
        began.set()
        try:
            job(stop)
        except Stopped:
            pass
        except BaseException as exc:            # re-raised in the calling thread
            errors.append(exc)
            stop.set()
        finally:
            ended.set()

    # [began, ended, start returned] of each job started. Not Thread.join: a Ctrl-C
    # that lands in join can mark a thread that still runs as ended (CPython issue
    # 90882, seen here on 3.11 in about one Ctrl-C of 150), and the wait after it
    # then skipped it.
    started: list[list] = []

    def wait() -> None:
        for began, ended, returned in started:
            # A start that Ctrl-C cut short may not have launched its thread; one
            # that did sets `began` at once.
            if returned or began.wait(5):
                while not ended.wait(0.25):     # short waits, so Ctrl-C is seen at once
                    pass

    try:
        for i, job in enumerate(jobs):
            started.append([threading.Event(), threading.Event(), False])
            threading.Thread(target=guarded, args=(job, *started[-1][:2]), name=f"job-{i}",
                             daemon=True).start()
            started[-1][2] = True
        wait()
    except BaseException:                   # Ctrl-C (KeyboardInterrupt) in this thread
        stop.set()
        if stopping:
            log.warning("%s", stopping)
        while True:
            try:
                wait()
                break
            except KeyboardInterrupt:
                log.warning("still stopping: the threads end at their next chance")
        for exc in errors:
            log.warning("and a thread failed: %s", exc)
        raise
    if errors:
        raise errors[0]

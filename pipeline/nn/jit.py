"""Loops compiled by numba, for the few places where NumPy's whole-array passes cost
more than the arithmetic: RMSprop's step (pipeline/optim.py) and shifting a batch of
images as it is taken (pipeline/augment.py). No I/O.

Each loop has a NumPy twin that gives the same bits, and runs wherever numba is
missing or cannot compile it: `compile` then returns None.
"""
from __future__ import annotations

import os
import warnings
from typing import Callable

# With colorama installed (DVC brings it), numba colours its messages and resets the
# terminal at exit; its messages are quoted in the pipeline's, which are plain text.
os.environ.setdefault("NUMBA_DISABLE_ERROR_MESSAGE_HIGHLIGHTING", "1")


def compile(loop: Callable, example: tuple, what: str) -> Callable | None:
    """`loop` compiled by numba and called once on `example` (so that it compiles, or
    loads from the cache, now rather than in an epoch), or None.

    numba is imported here, on first use: its import is slow, and only training
    needs it. Compiled once per machine and kept in __pycache__ (or numba's cache
    folder; with neither writable, compiled once per run). NUMBA_DISABLE_JIT would
    run the loop in Python, far slower than NumPy, so it gives None; any other
    failure is a RuntimeWarning naming `what`, and None.
    `error_model="numpy"`: a division by zero gives inf as NumPy's does, rather than
    raise, which also lets LLVM vectorise. Without fastmath every rounding is kept
    (no fused multiply-adds), so the bits match NumPy's. nogil: ensemble members
    train side by side in threads.
    """
    try:
        import numba
    except ImportError:
        return None
    except Exception as exc:                # a broken install: llvmlite raises OSError
        return _numpy_instead(what, exc)
    if numba.config.DISABLE_JIT:
        return None
    options = dict(nogil=True, error_model="numpy")
    try:
        try:
            compiled = numba.njit(cache=True, **options)(loop)
        except RuntimeError:                # no writable cache folder: compile each run
            compiled = numba.njit(**options)(loop)
        compiled(*example)
    except Exception as exc:
        return _numpy_instead(what, exc)
    return compiled


def _numpy_instead(what: str, exc: Exception) -> None:
    warnings.warn(f"numba could not compile {what}, so NumPy's version runs instead: {exc}",
                  RuntimeWarning, stacklevel=4)

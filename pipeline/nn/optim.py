"""RMSprop (Tieleman and Hinton, 2012), owning its state. No I/O.

The step is written twice: in NumPy (`RMSprop.step_numpy`, the definition, read it
first) and as one loop (`_step_loop`, compiled by numba through pipeline/jit.py) that
does the same float32 operations in the same order, so both give the same bits
(tests/nn/test_optim.py). NumPy makes nine passes over the parameters; the loop makes
one (docs/speed.md measures what that saves).
"""
from __future__ import annotations

import functools

import numpy as np

from pipeline.nn import jit

TINY = np.finfo(np.float32).tiny    # 1.18e-38, the smallest normal float32
FLUSH_EVERY = 32                    # steps between flushes of subnormal values


def count_subnormal(a: np.ndarray) -> int:
    """How many entries of `a` are subnormal: nonzero and below TINY in size."""
    return int(np.count_nonzero((np.abs(a) < TINY) & (a != 0)))


def flush_subnormals_(a: np.ndarray) -> None:
    """Set the subnormal entries of `a` to zero, in place."""
    a[np.abs(a) < TINY] = 0


class RMSprop:
    """Per element: s = decay*s + (1-decay)*g**2;  p -= lr * g / (sqrt(s) + eps).

    eps sits outside the square root, as in PyTorch. `lr` may be changed between
    steps (a schedule does that). With l2, l2 * p is first added to `grads` for the
    first `penalised` values (all by default; in training the weights, which
    `network.pack` puts first): the L2 term's gradient, added where the step reads p
    anyway rather than in a pass of its own (PyTorch's weight_decay).

    `params` and `grads` are arrays of one shape: the buffers of `network.pack`
    update every parameter with one NumPy call per operation. Updates are in place,
    through one scratch buffer, so a step allocates nothing but the flush's mask,
    every FLUSH_EVERY steps.

    No value is left subnormal: every FLUSH_EVERY steps, and on `flush`, subnormal
    weights and averages are set to exactly zero (a weight whose only gradient is
    its L2 term sinks into that range and stays there; docs/speed.md, Subnormal
    floats, says why that matters and what it costs). Deterministic, unlike a CPU's
    flush-to-zero mode: the same on every CPU and in every thread.
    """

    def __init__(self, params: np.ndarray, lr: float, decay: float = 0.9, eps: float = 1e-8,
                 flush_every: int = FLUSH_EVERY, l2: float = 0.0, penalised: int | None = None):
        self.lr, self.decay, self.eps = lr, decay, eps
        self.l2, self.penalised = l2, params.size if penalised is None else penalised
        self.flush_every = flush_every
        self.steps = 0
        self.mean_sq = np.zeros_like(params)
        self._scratch = np.empty_like(params)

    def step(self, params: np.ndarray, grads: np.ndarray) -> None:
        """Update `params` in place from `grads`: the compiled loop when it applies
        (float32, contiguous, numba importable), else `step_numpy`."""
        kernel = _fused_step()
        if kernel is None or not _fusable(params, grads, self.mean_sq):
            self.step_numpy(params, grads)
            return
        # The NumPy ufuncs cast these Python floats to float32 (NEP 50); so does this.
        kernel(params.reshape(-1), grads.reshape(-1), self.mean_sq.reshape(-1),
               np.float32(self.lr), np.float32(1.0 - self.decay), np.float32(self.eps),
               np.float32(self.l2), self.penalised if self.l2 else 0)
        self._count_step(params)

    def step_numpy(self, params: np.ndarray, grads: np.ndarray) -> None:
        """`step` in NumPy: one whole-array operation at a time, through a scratch buffer."""
        g, s, t = grads, self.mean_sq, self._scratch
        if self.l2:
            w = slice(0, self.penalised)
            np.multiply(params[w], self.l2, out=t[w])
            g[w] += t[w]                 # l2 * p, as network.backward adds it
        np.multiply(g, g, out=t)
        t -= s
        t *= 1.0 - self.decay
        s += t                           # s += (1-decay)(g**2 - s), the running average
        np.sqrt(s, out=t)
        t += self.eps
        np.divide(g, t, out=t)
        t *= self.lr
        params -= t
        self._count_step(params)

    def _count_step(self, params: np.ndarray) -> None:
        self.steps += 1
        if self.flush_every and self.steps % self.flush_every == 0:
            self.flush(params)

    def flush(self, params: np.ndarray) -> None:
        """Set subnormal values of `params` and of the running average to zero."""
        flush_subnormals_(params)
        flush_subnormals_(self.mean_sq)


def _fusable(*arrays: np.ndarray) -> bool:
    """Whether the compiled step can update these in place: float32, C-contiguous, one shape."""
    return all(a.dtype == np.float32 and a.flags.c_contiguous and a.shape == arrays[0].shape
               for a in arrays)


def _step_loop(p, g, s, lr, one_minus_decay, eps, l2, penalised):   # (P,) float32, in place
    """`RMSprop.step_numpy` as one loop over the values, for numba to compile."""
    for i in range(p.size):
        gi = g[i]
        if i < penalised:
            gi += l2 * p[i]                                  # L2's gradient
            g[i] = gi                                        # as step_numpy leaves it
        t = gi * gi
        t -= s[i]
        t *= one_minus_decay
        si = s[i] + t                                    # the running average
        s[i] = si
        p[i] -= gi / (np.sqrt(si) + eps) * lr


@functools.cache
def _fused_step():
    """`_step_loop` compiled (pipeline/jit.py), or None: then NumPy's step runs."""
    one = np.ones(1, np.float32)
    return jit.compile(_step_loop, (one.copy(), one.copy(), one.copy(), *one.repeat(4), 1),
                       "RMSprop's step")

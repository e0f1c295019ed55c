"""RMSprop (Tieleman and Hinton, 2012), owning its state. NumPy only, no I/O."""
from __future__ import annotations

import numpy as np

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
    steps (a schedule does that). `params` and `grads` are arrays of one shape:
    the buffers of `network.pack` update every parameter with one NumPy call per
    operation. Updates are in place, through one scratch buffer, so a step
    allocates nothing but the flush's mask, every FLUSH_EVERY steps.

    No value is left subnormal. A weight whose only gradient is its L2 term (one
    of a pixel that is blank in every training image) is pushed toward zero in
    steps of about lr, whatever the gradient's size, so it overshoots, shrinks
    into float32's subnormal range within a few hundred steps, and stays there:
    its L2 gradient is then too small to move it out. So does its running average.
    Intel cores run every operation on a subnormal about a hundred times slower
    (AMD's barely slow down), and the matrix products read every weight. So every FLUSH_EVERY steps,
    and on `flush`, subnormal weights and averages are set to exactly zero, where
    an unused weight then stays: what a CPU's flush-to-zero mode does, but
    deterministic, the same on every CPU and in every thread, for one masked pass
    every FLUSH_EVERY steps (a few microseconds a step).
    """

    def __init__(self, params: np.ndarray, lr: float, decay: float = 0.9, eps: float = 1e-8,
                 flush_every: int = FLUSH_EVERY):
        self.lr, self.decay, self.eps = lr, decay, eps
        self.flush_every = flush_every
        self.steps = 0
        self.mean_sq = np.zeros_like(params)
        self._scratch = np.empty_like(params)

    def step(self, params: np.ndarray, grads: np.ndarray) -> None:
        """Update `params` in place from `grads`."""
        g, s, t = grads, self.mean_sq, self._scratch
        np.multiply(g, g, out=t)
        t -= s
        t *= 1.0 - self.decay
        s += t                           # s += (1-decay)(g**2 - s), the running average
        np.sqrt(s, out=t)
        t += self.eps
        np.divide(g, t, out=t)
        t *= self.lr
        params -= t
        self.steps += 1
        if self.flush_every and self.steps % self.flush_every == 0:
            self.flush(params)

    def flush(self, params: np.ndarray) -> None:
        """Set subnormal values of `params` and of the running average to zero."""
        flush_subnormals_(params)
        flush_subnormals_(self.mean_sq)

"""RMSprop (Tieleman and Hinton, 2012), owning its state. NumPy only, no I/O."""
from __future__ import annotations

import numpy as np


class RMSprop:
    """Per element: s = decay*s + (1-decay)*g**2;  p -= lr * g / (sqrt(s) + eps).

    eps sits outside the square root, as in PyTorch. `lr` may be changed between
    steps (a schedule does that). Updates are in place, through one scratch buffer
    per parameter, so a step allocates nothing.
    """

    def __init__(self, params: dict[str, np.ndarray], lr: float, decay: float = 0.9,
                 eps: float = 1e-8):
        self.lr, self.decay, self.eps = lr, decay, eps
        self.mean_sq = {k: np.zeros_like(p) for k, p in params.items()}
        self._scratch = {k: np.empty_like(p) for k, p in params.items()}

    def step(self, params: dict[str, np.ndarray], grads: dict[str, np.ndarray]) -> None:
        """Update every array in `params` in place from the matching `grads`."""
        for name, p in params.items():
            g, s, t = grads[name], self.mean_sq[name], self._scratch[name]
            np.multiply(g, g, out=t)
            t -= s
            t *= 1.0 - self.decay
            s += t                       # s += (1-decay)(g**2 - s), the running average
            np.sqrt(s, out=t)
            t += self.eps
            np.divide(g, t, out=t)
            t *= self.lr
            p -= t

"""Learning-rate schedules: the step size as a function of training progress. No I/O.

Progress `t` is counted in epochs and is fractional inside an epoch (t = 2.5 is half
way through the third epoch), so the rate changes smoothly from batch to batch.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, get_args

Kind = Literal["constant", "step", "cosine"]
KINDS: tuple[str, ...] = get_args(Kind)


@dataclass(frozen=True)
class Schedule:
    """The learning rate at progress t in [0, epochs].

    constant: lr throughout.
    step:     lr * step_gamma ** floor(t / step_epochs).
    cosine:   from lr at t = 0 down to lr_min at t = epochs along half a cosine
              (Loshchilov and Hutter, 2017, without restarts).
    """

    kind: Kind
    lr: float
    epochs: int
    lr_min: float = 0.0
    step_epochs: int = 1
    step_gamma: float = 1.0

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"unknown schedule {self.kind!r}: expected one of {', '.join(KINDS)}")

    def __call__(self, t: float) -> float:
        if self.kind == "step":
            return self.lr * self.step_gamma ** math.floor(t / self.step_epochs)
        if self.kind == "cosine":
            done = min(max(t / self.epochs, 0.0), 1.0)
            return self.lr_min + 0.5 * (self.lr - self.lr_min) * (1.0 + math.cos(math.pi * done))
        return self.lr

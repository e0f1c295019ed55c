"""Ensemble members trained one at a time and side by side."""
from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import numpy as np

from pipeline.bench.machine import PAUSE
from pipeline.bench.table import row
from pipeline.config.sections import Train
from pipeline.training import members as training_members
from pipeline.training.threads import cores


def time_members(X: np.ndarray, y: np.ndarray, X_val: np.ndarray, y_val: np.ndarray,
                 best: Train, workdir: Path, rounds: int = 2, epochs: int = 8) -> None:
    """Time two of `best`'s members trained one at a time and side by side
    (`training.members.side_by_side`), by turns, as the train step trains them."""
    at_once, each = training_members.side_by_side(best)
    if at_once < 2:
        row("ensemble members side by side", "not here",
            f"side_by_side trains them one at a time here ({each} BLAS thread(s) of "
            f"{cores()} cores for one network)")
        return
    cfg = dataclasses.replace(best, epochs=epochs, members=2)
    times: dict[tuple, list[float]] = {(1, each): [], (2, each): []}
    for r in range(rounds):
        for side in times:
            started = time.perf_counter()
            saved_at = workdir / f"members-{r}-{side[0]}.npz"      # no resuming
            training_members.train_networks(X, y, X_val, y_val, r, 2, cfg, saved_at, "bench",
                                            parallel=side)
            times[side].append(time.perf_counter() - started)
            time.sleep(PAUSE)
    alone, beside = min(times[(1, each)]), min(times[(2, each)])
    row("ensemble members side by side", f"{beside / alone:.2f}x one at a time",
        f"2 of params-best.yaml's members, {epochs} epochs each: {alone:.1f} s one at a "
        f"time, {beside:.1f} s side by side ({each} BLAS thread(s) each); best of {rounds}")

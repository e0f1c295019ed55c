"""What distorting the training images costs: alone on one core, added to `fit.fit`'s
epochs, and over a long distorted run."""
from __future__ import annotations

import dataclasses
import time

import numpy as np

from pipeline.bench.machine import PAUSE
from pipeline.bench.table import row
from pipeline.config.sections import Train
from pipeline.training import feed, fit
from pipeline.training.augment import Augmenter


def distorted(cfg: Train, like: Train) -> Train:
    """cfg with the distortions of `like` (its augment_* and elastic_* fields)."""
    return dataclasses.replace(cfg, **{f.name: getattr(like, f.name)
                                       for f in dataclasses.fields(like)
                                       if f.name.startswith(("augment_", "elastic_"))})


def augment_epoch(X: np.ndarray, distort: Augmenter, rng: np.random.Generator,
                  out: np.ndarray, batch: int) -> float:
    """Seconds for an epoch's augmentation on one core, by itself: the shuffled copy
    of the rows and their distortion, as fit makes them (shifts made in line: batch
    by batch, as they are taken)."""
    started = time.perf_counter()
    order = rng.permutation(len(X))
    if feed.per_batch(distort):
        shifts = distort.draw_shifts(len(X), rng)
        for start in range(0, len(X), batch):
            rows = order[start:start + batch]
            distort.take(X, rows, shifts[:, start:start + batch], out[:len(rows)])
    else:
        np.take(X, order, axis=0, out=out)
        distort(out, rng, out=out)
    return time.perf_counter() - started


def time_drift(X: np.ndarray, y: np.ndarray, X_val: np.ndarray, y_val: np.ndarray, hp: Train,
               epochs: int, window: int = 5) -> None:
    """Train `epochs` epochs distorted as `hp` says and compare the first ones with the
    last: an epoch that slows down as training goes on, as subnormal weights made
    them on Intel (docs/speed.md), shows here."""
    seconds = []
    fit.fit(X, y, X_val, y_val, dataclasses.replace(hp, epochs=epochs),
              rng=np.random.default_rng(5), on_epoch=lambda r: seconds.append(r["seconds"]))
    window = max(1, min(window, epochs // 2))
    first, last = min(seconds[:window]), min(seconds[-window:])
    row(f"distorted epochs, first / last of {epochs}", f"{first:.3f} s / {last:.3f} s",
        f"params-best.yaml distortions; best of the first and of the last {window}; "
        f"last / first {last / first:.2f}x; target <= 1.2x")


def time_augmented(X: np.ndarray, y: np.ndarray, X_val: np.ndarray, y_val: np.ndarray,
                   hp: Train, likes: dict[str, Train], alone: dict[str, list[float]],
                   rounds: int, epochs: int = 3) -> None:
    """Print what each distortion of `likes` adds to a `fit.fit` epoch, as the
    pipeline trains: fit makes each epoch's images ahead on a second thread
    (pipeline/training/feed.py), so the cost is what that does not hide, or shifts
    alone batch by batch as it takes them. Short fits, plain and distorted by turns,
    so that load hits them alike; the first epoch of each (made before training
    starts, nothing to hide it) is left out. `alone` holds the seconds of each
    distortion on one core by itself, for the detail."""
    cfgs = {"plain": hp, **{name: distorted(hp, like) for name, like in likes.items()}}
    times: dict[str, list[float]] = {name: [] for name in cfgs}
    for r in range(rounds):
        for name, cfg in cfgs.items():
            _, history = fit.fit(X, y, X_val, y_val, dataclasses.replace(cfg, epochs=epochs),
                                   rng=np.random.default_rng([6, r]))
            times[name] += [h["seconds"] for h in history[1:]]
            time.sleep(PAUSE)
    plain_s = min(times["plain"])
    for (name, target) in zip(likes, ("0.25x", "0.5x", "0.5x")):
        added = min(times[name]) - plain_s
        row(f"{name}, s/epoch added", f"{added:.3f} s",
            f"{added / plain_s:.2f}x a plain epoch ({plain_s:.3f} s), target <= {target}; "
            f"fit's epochs, best of {len(times[name])}, distorted {min(times[name]):.3f} s, "
            f"median {np.median(times[name]):.3f} s; the distortion alone on one core "
            f"{min(alone[name]):.3f} s")

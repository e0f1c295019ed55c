"""Training checkpoints: where the train stage stands after each epoch, so that a
run stopped by Ctrl-C, a kill or a power cut goes on from its last complete epoch
and ends with the same model, bit for bit, as a run never stopped.

One file, written atomically at the end of every epoch and deleted once the stage's
outputs are recorded (by the runner: `Step.scratch`). It is only used by a run with
the same key: the same settings, the same input files and the same code, as loaded
by this process.
"""
from __future__ import annotations

import hashlib
import io
import json
import logging
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline import artifacts, sources

log = logging.getLogger(__name__)


@dataclass
class Progress:
    """Where `fit` stands at the end of an epoch: all it needs to go on exactly as
    if it had never stopped (same seed, same steps, same weights to the last bit)."""

    epoch: int                          # epochs completed
    flat: np.ndarray                    # (P,) the parameters, in network.pack's order
    mean_sq: np.ndarray                 # (P,) RMSprop's running average
    steps: int                          # RMSprop's steps (they time its flushes)
    rng: dict                           # the random generator's bit_generator.state
    history: list[dict]
    best: np.ndarray | None             # (P,) the best epoch's parameters, for keep_best
    since_best: int                     # epochs since the best one, for patience
    epoch_seed: int                     # seeds each epoch's order and distortions (feed.py)


def key(settings: dict, inputs: dict[str, Path]) -> str:
    """SHA-256 of the stage's settings, its input files' contents and the package's
    source as this process loaded it (any edit makes old checkpoints unusable)."""
    h = hashlib.sha256(json.dumps(settings, sort_keys=True).encode())
    for name in sorted(inputs):
        h.update(f"{name}={artifacts.file_hash(inputs[name])}".encode())
    for module in sorted(sources.LOADED):
        h.update(hashlib.sha256(sources.LOADED[module]).digest())
    return h.hexdigest()


def save(path: Path, stamp: str, done: list[tuple[np.ndarray, list[dict]]],
         current: Progress) -> None:
    """Write the finished members (their packed parameters and history) and the
    one in training, atomically and at once (not with the stage's outputs)."""
    arrays = {f"done_{i}": flat for i, (flat, _) in enumerate(done)}
    arrays.update(flat=current.flat, mean_sq=current.mean_sq)
    if current.best is not None:
        arrays["best"] = current.best
    meta = {"key": stamp, "done_history": [rows for _, rows in done], "epoch": current.epoch,
            "steps": current.steps, "rng": current.rng, "history": current.history,
            "since_best": current.since_best, "epoch_seed": current.epoch_seed}
    buf = io.BytesIO()
    np.savez(buf, meta=np.array(json.dumps(meta)), **arrays)
    artifacts.write_bytes(path, buf.getvalue(), together=False)


def load(path: Path, stamp: str) -> tuple[list[tuple[np.ndarray, list[dict]]], Progress] | None:
    """(finished members, the member in training) from a checkpoint with this key,
    or None when there is none, it has another key, or it cannot be read."""
    try:
        with np.load(path, allow_pickle=False) as data:
            meta = json.loads(str(data["meta"]))
            if meta.get("key") != stamp:
                return None
            done = [(data[f"done_{i}"], rows) for i, rows in enumerate(meta["done_history"])]
            current = Progress(meta["epoch"], data["flat"], data["mean_sq"], meta["steps"],
                               meta["rng"], meta["history"],
                               data["best"] if "best" in data else None, meta["since_best"],
                               meta["epoch_seed"])
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError, zipfile.BadZipFile) as exc:
        log.warning("%s: unreadable checkpoint (%s); training starts afresh", path, exc)
        return None
    return done, current


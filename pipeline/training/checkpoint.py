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
class Snapshot:
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


def save(path: Path, stamp: str, done: dict[int, tuple[np.ndarray, list[dict]]],
         training: dict[int, Snapshot]) -> None:
    """Write the finished members (member: its packed parameters and history) and
    those in training (member: where it stands), atomically and at once (not with
    the stage's outputs)."""
    arrays = {f"done_{k}": flat for k, (flat, _) in done.items()}
    for k, now in training.items():
        arrays.update({f"flat_{k}": now.flat, f"mean_sq_{k}": now.mean_sq})
        if now.best is not None:
            arrays[f"best_{k}"] = now.best
    meta = {"key": stamp, "done": {str(k): rows for k, (_, rows) in done.items()},
            "training": {str(k): {"epoch": now.epoch, "steps": now.steps, "rng": now.rng,
                                  "history": now.history, "since_best": now.since_best,
                                  "epoch_seed": now.epoch_seed}
                         for k, now in training.items()}}
    buf = io.BytesIO()
    np.savez(buf, meta=np.array(json.dumps(meta)), **arrays)
    artifacts.write_bytes(path, buf.getvalue(), together=False)


def load(path: Path, stamp: str
         ) -> tuple[dict[int, tuple[np.ndarray, list[dict]]], dict[int, Snapshot]] | None:
    """(finished members, members in training), as `save` takes them, from a
    checkpoint with this key, or None when there is none, it has another key, or it
    cannot be read."""
    try:
        with np.load(path, allow_pickle=False) as data:
            meta = json.loads(str(data["meta"]))
            if meta.get("key") != stamp:
                return None
            done = {int(k): (data[f"done_{k}"], rows) for k, rows in meta["done"].items()}
            training = {int(k): Snapshot(m["epoch"], data[f"flat_{k}"], data[f"mean_sq_{k}"],
                                         m["steps"], m["rng"], m["history"],
                                         data[f"best_{k}"] if f"best_{k}" in data else None,
                                         m["since_best"], m["epoch_seed"])
                        for k, m in meta["training"].items()}
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError, zipfile.BadZipFile) as exc:
        log.warning("%s: unreadable checkpoint (%s); training starts afresh", path, exc)
        return None
    return done, training

"""Ensembles: several networks from different seeds, trained one at a time or side by
side on the cores, then optionally one more, the student, distilled from them. After
each epoch a checkpoint records where every member stands, so a stopped run goes on.
"""
from __future__ import annotations

import dataclasses
import functools
import logging
import threading
from pathlib import Path
from typing import Callable

import numpy as np

from pipeline import progress
from pipeline.config.sections import Train
from pipeline.nn import network
from pipeline.training import checkpoint, threads
from pipeline.training.feed import per_batch
from pipeline.training.fit import Teacher, augmenter, fit

log = logging.getLogger(__name__)


def side_by_side(cfg: Train) -> tuple[int, int]:
    """(how many members train at once, BLAS threads for each).

    A network that trains with distortions leaves a core to its feed, so BLAS gets
    `threads.beside_feed` threads. Members then train side by side, as many as the
    cores hold, each with that many BLAS threads and its distortions made in line:
    each member's weights are those it gets alone. They train one at a time without
    distortions, with shifts alone (made in line, BLAS keeps every core), when one
    network already has most cores, or when BLAS's threads cannot be set for every
    thread at once (no threadpoolctl, or an OpenMP BLAS).
    """
    blas = threads.blas_threads()
    distort = augmenter(cfg, 28)
    if (blas is None or not threads.limit_is_global() or not distort.active
            or per_batch(distort)):
        return 1, blas or 1
    each = threads.beside_feed(blas)
    return max(1, min(cfg.members, threads.cores() // each)), each


def soft_targets(nets: list[dict], temperature: float) -> Teacher:
    """The teacher for distillation: images (N, 784) -> the mean over `nets` of
    their outputs softened at `temperature`, (N, 10)."""
    def targets(X: np.ndarray) -> np.ndarray:
        return np.mean([network.soften(network.predict_proba(net, X), temperature)
                        for net in nets], axis=0, dtype=np.float32)
    return targets


def train_networks(X: np.ndarray, y: np.ndarray, X_val: np.ndarray, y_val: np.ndarray,
                   seed: int, networks: int, cfg: Train, saved_at: Path,
                   stamp: str, parallel: tuple[int, int] | None = None
                   ) -> tuple[list[dict], list[dict]]:
    """Train `networks` networks with `fit` and cfg on X (N, 784), y (N,), network k
    from the seed [seed, 2, k]. When there are more than cfg.members, the last is a
    student of the members (distilled at cfg.distill_temperature for
    cfg.distill_epochs epochs, or cfg.epochs when that is 0). `parallel`: (how many
    at once, BLAS threads each), by default `side_by_side(cfg)`. The checkpoint at
    `saved_at`, with key `stamp`, is updated after every epoch and resumed from.

    Returns (the params of each network, the history rows of all, each with its
    `member`)."""
    done, training = checkpoint.load(saved_at, stamp) or ({}, {})
    for k, state in sorted(training.items()):
        log.info("train: resuming from the checkpoint after epoch %d of member %d",
                 state.epoch, k + 1)
    student = dataclasses.replace(cfg, epochs=cfg.distill_epochs or cfg.epochs)
    total = cfg.epochs * min(networks, cfg.members) + student.epochs * (networks > cfg.members)
    finished = (sum(len(rows) for _, rows in done.values())
                + sum(state.epoch for state in training.values()))
    shapes = network.shapes(X.shape[1], cfg.hidden, 10)
    at_once, each = parallel or side_by_side(cfg)
    waiting = [k for k in range(min(networks, cfg.members)) if k not in done]
    # A bar on a terminal, else log lines; closed even when training fails.
    with progress.Epochs(cfg.epochs, networks, total=total, done=finished) as shown:
        team = Members((X, y, X_val, y_val), seed, networks, cfg, student, shown,
                       checkpointed=(saved_at, stamp, done, training))
        for group in (waiting[i:i + at_once] for i in range(0, len(waiting), at_once)):
            if len(group) == 1:
                team.train(group[0])
            else:
                # Each member makes its own distortions: the other cores train the others.
                with threads.blas_limit(each):
                    threads.together(
                        [functools.partial(team.train, k, ahead=False) for k in group],
                        stopping="train: stopping each member at the end of its epoch")
        if networks > cfg.members and cfg.members not in done:
            members = [network.views(done[k][0], shapes) for k in range(cfg.members)]
            team.train(cfg.members, teacher=soft_targets(members, cfg.distill_temperature))
    nets = [network.views(done[k][0], shapes) for k in range(networks)]
    return nets, [row for k in range(networks) for row in done[k][1]]


class Members:
    """Trains member k of an ensemble on the same data, from its own seed, sharing
    the progress display and the checkpoint with the others (under one lock, since
    members may train on threads side by side)."""

    def __init__(self, data: tuple[np.ndarray, ...], seed: int, networks: int, cfg: Train,
                 student: Train, shown: Callable[[dict], None], *, checkpointed: tuple):
        self.data, self.seed, self.networks = data, seed, networks
        self.cfg, self.student, self.shown = cfg, student, shown
        self.saved_at, self.stamp, self.done, self.training = checkpointed
        self.lock = threading.Lock()    # for the display, the checkpoint, done, training

    def train(self, k: int, stop: threading.Event | None = None, *,
              ahead: bool | None = None, teacher: Teacher | None = None) -> None:
        """Train member k (the student when k == cfg.members) and record it as done;
        with `stop` set, stop once the current epoch is saved (threads.Stopped)."""
        fitted = self.student if k == self.cfg.members else self.cfg

        def on_epoch(row: dict) -> None:
            with self.lock:
                row.update(member=k, members=self.networks, of=fitted.epochs)
                self.shown(row)

        def on_snapshot(state: checkpoint.Snapshot) -> None:
            self.save(k, state)
            if stop is not None and stop.is_set():      # this epoch is saved
                raise threads.Stopped

        # Overflow on the way to divergence would print NumPy warnings before fit's error.
        with np.errstate(over="ignore", invalid="ignore"):
            params, rows = fit(*self.data, fitted, rng=np.random.default_rng([self.seed, 2, k]),
                               on_epoch=on_epoch, resume=self.training.get(k),
                               on_snapshot=on_snapshot, teacher=teacher, ahead=ahead)
        with self.lock:
            self.done[k] = (network.pack(params)[0], rows)
            self.training.pop(k, None)

    def save(self, k: int, state: checkpoint.Snapshot) -> None:
        """Record member k's state in the checkpoint (a copy: fit's arrays change on)."""
        with self.lock:
            self.training[k] = dataclasses.replace(
                state, flat=state.flat.copy(), mean_sq=state.mean_sq.copy(),
                best=None if state.best is None else state.best.copy(),
                history=list(state.history))
            checkpoint.save(self.saved_at, self.stamp, self.done, self.training)

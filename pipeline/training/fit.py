"""The training loop for one network: minibatch RMSprop on the 784-H-10 network.

`fit` reads as the algorithm: for each epoch, shuffle (and distort), step through
the batches, check the loss, score the validation rows. The options (input dropout,
max-norm, distillation, keep_best and patience, checkpoints) live in the helpers
below it.
"""
from __future__ import annotations

import contextlib
import time
from typing import Callable

import numpy as np

from pipeline.config.sections import Train
from pipeline.errors import PipelineError
from pipeline.nn import metrics, network
from pipeline.nn.optim import RMSprop
from pipeline.nn.schedule import Schedule
from pipeline.training.augment import Augmenter
from pipeline.training.checkpoint import Snapshot
from pipeline.training.feed import choose_feed, epoch_rng

Teacher = Callable[[np.ndarray], np.ndarray]        # images (N, 784) -> soft targets (N, 10)


def fit(X: np.ndarray, y: np.ndarray, X_val: np.ndarray, y_val: np.ndarray, cfg: Train, *,
        rng: np.random.Generator, on_epoch: Callable[[dict], None] | None = None,
        resume: Snapshot | None = None,
        on_snapshot: Callable[[Snapshot], None] | None = None,
        teacher: Teacher | None = None,
        ahead: bool | None = None) -> tuple[dict, list[dict]]:
    """Train one network on X (N, 784) float32 with integer labels y (N,), scoring
    it on X_val, y_val after each epoch, as cfg (params.yaml's train section) says;
    members, all_rows, cv_folds and distill_epochs are read by the callers.

    on_epoch gets each epoch's history row; on_snapshot a Snapshot at the end of
    each epoch (its arrays are fit's own: copy them to keep them), and `resume` goes
    on from one. A `teacher` makes fit distil (network.loss says how). ahead:
    whether distortions may be made an epoch ahead on a thread of their own
    (`feed.choose_feed`); the weights are the same either way.

    Returns (params, history): one row per epoch with the keys of
    `steps.train.HISTORY_COLUMNS` but `step` and `member`, and `seconds`, its wall
    time. Raises PipelineError when training diverges (`check_loss`).
    """
    if teacher is not None and not cfg.distill_temperature:
        raise ValueError("fit: a teacher needs cfg.distill_temperature > 0")
    n, n_in = X.shape
    run = Training(n, n_in, cfg, rng, resume)
    augment = augmenter(cfg, int(round(np.sqrt(n_in))))
    augment = augment if augment.active else None
    # Soft targets (N, 10) in X's order without augmentation, else in each epoch's.
    targets = teacher(X) if teacher is not None and augment is None else None
    # With augmentation, a feed makes each epoch's shuffled, distorted copy (ahead, on
    # a core of its own, or batch by batch for shifts alone: pipeline/training/feed.py).
    feed = None if augment is None else choose_feed(X, augment, run.epoch_seed, ahead)
    with feed or contextlib.nullcontext():      # ends its thread however training ends
        for epoch in range(len(run.history) + 1, cfg.epochs + 1):
            if cfg.patience and run.since_best >= cfg.patience:
                break
            started = time.perf_counter()
            if feed is not None:
                # (N,): feed.rows(i, j) are X[order[i:j]], distorted
                order = feed.epoch(epoch, epoch + 1 if epoch < cfg.epochs else None)
                if teacher is not None:
                    targets = teacher(feed.rows(0, n))
            else:
                order = epoch_rng(run.epoch_seed, epoch).permutation(n)
            epoch_lr = run.rate(epoch - 1)
            ce_sum, correct = run.epoch(X, y, order, feed, targets, epoch, rng)
            loss = run.check_loss(ce_sum / n, epoch)
            val_probs = network.predict_proba(run.params, X_val)
            row = {"epoch": epoch, "loss": loss, "train_accuracy": correct / n,
                   "val_loss": network.cross_entropy(val_probs, y_val),
                   "val_accuracy": metrics.accuracy(val_probs, y_val),
                   "seconds": time.perf_counter() - started, "lr": epoch_lr}
            run.history.append(row)
            if on_epoch:
                on_epoch(row)
            run.track_best(epoch)
            if on_snapshot:
                on_snapshot(run.snapshot(epoch, rng))
    return run.result(n_in), run.history


class Training:
    """One network between epochs: its parameters and gradients (each one buffer
    (P,) with views by name, so RMSprop updates all in one call per operation), the
    optimiser, the rate schedule, the history and the best epoch so far."""

    def __init__(self, n: int, n_in: int, cfg: Train, rng: np.random.Generator,
                 resume: Snapshot | None):
        self.cfg = cfg
        self.flat, self.params = network.pack(network.init_params(rng, n_in, cfg.hidden, 10))
        self.flat_grads, self.grads = network.pack(self.params)
        # L2's gradient l2 * W is added by the step, which reads W anyway.
        self.opt = RMSprop(self.flat, lr=cfg.lr, decay=cfg.rms_decay, eps=cfg.eps, l2=cfg.l2,
                           penalised=network.penalised(self.params))
        self.start_loss = np.log(10) + network.l2_penalty(self.params, cfg.l2)  # untrained
        self.rate = Schedule(cfg.schedule, cfg.lr, cfg.epochs, cfg.lr_min, cfg.lr_step_epochs,
                             cfg.lr_step_gamma)
        # Each epoch's order (and distortions) come from a stream of its own, seeded
        # from rng once, so a feed can make them an epoch ahead on another thread.
        self.epoch_seed = int(rng.integers(2 ** 63))
        self.history: list[dict] = []
        self.best: np.ndarray | None = None             # (P,) for keep_best
        self.since_best = 0
        self.batch = np.empty((min(cfg.batch_size, n), n_in), np.float32)   # (B, 784)
        if resume is not None:
            self.resume(resume, rng)

    def resume(self, state: Snapshot, rng: np.random.Generator) -> None:
        """Go on from `state`, exactly as if training had never stopped."""
        self.flat[:], self.opt.mean_sq[:], self.opt.steps = state.flat, state.mean_sq, state.steps
        rng.bit_generator.state = state.rng
        self.history, self.since_best = list(state.history), state.since_best
        self.best = None if state.best is None else state.best.copy()
        self.epoch_seed = state.epoch_seed

    def epoch(self, X: np.ndarray, y: np.ndarray, order: np.ndarray, feed,
              targets: np.ndarray | None, epoch: int, rng: np.random.Generator
              ) -> tuple[float, int]:
        """One pass over the rows in `order` (N,), a step per batch; returns the sum
        of the batches' cross-entropies (each times its rows) and the rows right."""
        cfg, n = self.cfg, len(order)
        batches = -(-n // cfg.batch_size)
        ce_sum, correct = 0.0, 0
        for i, start in enumerate(range(0, n, cfg.batch_size)):
            idx = order[start:start + cfg.batch_size]
            if feed is not None:
                xb = feed.rows(start, start + cfg.batch_size)                  # (B, 784)
            else:
                # One small reused buffer: a copy of all of X each epoch costs more.
                xb = np.take(X, idx, axis=0, out=self.batch[:len(idx)])        # (B, 784)
            if cfg.input_dropout:
                dropout_(xb, cfg.input_dropout, rng)
            yb = y[idx]
            tb = None if targets is None else (
                targets[start:start + cfg.batch_size] if feed is not None else targets[idx])
            self.opt.lr = self.rate(epoch - 1 + i / batches)
            ce_sum, correct = self.step(xb, yb, tb, ce_sum, correct)
        self.opt.flush(self.flat)           # no subnormal weight is kept, seen or saved
        return ce_sum, correct

    def step(self, xb: np.ndarray, yb: np.ndarray, tb: np.ndarray | None,
             ce_sum: float, correct: int) -> tuple[float, int]:
        """Forward, backward and one RMSprop step on a batch xb (B, 784), yb (B,),
        with soft targets tb (B, 10) when distilling; returns the running sums."""
        cfg = self.cfg
        probs, h = network.forward(self.params, xb)
        ce_sum += network.cross_entropy(probs, yb) * len(yb)
        correct += metrics.n_correct(probs, yb)
        if tb is None:
            network.backward(self.params, xb, h, probs, yb, 0.0, self.grads)     # L2: opt
        else:
            network.backward(self.params, xb, h, probs, yb, 0.0, self.grads, tb,
                             cfg.distill_temperature, cfg.distill_weight)
        self.opt.step(self.flat, self.flat_grads)
        if cfg.max_norm:
            max_norm_(self.params, cfg.max_norm)
        return ce_sum, correct

    def check_loss(self, cross_entropy: float, epoch: int) -> float:
        """The epoch's loss (mean cross-entropy plus the L2 penalty now); raises
        PipelineError when training diverged. RMSprop's steps are bounded, so a far
        too large rate can leave the loss finite but useless: a cross-entropy above
        3 ln 10 (guessing uniformly is ln 10), or a loss a hundred times the
        untrained one, is divergence too."""
        loss = cross_entropy + network.l2_penalty(self.params, self.cfg.l2)
        finite = np.isfinite(loss) and all(np.isfinite(p).all() for p in self.params.values())
        if not finite or cross_entropy > 3 * np.log(10) or loss > 100 * self.start_loss:
            lr = self.cfg.lr
            raise PipelineError(
                f"training diverged at epoch {epoch}: the loss is {loss:.4g}. Try a smaller "
                f"learning rate than train.lr={lr:g} (e.g. --set train.lr={lr / 10:g}); "
                "nothing was written")
        return loss

    def track_best(self, epoch: int) -> None:
        """For keep_best and patience: note whether `epoch` is the best so far."""
        if not (self.cfg.keep_best or self.cfg.patience):
            return
        if best_epoch(self.history) == epoch:
            self.since_best = 0
            if self.cfg.keep_best:               # patience alone needs no copy
                self.best = self.flat.copy()
        else:
            self.since_best += 1

    def snapshot(self, epoch: int, rng: np.random.Generator) -> Snapshot:
        """Where training stands after `epoch` (arrays not copied)."""
        return Snapshot(epoch, self.flat, self.opt.mean_sq, self.opt.steps,
                        rng.bit_generator.state, self.history, self.best, self.since_best,
                        self.epoch_seed)

    def result(self, n_in: int) -> dict:
        """The parameters to keep: the best epoch's with keep_best, else the last."""
        if self.cfg.keep_best:
            return network.views(self.best, network.shapes(n_in, self.cfg.hidden, 10))
        return self.params


def augmenter(cfg: Train, side: int) -> Augmenter:
    """The distortions cfg's augment_* and elastic_* fields ask for, of images of
    `side` x `side` pixels (`active` is False when all are off)."""
    return Augmenter(side, cfg.augment_shift, cfg.augment_rotate, cfg.augment_scale,
                     cfg.augment_shear, cfg.elastic_alpha, cfg.elastic_sigma)


def dropout_(X: np.ndarray, rate: float, rng: np.random.Generator) -> np.ndarray:
    """Zero each entry of X with probability `rate`, in place, and scale the rest by
    1 / (1 - rate) so that the expected input is unchanged (inverted dropout)."""
    keep = rng.random(X.shape, dtype=np.float32) >= rate
    X *= keep
    X *= np.float32(1.0 / (1.0 - rate))
    return X


def max_norm_(params: dict, limit: float) -> None:
    """Scale down, in place, each hidden unit's incoming weights (a column of W1)
    whose Euclidean norm exceeds `limit` (Srivastava et al., 2014)."""
    W = params["W1"]
    norms = np.sqrt(np.einsum("ij,ij->j", W, W))               # (H,)
    W *= np.minimum(1.0, limit / np.maximum(norms, 1e-12)).astype(np.float32)


def best_epoch(history: list[dict]) -> int:
    """The epoch with the highest validation accuracy, the earliest on ties."""
    return max(history, key=lambda row: (row["val_accuracy"], -row["epoch"]))["epoch"]

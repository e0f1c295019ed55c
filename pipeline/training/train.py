"""Stage 3, train: minibatch RMSprop on the 784-H-10 network, or an ensemble of them.

`fit` is the loop for one network, on arrays; `run` is the stage around it, on
artifacts: it trains `members` networks from different seeds and saves them
stacked on a leading axis, so predict can average their softmax outputs.
"""
from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import threading
import time
from pathlib import Path
from typing import Callable

import numpy as np

from pipeline import artifacts, progress
from pipeline.config.sections import Train
from pipeline.errors import PipelineError
from pipeline.nn import metrics, network
from pipeline.nn.optim import RMSprop
from pipeline.nn.schedule import Schedule
from pipeline.training import checkpoint, threads
from pipeline.training.augment import Augmenter
from pipeline.training.checkpoint import Progress
from pipeline.training.feed import epoch_rng, feed_for, in_line

log = logging.getLogger(__name__)

# fit's rows also hold `seconds`, the epoch's wall time: it goes to timing.json, not to
# history.csv, because later steps read the history and must not rerun for a clock.
HISTORY_COLUMNS = ("epoch", "loss", "train_accuracy", "val_loss", "val_accuracy", "lr",
                   "member")


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


def augmenter(cfg: Train, side: int) -> Augmenter:
    """The distortions cfg's augment_* and elastic_* fields ask for, of images of
    `side` x `side` pixels (`active` is False when all are off)."""
    return Augmenter(side, cfg.augment_shift, cfg.augment_rotate, cfg.augment_scale,
                     cfg.augment_shear, cfg.elastic_alpha, cfg.elastic_sigma)


def fit(X: np.ndarray, y: np.ndarray, X_val: np.ndarray, y_val: np.ndarray, cfg: Train, *,
        rng: np.random.Generator, on_epoch: Callable[[dict], None] | None = None,
        resume: Progress | None = None,
        on_progress: Callable[[Progress], None] | None = None,
        teacher: Callable[[np.ndarray], np.ndarray] | None = None,
        feed_ahead: bool | None = None) -> tuple[dict, list[dict]]:
    """Train one network on X (N, 784) float32 with integer labels y (N,), as cfg
    says (params.yaml's train section; fit ignores members, all_rows, cv_folds and
    distill_epochs, which train.run and train_networks read):

    a hidden layer of cfg.hidden units, cfg.epochs epochs of shuffled batches of
    cfg.batch_size rows, RMSprop (lr, rms_decay, eps) on the cross-entropy plus the
    l2 penalty. The rate follows a `Schedule` (schedule, lr_min, lr_step_epochs,
    lr_step_gamma) from lr, batch by batch. augment_* and elastic_* distort the
    images afresh each epoch (`augmenter`); input_dropout drops input pixels;
    max_norm > 0 caps each hidden unit's incoming weight norm. keep_best returns the
    weights of `best_epoch(history)` instead of the last; patience > 0 stops once
    that many epochs pass without a better validation accuracy. on_progress gets
    a Progress at the end of each epoch (its arrays are fit's own: save them before
    returning); `resume` goes on from one. Only with a `teacher`, which maps images
    (N, 784) to soft targets (N, 10), does fit distil, at distill_temperature with
    distill_weight (network.loss says how); the teacher sees the same distorted
    images as the network. feed_ahead: whether distortions may be made an epoch
    ahead on a thread of their own (`Feed`'s `ahead`; `feed.feed_for` makes shifts
    alone in line instead while BLAS has every core): the weights are the same
    either way at the same BLAS thread count, but only a feed that works ahead caps
    BLAS's threads (to leave it a core); with False the caller sets them.

    Returns (params, history): history has one dict per epoch with the keys of
    HISTORY_COLUMNS but `member`, and `seconds`, the epoch's wall time. `loss` is
    the mean training cross-entropy with the labels over the epoch's batches plus
    the L2 penalty at the epoch's end; `lr` is the rate
    at the epoch's start. Raises PipelineError when the loss or the weights stop
    being finite, the cross-entropy exceeds 3 ln 10, or the loss grows a hundredfold.
    """
    if teacher is not None and not cfg.distill_temperature:
        raise ValueError("fit: a teacher needs cfg.distill_temperature > 0")
    n, n_in = X.shape
    # Parameters and gradients live in one buffer each (P,), so that RMSprop updates
    # them all with one NumPy call per operation; the dicts hold views of them.
    flat, params = network.pack(network.init_params(rng, n_in, cfg.hidden, 10))
    flat_grads, grads = network.pack(params)
    # L2's gradient l2 * W is added by the step, which reads W anyway: the same float32
    # operations as backward's, without its own pass and temporary (45 us a step).
    opt = RMSprop(flat, lr=cfg.lr, decay=cfg.rms_decay, eps=cfg.eps, l2=cfg.l2,
                  penalised=network.penalised(params))
    start_loss = np.log(10) + network.l2_penalty(params, cfg.l2)  # about the untrained loss
    rate = Schedule(cfg.schedule, cfg.lr, cfg.epochs, cfg.lr_min, cfg.lr_step_epochs,
                    cfg.lr_step_gamma)
    augment = augmenter(cfg, int(round(np.sqrt(n_in))))
    augment = augment if augment.active else None
    # Each epoch's order (and distortions) come from a stream of its own, seeded
    # from rng once, so a feed can make them an epoch ahead on another thread.
    epoch_seed = int(rng.integers(2 ** 63))
    batch = np.empty((min(cfg.batch_size, n), n_in), np.float32)    # (B, 784) reused
    batches = -(-n // cfg.batch_size)
    # Soft targets (N, 10) in X's order without augmentation, else in the epoch's.
    targets = teacher(X) if teacher is not None and augment is None else None
    history, best, since_best = [], None, 0
    if resume is not None:
        flat[:], opt.mean_sq[:], opt.steps = resume.flat, resume.mean_sq, resume.steps
        rng.bit_generator.state = resume.rng
        history, since_best = list(resume.history), resume.since_best
        best = None if resume.best is None else resume.best.copy()
        epoch_seed = resume.epoch_seed
    # Augmentation distorts a shuffled copy of the whole epoch, made an epoch ahead on
    # a core of its own when there are two or more (pipeline/feed.py), or, for shifts
    # alone, each batch as it is taken (feed_for says which). Without augmentation,
    # batches are gathered into one small buffer: copying all of X each epoch (and
    # page-faulting the copy in the first) cost 0.4-1.3 s more per default run.
    feed = None if augment is None else feed_for(X, augment, epoch_seed, feed_ahead)
    with feed or contextlib.nullcontext():      # ends its thread however training ends
        for epoch in range(len(history) + 1, cfg.epochs + 1):
            if cfg.patience and since_best >= cfg.patience:
                break
            start_time = time.perf_counter()
            if feed is not None:
                # (N,): feed.rows(i, j) are X[order[i:j]], distorted
                order = feed.epoch(epoch, epoch + 1 if epoch < cfg.epochs else None)
                if teacher is not None:
                    targets = teacher(feed.rows(0, n))
            else:
                order = epoch_rng(epoch_seed, epoch).permutation(n)
            ce_sum, correct = 0.0, 0
            epoch_lr = rate(epoch - 1)
            for i, start in enumerate(range(0, n, cfg.batch_size)):
                idx = order[start:start + cfg.batch_size]
                if augment is not None:
                    xb = feed.rows(start, start + cfg.batch_size)
                else:
                    xb = np.take(X, idx, axis=0, out=batch[:len(idx)])
                if cfg.input_dropout:
                    dropout_(xb, cfg.input_dropout, rng)
                yb = y[idx]
                opt.lr = rate(epoch - 1 + i / batches)
                probs, h = network.forward(params, xb)
                ce_sum += network.cross_entropy(probs, yb) * len(yb)
                correct += int((probs.argmax(axis=1) == yb).sum())
                if teacher is None:
                    network.backward(params, xb, h, probs, yb, 0.0, grads)     # L2: opt
                else:
                    tb = (targets[start:start + cfg.batch_size] if augment is not None
                          else targets[idx])
                    network.backward(params, xb, h, probs, yb, 0.0, grads, tb,
                                     cfg.distill_temperature, cfg.distill_weight)
                opt.step(flat, flat_grads)
                if cfg.max_norm:
                    max_norm_(params, cfg.max_norm)
            opt.flush(flat)                  # no subnormal weight is kept, seen or saved
            loss = ce_sum / n + network.l2_penalty(params, cfg.l2)
            # RMSprop's steps are bounded, so a far too large rate can leave the loss finite
            # but useless: a cross-entropy far above the ln 10 of guessing uniformly, or a
            # loss (with its L2 term) a hundred times the untrained one, is divergence too.
            finite = np.isfinite(loss) and all(np.isfinite(p).all() for p in params.values())
            if not finite or ce_sum / n > 3 * np.log(10) or loss > 100 * start_loss:
                raise PipelineError(
                    f"training diverged at epoch {epoch}: the loss is {loss:.4g}. Try a smaller "
                    f"learning rate than train.lr={cfg.lr:g} "
                    f"(e.g. --set train.lr={cfg.lr / 10:g}); nothing was written")
            val_probs = network.predict_proba(params, X_val)
            row = {
                "epoch": epoch,
                "loss": loss,
                "train_accuracy": correct / n,
                "val_loss": network.cross_entropy(val_probs, y_val),
                "val_accuracy": float((val_probs.argmax(axis=1) == y_val).mean()),
                "seconds": time.perf_counter() - start_time,
                "lr": epoch_lr,
            }
            history.append(row)
            if on_epoch:
                on_epoch(row)
            if cfg.keep_best or cfg.patience:
                if best_epoch(history) == epoch:
                    since_best = 0
                    if cfg.keep_best:               # patience alone needs no copy
                        best = flat.copy()
                else:
                    since_best += 1
            if on_progress:
                on_progress(Progress(epoch, flat, opt.mean_sq, opt.steps, rng.bit_generator.state,
                                     history, best, since_best, epoch_seed))
    if cfg.keep_best:
        params = network.views(best, network.shapes(n_in, cfg.hidden, 10))
    return params, history


def side_by_side(cfg: Train) -> tuple[int, int]:
    """(how many members train at once, BLAS threads for each).

    A network that trains with distortions leaves a core to its feed, so BLAS gets
    `threads.beside_feed` threads: one of two cores. Members then train side by side,
    as many as the cores hold, each with that many BLAS threads and its distortions
    made in line: each member's weights are those it gets alone (the same BLAS
    threads). Without distortions, with shifts made in line (no feed: BLAS has every
    core, `feed.in_line`), when one network already has most cores, or
    when BLAS's threads cannot be set for every thread at once (no threadpoolctl, or
    an OpenMP BLAS), they train one at a time.
    """
    blas = threads.blas_threads()
    distort = augmenter(cfg, 28)
    if (blas is None or not threads.limit_is_global() or not distort.active
            or in_line(distort)):
        return 1, blas or 1
    each = threads.beside_feed(blas)
    return max(1, min(cfg.members, threads.cores() // each)), each


def train_networks(X: np.ndarray, y: np.ndarray, X_val: np.ndarray, y_val: np.ndarray,
                   seed: int, networks: int, cfg: Train, saved_at: Path,
                   stamp: str, side: tuple[int, int] | None = None
                   ) -> tuple[list[dict], list[dict]]:
    """Train `networks` networks with `fit` and cfg, network k from the seed
    [seed, 2, k]; when there are more than cfg.members, the last is a student of
    the members (distilled at cfg.distill_temperature, for cfg.distill_epochs
    epochs, or cfg.epochs when that is 0). `side` says how members train: (how
    many at once, BLAS threads each), by default `side_by_side(cfg)`. After each
    epoch, the checkpoint at `saved_at` (key `stamp`) records where training
    stands, and a run stopped midway goes on from there. Returns (params of each,
    the history rows of all, each with its `member`)."""
    done, training = checkpoint.load(saved_at, stamp) or ({}, {})
    for k, state in sorted(training.items()):
        log.info("train: resuming from the checkpoint after epoch %d of member %d",
                 state.epoch, k + 1)
    student = dataclasses.replace(cfg, epochs=cfg.distill_epochs or cfg.epochs)
    total = cfg.epochs * min(networks, cfg.members) + student.epochs * (networks > cfg.members)
    finished = (sum(len(rows) for _, rows in done.values())
                + sum(state.epoch for state in training.values()))
    shapes = network.shapes(X.shape[1], cfg.hidden, 10)
    at_once, each = side or side_by_side(cfg)
    waiting = [k for k in range(min(networks, cfg.members)) if k not in done]
    lock = threading.Lock()         # for the bar, the checkpoint, `done` and `training`
    # A bar on a terminal, else log lines; closed even when training fails.
    with progress.Epochs(cfg.epochs, networks, total=total, done=finished) as shown:

        def train_one(k: int, stop: threading.Event | None = None, *,
                      ahead: bool | None = None, teacher: Callable | None = None) -> None:
            fitted = student if k == cfg.members else cfg

            def on_epoch(row: dict) -> None:
                with lock:
                    row.update(member=k, members=networks, of=fitted.epochs)
                    shown(row)

            def on_progress(state: checkpoint.Progress) -> None:
                with lock:              # fit's arrays change on: save a copy
                    training[k] = dataclasses.replace(
                        state, flat=state.flat.copy(), mean_sq=state.mean_sq.copy(),
                        best=None if state.best is None else state.best.copy(),
                        history=list(state.history))
                    checkpoint.save(saved_at, stamp, done, training)
                if stop is not None and stop.is_set():      # this epoch is saved
                    raise threads.Stopped

            # Overflow on the way to divergence would print NumPy warnings before fit's
            # error.
            with np.errstate(over="ignore", invalid="ignore"):
                params, rows = fit(X, y, X_val, y_val, fitted,
                                   rng=np.random.default_rng([seed, 2, k]),
                                   on_epoch=on_epoch, resume=training.get(k),
                                   on_progress=on_progress, teacher=teacher,
                                   feed_ahead=ahead)
            with lock:
                done[k] = (network.pack(params)[0], rows)
                training.pop(k, None)

        for group in (waiting[i:i + at_once] for i in range(0, len(waiting), at_once)):
            if len(group) == 1:
                train_one(group[0])
            else:
                # Each member makes its own distortions: the other cores train the others.
                with threads.blas_limit(each):
                    threads.together(
                        [functools.partial(train_one, k, ahead=False) for k in group],
                        stopping="train: stopping each member at the end of its epoch")
        if networks > cfg.members and cfg.members not in done:
            members = [network.views(done[k][0], shapes) for k in range(cfg.members)]
            train_one(cfg.members, teacher=soft_targets(members, cfg.distill_temperature))
    nets = [network.views(done[k][0], shapes) for k in range(networks)]
    return nets, [row for k in range(networks) for row in done[k][1]]


def cross_validation(X: np.ndarray, y: np.ndarray, k: int, seed: int, cfg: Train) -> dict:
    """`cross_validate` of one network trained by `fit` with cfg on all labelled
    rows X (N, 784), y (N,), fold i's network from the seed [seed, 3, i]. The folds
    train all the epochs: keep_best and patience would choose each fold's epoch on
    the rows it is scored on."""
    fold_cfg = dataclasses.replace(cfg, keep_best=False, patience=0)

    def train_one(i, X_fit, y_fit, X_held, y_held):
        with np.errstate(over="ignore", invalid="ignore"):
            params, _ = fit(X_fit, y_fit, X_held, y_held, fold_cfg,
                            rng=np.random.default_rng([seed, 3, i]))
        log.info("train: cross-validation, fold %d of %d trained", i + 1, k)
        return params

    cv = cross_validate(X, y, k, np.random.default_rng([seed, 3]), train_one)
    log.info("train: %d-fold cross-validation: %.2f%% +- %.2f (mean and standard deviation "
             "of the folds); %.2f%% over all %d rows (95%% interval %.2f-%.2f%%)", k,
             100 * cv["mean"], 100 * cv["std"], 100 * cv["accuracy"], cv["rows"],
             100 * cv["accuracy_ci95"]["low"], 100 * cv["accuracy_ci95"]["high"])
    return cv


def checkpoint_path(model: Path) -> Path:
    """Where training keeps its checkpoint: beside the model."""
    return Path(model).with_name("checkpoint.npz")


def soft_targets(nets: list[dict], temperature: float) -> Callable[[np.ndarray], np.ndarray]:
    """The teacher for distillation: images (N, 784) -> the mean over `nets` of
    their outputs softened at `temperature`, (N, 10)."""
    def targets(X: np.ndarray) -> np.ndarray:
        return np.mean([network.soften(network.predict_proba(net, X), temperature)
                        for net in nets], axis=0, dtype=np.float32)
    return targets


def stratified_folds(labels: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """The fold, 0 to k-1, of each row (N,): every class dealt round its folds in a
    random order, so each fold holds each class's count / k rows, give or take one."""
    fold = np.empty(len(labels), np.int64)
    start = 0                          # where the next class's dealing starts
    for cls in np.unique(labels):
        rows = rng.permutation(np.flatnonzero(labels == cls))
        fold[rows] = (start + np.arange(len(rows))) % k
        start += len(rows)             # classes' remainders fall in different folds
    return fold


def cross_validate(X: np.ndarray, y: np.ndarray, k: int, rng: np.random.Generator,
                   train_one: Callable[..., dict]) -> dict:
    """k-fold cross-validation: `train_one(i, X, y, X_held, y_held)` returns the
    params of a network trained on all folds but the i-th, which scores it.

    Returns each fold's accuracy, their mean and standard deviation, and the
    accuracy over all N rows, each scored once, with its 95% Wilson interval.
    """
    fold = stratified_folds(y, k, rng)
    accuracy, correct = [], 0
    for i in range(k):
        held = fold == i
        params = train_one(i, X[~held], y[~held], X[held], y[held])
        right = int((network.predict_proba(params, X[held]).argmax(axis=1) == y[held]).sum())
        accuracy.append(right / int(held.sum()))
        correct += right
    low, high = metrics.wilson_interval(correct, len(y))
    return {"folds": k, "fold_accuracy": [round(a, 6) for a in accuracy],
            "mean": round(float(np.mean(accuracy)), 6),
            "std": round(float(np.std(accuracy, ddof=1)), 6) if k > 1 else 0.0,
            "accuracy": round(correct / len(y), 6),
            "accuracy_ci95": {"low": round(low, 6), "high": round(high, 6)}, "rows": len(y)}


def history_csv(history: list[dict]) -> str:
    """The per-epoch history as CSV text with a header, as `dvc plots` reads it."""
    lines = [",".join(HISTORY_COLUMNS)]
    for row in history:
        lines.append(",".join(
            str(row[c]) if c in ("epoch", "member") else f"{row[c]:.6g}" if c == "lr"
            else f"{row[c]:.6f}" for c in HISTORY_COLUMNS))
    return "\n".join(lines) + "\n"


def run(inputs: dict, out: dict, seed: int, cfg: Train) -> None:
    """Train cfg.members networks on the preprocess artifacts and save them, with the
    history, metrics and timing.

    `inputs` maps train_x, train_y, val_x, val_y to paths; `out` maps model,
    history, metrics and timing to paths. Member k draws from the seed [seed, 2, k],
    so member 0 is the same network whatever the ensemble's size. cfg.all_rows trains
    on the validation rows too, which leaves no held-out accuracy: metrics say so.
    cfg.cv_folds > 1 adds a k-fold cross-validation of one network on all labelled
    rows to the metrics (`cross_validate`), after the model is trained.
    cfg.distill_temperature > 0 then trains one more network, the student, on the
    members' softened outputs (`soft_targets`), and saves it alone: the ensemble's
    accuracy in one network's weights and time. `fit` says what the other fields do.
    Only timing holds wall-clock times: a retrain that reproduces the weights leaves
    the files that later steps read byte for byte the same. After each epoch, a
    checkpoint beside the model lets a stopped run go on from there; the runner
    deletes it once the outputs are recorded.
    """
    problem = cfg.problem()             # params.load checks first; direct callers too
    if problem:
        raise PipelineError(problem[1])
    X = artifacts.load_array(inputs["train_x"], "preprocess")         # (N, 784) float32
    y = artifacts.load_array(inputs["train_y"], "preprocess")         # (N,) int64
    X_val = artifacts.load_array(inputs["val_x"], "preprocess")       # (N_val, 784) float32
    y_val = artifacts.load_array(inputs["val_y"], "preprocess")       # (N_val,) int64
    if cfg.all_rows:
        X, y = np.concatenate([X, X_val]), np.concatenate([y, y_val])
    if cfg.batch_size > len(X):
        log.warning("train.batch_size=%d is more than the %d training rows: every epoch is "
                    "one step on all of them", cfg.batch_size, len(X))
    members = cfg.members
    networks = members + (1 if cfg.distill_temperature else 0)  # the student comes last
    started = time.perf_counter()
    nets, history = train_networks(X, y, X_val, y_val, seed, networks, cfg,
                                   checkpoint_path(out["model"]),
                                   checkpoint.key({"seed": seed, **dataclasses.asdict(cfg)},
                                                  inputs))
    val_probs = [network.predict_proba(params, X_val) for params in nets]
    accuracy = [float((p.argmax(axis=1) == y_val).mean()) for p in val_probs]
    ensemble = np.mean(val_probs[:members], axis=0)                # (N_val, 10)
    val_accuracy = float((ensemble.argmax(axis=1) == y_val).mean())
    if members > 1:
        log.info("train: ensemble of %d, validation accuracy %.2f%% (members %s)", members,
                 100 * val_accuracy, ", ".join(f"{100 * a:.2f}%" for a in accuracy[:members]))
    distilled = {}
    if cfg.distill_temperature:
        distilled = {"distilled_from": {"members": members, "val_accuracy": val_accuracy,
                                        "member_val_accuracy": accuracy[:members]}}
        log.info("train: the student, one network, validation accuracy %.2f%% (the ensemble "
                 "it learnt from: %.2f%%)", 100 * accuracy[-1], 100 * val_accuracy)
        nets, accuracy, ensemble = nets[-1:], accuracy[-1:], val_probs[-1]
        val_accuracy = accuracy[0]
    if cfg.all_rows:
        log.warning("train.all_rows=true: the networks were trained on the validation rows, "
                    "so the validation accuracy (%.2f%%) is not held out", 100 * val_accuracy)
    cv = None
    if cfg.cv_folds:
        # All labelled rows: a copy (130 MB on Kaggle's data), made only when needed.
        rows = (X, y) if cfg.all_rows else (np.concatenate([X, X_val]),
                                            np.concatenate([y, y_val]))
        cv = cross_validation(*rows, cfg.cv_folds, seed, cfg)
    kept = [best_epoch([r for r in history if r["member"] == k]) if cfg.keep_best
            else max(r["epoch"] for r in history if r["member"] == k)
            for k in range(networks)][-len(nets):]
    # Members are stacked on a leading axis: a model of K networks has the same keys.
    artifacts.save_arrays(out["model"], **{k: np.stack([net[k] for net in nets])
                                           for k in network.PARAM_NAMES})
    artifacts.write_text(out["history"], history_csv(history))
    artifacts.write_json(out["metrics"], {
        "val_accuracy": val_accuracy,
        "val_loss": network.cross_entropy(ensemble, y_val),
        "val_held_out": not cfg.all_rows,
        "member_val_accuracy": accuracy,
        "members": len(nets),
        "epochs": max(kept),
        "member_epochs": kept,
        **({"cv": cv} if cv else {}),
        **distilled,
    })
    artifacts.write_json(out["timing"], {
        "train_seconds": round(time.perf_counter() - started, 3),
        "epoch_seconds": [[round(r["seconds"], 6) for r in history if r["member"] == k]
                          for k in range(networks)],
    })

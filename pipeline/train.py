"""Stage 3, train: minibatch RMSprop on the 784-H-10 network, or an ensemble of them.

`fit` is the loop for one network, on arrays; `run` is the stage around it, on
artifacts: it trains `members` networks from different seeds and saves them
stacked on a leading axis, so predict can average their softmax outputs.
"""
from __future__ import annotations

import logging
import time
from typing import Callable

import numpy as np

from pipeline import artifacts, network, progress
from pipeline.augment import Augmenter
from pipeline.errors import PipelineError
from pipeline.optim import RMSprop
from pipeline.schedule import Schedule

log = logging.getLogger(__name__)

HISTORY_COLUMNS = ("epoch", "loss", "train_accuracy", "val_loss", "val_accuracy", "seconds",
                   "lr", "member")


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


def fit(X: np.ndarray, y: np.ndarray, X_val: np.ndarray, y_val: np.ndarray, *,
        hidden: int, epochs: int, batch_size: int, lr: float, rms_decay: float, eps: float,
        l2: float, rng: np.random.Generator,
        schedule: Callable[[float], float] | None = None,
        augment: Augmenter | None = None, input_dropout: float = 0.0, max_norm: float = 0.0,
        keep_best: bool = False, patience: int = 0,
        on_epoch: Callable[[dict], None] | None = None) -> tuple[dict, list[dict]]:
    """Train one network on X (N, 784) float32 with integer labels y (N,).

    schedule maps progress in epochs to the learning rate (lr throughout when None);
    augment distorts the images afresh each epoch; input_dropout drops input pixels;
    max_norm > 0 caps each hidden unit's incoming weight norm. keep_best returns the
    weights of `best_epoch(history)` instead of the last; patience > 0 stops once
    that many epochs pass without a better validation accuracy.

    Returns (params, history): history has one dict per epoch with the keys of
    HISTORY_COLUMNS but `member`. `loss` is the mean training cross-entropy over
    the epoch's batches plus the L2 penalty at the epoch's end; `lr` is the rate
    at the epoch's start. Raises PipelineError when the loss or the weights stop
    being finite, the cross-entropy exceeds 3 ln 10, or the loss grows a hundredfold.
    """
    n, n_in = X.shape
    params = network.init_params(rng, n_in, hidden, 10)
    opt = RMSprop(params, lr=lr, decay=rms_decay, eps=eps)
    start_loss = np.log(10) + network.l2_penalty(params, l2)    # about the untrained loss
    rate = schedule or (lambda t: lr)
    grads = None
    # Augmentation distorts a shuffled copy of the whole epoch. Without it, batches are
    # gathered into one small buffer: copying all of X each epoch (and page-faulting
    # the copy in the first) cost 0.4-1.3 s more per default run.
    shuffled = np.empty_like(X) if augment is not None else None   # (N, 784) batch order
    batch = np.empty((min(batch_size, n), n_in), np.float32)        # (B, 784) reused
    batches = -(-n // batch_size)
    history, best, since_best = [], None, 0
    for epoch in range(1, epochs + 1):
        start_time = time.perf_counter()
        order = rng.permutation(n)
        if augment is not None:
            np.take(X, order, axis=0, out=shuffled)
            augment(shuffled, rng, out=shuffled)    # in large chunks: cheaper than per batch
        ce_sum, correct = 0.0, 0
        epoch_lr = rate(epoch - 1)
        for i, start in enumerate(range(0, n, batch_size)):
            idx = order[start:start + batch_size]
            if augment is not None:
                xb = shuffled[start:start + batch_size]
            else:
                xb = np.take(X, idx, axis=0, out=batch[:len(idx)])
            if input_dropout:
                dropout_(xb, input_dropout, rng)
            yb = y[idx]
            opt.lr = rate(epoch - 1 + i / batches)
            probs, h = network.forward(params, xb)
            ce_sum += network.cross_entropy(probs, yb) * len(yb)
            correct += int((probs.argmax(axis=1) == yb).sum())
            grads = network.backward(params, xb, h, probs, yb, l2, grads)
            opt.step(params, grads)
            if max_norm:
                max_norm_(params, max_norm)
        loss = ce_sum / n + network.l2_penalty(params, l2)
        # RMSprop's steps are bounded, so a far too large rate can leave the loss finite
        # but useless: a cross-entropy far above the ln 10 of guessing uniformly, or a
        # loss (with its L2 term) a hundred times the untrained one, is divergence too.
        finite = np.isfinite(loss) and all(np.isfinite(p).all() for p in params.values())
        if not finite or ce_sum / n > 3 * np.log(10) or loss > 100 * start_loss:
            raise PipelineError(
                f"training diverged at epoch {epoch}: the loss is {loss:.4g}. Try a smaller "
                f"learning rate than train.lr={lr:g} (e.g. --set train.lr={lr / 10:g}); "
                "nothing was written")
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
        if keep_best or patience:
            if best_epoch(history) == epoch:
                since_best = 0
                if keep_best:                   # patience alone needs no copy
                    best = {k: v.copy() for k, v in params.items()}
            else:
                since_best += 1
            if patience and since_best >= patience:
                break
    return (best if keep_best else params), history


def history_csv(history: list[dict]) -> str:
    """The per-epoch history as CSV text with a header, as `dvc plots` reads it."""
    lines = [",".join(HISTORY_COLUMNS)]
    for row in history:
        lines.append(",".join(
            str(row[c]) if c in ("epoch", "member") else f"{row[c]:.6g}" if c == "lr"
            else f"{row[c]:.6f}" for c in HISTORY_COLUMNS))
    return "\n".join(lines) + "\n"


def run(inputs: dict, out: dict, seed: int, hidden: int, epochs: int, batch_size: int,
        lr: float, rms_decay: float, eps: float, l2: float, schedule: str, lr_min: float,
        lr_step_epochs: int, lr_step_gamma: float, augment_shift: float,
        augment_rotate: float, augment_scale: float, augment_shear: float,
        elastic_alpha: float, elastic_sigma: float, input_dropout: float, max_norm: float,
        keep_best: bool, patience: int, members: int, all_rows: bool) -> None:
    """Train `members` networks on the preprocess artifacts and save them, with the
    history and metrics.

    `inputs` maps train_x, train_y, val_x, val_y to paths; `out` maps model,
    history and metrics to paths. Member k draws from the seed [seed, 2, k], so
    member 0 is the same network whatever the ensemble's size. all_rows trains on
    the validation rows too, which leaves no held-out accuracy: metrics say so.
    """
    if all_rows and (keep_best or patience):
        raise PipelineError(
            "train.all_rows=true trains on the validation rows, so train.keep_best and "
            "train.patience cannot choose the epoch on them: choose train.epochs on a run "
            "without all_rows, then set train.keep_best=false and train.patience=0")
    X = artifacts.load_array(inputs["train_x"], "preprocess")         # (N, 784) float32
    y = artifacts.load_array(inputs["train_y"], "preprocess")         # (N,) int64
    X_val = artifacts.load_array(inputs["val_x"], "preprocess")       # (N_val, 784) float32
    y_val = artifacts.load_array(inputs["val_y"], "preprocess")       # (N_val,) int64
    if all_rows:
        X, y = np.concatenate([X, X_val]), np.concatenate([y, y_val])
    side = int(round(np.sqrt(X.shape[1])))
    augmenter = Augmenter(side, augment_shift, augment_rotate, augment_scale, augment_shear,
                          elastic_alpha, elastic_sigma)
    lr_at = Schedule(schedule, lr, epochs, lr_min, lr_step_epochs, lr_step_gamma)
    started = time.perf_counter()
    nets, history, val_probs = [], [], []
    # A bar on a terminal, else log lines; closed even when training fails.
    with progress.Epochs(epochs, members) as shown:
        for k in range(members):
            def on_epoch(row: dict, k: int = k) -> None:
                row.update(member=k, members=members)
                shown(row)
            # Overflow on the way to divergence would print NumPy warnings before fit's error.
            with np.errstate(over="ignore", invalid="ignore"):
                params, rows = fit(
                    X, y, X_val, y_val, hidden=hidden, epochs=epochs, batch_size=batch_size,
                    lr=lr, rms_decay=rms_decay, eps=eps, l2=l2,
                    rng=np.random.default_rng([seed, 2, k]), schedule=lr_at,
                    augment=augmenter if augmenter.active else None,
                    input_dropout=input_dropout, max_norm=max_norm, keep_best=keep_best,
                    patience=patience, on_epoch=on_epoch)
            nets.append(params)
            history += rows
            val_probs.append(network.predict_proba(params, X_val))
    accuracy = [float((p.argmax(axis=1) == y_val).mean()) for p in val_probs]
    ensemble = np.mean(val_probs, axis=0)                          # (N_val, 10)
    val_accuracy = float((ensemble.argmax(axis=1) == y_val).mean())
    if members > 1:
        log.info("train: ensemble of %d, validation accuracy %.2f%% (members %s)", members,
                 100 * val_accuracy, ", ".join(f"{100 * a:.2f}%" for a in accuracy))
    if all_rows:
        log.warning("train.all_rows=true: the networks were trained on the validation rows, "
                    "so the validation accuracy (%.2f%%) is not held out", 100 * val_accuracy)
    kept = [best_epoch([r for r in history if r["member"] == k]) if keep_best
            else max(r["epoch"] for r in history if r["member"] == k) for k in range(members)]
    # Members are stacked on a leading axis: a model of K networks has the same keys.
    artifacts.save_arrays(out["model"], **{k: np.stack([net[k] for net in nets])
                                           for k in network.PARAM_NAMES})
    artifacts.write_text(out["history"], history_csv(history))
    artifacts.write_json(out["metrics"], {
        "val_accuracy": val_accuracy,
        "val_loss": network.cross_entropy(ensemble, y_val),
        "val_held_out": not all_rows,
        "member_val_accuracy": accuracy,
        "members": members,
        "epochs": max(kept),
        "member_epochs": kept,
        "train_seconds": round(time.perf_counter() - started, 3),
    })

"""Stage 3, train: minibatch RMSprop on the 784-H-10 network.

`fit` is the loop, on arrays; `run` is the stage around it, on artifacts.
"""
from __future__ import annotations

import logging
import time
from typing import Callable

import numpy as np

from pipeline import artifacts, network
from pipeline.errors import PipelineError
from pipeline.optim import RMSprop

log = logging.getLogger(__name__)

HISTORY_COLUMNS = ("epoch", "loss", "train_accuracy", "val_loss", "val_accuracy", "seconds")


def fit(X: np.ndarray, y: np.ndarray, X_val: np.ndarray, y_val: np.ndarray, *,
        hidden: int, epochs: int, batch_size: int, lr: float, rms_decay: float, eps: float,
        l2: float, rng: np.random.Generator,
        on_epoch: Callable[[dict], None] | None = None) -> tuple[dict, list[dict]]:
    """Train one network on X (N, 784) float32 with integer labels y (N,).

    Returns (params, history): history has one dict per epoch with the keys of
    HISTORY_COLUMNS. `loss` is the mean training cross-entropy over the epoch's
    batches plus the L2 penalty at the epoch's end. Raises PipelineError when
    the loss or the weights stop being finite.
    """
    n, n_in = X.shape
    params = network.init_params(rng, n_in, hidden, 10)
    opt = RMSprop(params, lr=lr, decay=rms_decay, eps=eps)
    grads = None
    batch = np.empty((min(batch_size, n), n_in), np.float32)   # reused for every batch
    history = []
    for epoch in range(1, epochs + 1):
        start_time = time.perf_counter()
        order = rng.permutation(n)
        ce_sum, correct = 0.0, 0
        for start in range(0, n, batch_size):
            idx = order[start:start + batch_size]
            xb = np.take(X, idx, axis=0, out=batch[:len(idx)])
            yb = y[idx]
            probs, h = network.forward(params, xb)
            ce_sum += network.cross_entropy(probs, yb) * len(idx)
            correct += int((probs.argmax(axis=1) == yb).sum())
            grads = network.backward(params, xb, h, probs, yb, l2, grads)
            opt.step(params, grads)
        loss = ce_sum / n + network.l2_penalty(params, l2)
        if not np.isfinite(loss) or not all(np.isfinite(p).all() for p in params.values()):
            raise PipelineError(
                f"training diverged at epoch {epoch}: the loss is {loss}. Try a smaller "
                f"learning rate than train.lr={lr} (e.g. --set train.lr={lr / 10:g}); "
                "nothing was written")
        val_probs = network.predict_proba(params, X_val)
        row = {
            "epoch": epoch,
            "loss": loss,
            "train_accuracy": correct / n,
            "val_loss": network.cross_entropy(val_probs, y_val),
            "val_accuracy": float((val_probs.argmax(axis=1) == y_val).mean()),
            "seconds": time.perf_counter() - start_time,
        }
        history.append(row)
        if on_epoch:
            on_epoch(row)
    return params, history


def history_csv(history: list[dict]) -> str:
    """The per-epoch history as CSV text with a header, as `dvc plots` reads it."""
    lines = [",".join(HISTORY_COLUMNS)]
    for row in history:
        lines.append(",".join(
            str(row[c]) if c == "epoch" else f"{row[c]:.6f}" for c in HISTORY_COLUMNS))
    return "\n".join(lines) + "\n"


def _log_epoch(row: dict) -> None:
    log.info("train: epoch %d  loss %.4f  train acc %.4f  val acc %.4f  (%.1f s)",
             row["epoch"], row["loss"], row["train_accuracy"], row["val_accuracy"],
             row["seconds"])


def run(inputs: dict, out: dict, seed: int, hidden: int, epochs: int, batch_size: int,
        lr: float, rms_decay: float, eps: float, l2: float) -> None:
    """Train on the preprocess artifacts and save the model, history and metrics.

    `inputs` maps train_x, train_y, val_x, val_y to paths; `out` maps model,
    history and metrics to paths.
    """
    X = artifacts.load_array(inputs["train_x"], "preprocess")
    y = artifacts.load_array(inputs["train_y"], "preprocess")
    X_val = artifacts.load_array(inputs["val_x"], "preprocess")
    y_val = artifacts.load_array(inputs["val_y"], "preprocess")
    rng = np.random.default_rng([seed, 2])
    started = time.perf_counter()
    params, history = fit(X, y, X_val, y_val, hidden=hidden, epochs=epochs,
                          batch_size=batch_size, lr=lr, rms_decay=rms_decay, eps=eps, l2=l2,
                          rng=rng, on_epoch=_log_epoch)
    last = history[-1]
    # Members are stacked on a leading axis, so a model of K networks has the same keys.
    artifacts.save_arrays(out["model"], **{k: v[None] for k, v in params.items()})
    artifacts.write_text(out["history"], history_csv(history))
    artifacts.write_json(out["metrics"], {
        "val_accuracy": last["val_accuracy"],
        "val_loss": last["val_loss"],
        "epochs": len(history),
        "train_seconds": round(time.perf_counter() - started, 3),
    })

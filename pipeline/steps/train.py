"""Stage 3, train: train the network (or an ensemble of them) on preprocess's
artifacts, and save the model, its per-epoch history, validation metrics and timing.

The loop is pipeline/training/fit.py; ensembles and distillation are
pipeline/training/members.py; cross-validation is pipeline/training/crossval.py.
"""
from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path

import numpy as np

from pipeline import artifacts
from pipeline.config.sections import Train
from pipeline.errors import PipelineError
from pipeline.nn import metrics, network
from pipeline.training import checkpoint, crossval, members
from pipeline.training.fit import best_epoch

log = logging.getLogger(__name__)

# fit's rows also hold `seconds`, the epoch's wall time: it goes to timing.json, not to
# history.csv, because later steps read the history and must not rerun for a clock.
# `step` numbers the rows 1, 2, ... over the members in turn: epochs repeat when there
# are several members, and a plot (dvc plots) needs an x that does not.
HISTORY_COLUMNS = ("epoch", "loss", "train_accuracy", "val_loss", "val_accuracy", "lr",
                   "step", "member")


def run(params: dict, deps: dict[str, Path], outs: dict[str, Path]) -> None:
    """The stage's entry, as every step's: `train` with params' seed and train section."""
    train(deps, outs, seed=params["seed"], cfg=Train.of(params))


def train(deps: dict[str, Path], outs: dict[str, Path], seed: int, cfg: Train) -> None:
    """Train cfg.members networks and save them stacked on a leading axis, so that
    predict averages their softmax outputs.

    `deps` maps train_x, train_y, val_x, val_y to paths; `outs` maps model, history,
    metrics and timing. Member k draws from the seed [seed, 2, k], so member 0 is the
    same network whatever the ensemble's size. cfg.all_rows trains on the validation
    rows too (the metrics then say they are not held out); cfg.cv_folds > 1 adds a
    cross-validation to the metrics; cfg.distill_temperature > 0 trains a student
    and keeps it alone. Only timing.json holds wall-clock times, so a retrain that
    reproduces the weights leaves what later steps read byte for byte the same.
    """
    problem = cfg.problem()             # params.load checks first; direct callers too
    if problem:
        raise PipelineError(problem[1])
    X, y, X_val, y_val = load_rows(deps, cfg)
    networks = cfg.members + (1 if cfg.distill_temperature else 0)  # the student last
    started = time.perf_counter()
    nets, history = members.train_networks(
        X, y, X_val, y_val, seed, networks, cfg, checkpoint_path(outs["model"]),
        checkpoint.key({"seed": seed, **dataclasses.asdict(cfg)}, deps))
    nets, scores = score(nets, X_val, y_val, cfg)
    if cfg.cv_folds:
        # All labelled rows: a copy (130 MB on Kaggle's data), made only when needed.
        rows = (X, y) if cfg.all_rows else (np.concatenate([X, X_val]),
                                            np.concatenate([y, y_val]))
        scores["cv"] = crossval.cross_validation(*rows, cfg.cv_folds, seed, cfg)
    kept = [best_epoch([r for r in history if r["member"] == k]) if cfg.keep_best
            else max(r["epoch"] for r in history if r["member"] == k)
            for k in range(networks)][-len(nets):]
    save(outs, nets, history, {**scores, "epochs": max(kept), "member_epochs": kept},
         time.perf_counter() - started, networks)


def load_rows(deps: dict[str, Path], cfg: Train) -> tuple[np.ndarray, ...]:
    """(X (N, 784) float32, y (N,) int64, X_val, y_val): preprocess's rows, with the
    validation rows added to the training rows when cfg.all_rows."""
    X = artifacts.load_array(deps["train_x"], "preprocess")
    y = artifacts.load_array(deps["train_y"], "preprocess")
    X_val = artifacts.load_array(deps["val_x"], "preprocess")
    y_val = artifacts.load_array(deps["val_y"], "preprocess")
    if cfg.all_rows:
        X, y = np.concatenate([X, X_val]), np.concatenate([y, y_val])
    if cfg.batch_size > len(X):
        log.warning("train.batch_size=%d is more than the %d training rows: every epoch is "
                    "one step on all of them", cfg.batch_size, len(X))
    return X, y, X_val, y_val


def score(nets: list[dict], X_val: np.ndarray, y_val: np.ndarray, cfg: Train
          ) -> tuple[list[dict], dict]:
    """(the networks to keep, their validation metrics): the members, scored as an
    ensemble, or with distillation the student alone, its teachers' scores kept."""
    val_probs = [network.predict_proba(params, X_val) for params in nets]   # each (N_val, 10)
    accuracy = [metrics.accuracy(p, y_val) for p in val_probs]
    ensemble = np.mean(val_probs[:cfg.members], axis=0)                   # (N_val, 10)
    val_accuracy = metrics.accuracy(ensemble, y_val)
    if cfg.members > 1:
        log.info("train: ensemble of %d, validation accuracy %.2f%% (members %s)", cfg.members,
                 100 * val_accuracy, ", ".join(f"{100 * a:.2f}%" for a in accuracy[:cfg.members]))
    distilled = {}
    if cfg.distill_temperature:
        distilled = {"distilled_from": {"members": cfg.members, "val_accuracy": val_accuracy,
                                        "member_val_accuracy": accuracy[:cfg.members]}}
        log.info("train: the student, one network, validation accuracy %.2f%% (the ensemble "
                 "it learnt from: %.2f%%)", 100 * accuracy[-1], 100 * val_accuracy)
        nets, accuracy, ensemble = nets[-1:], accuracy[-1:], val_probs[-1]
        val_accuracy = accuracy[0]
    if cfg.all_rows:
        log.warning("train.all_rows=true: the networks were trained on the validation rows, "
                    "so the validation accuracy (%.2f%%) is not held out", 100 * val_accuracy)
    return nets, {"val_accuracy": val_accuracy,
                  "val_loss": network.cross_entropy(ensemble, y_val),
                  "val_held_out": not cfg.all_rows, "member_val_accuracy": accuracy,
                  "members": len(nets), **distilled}


def save(outs: dict[str, Path], nets: list[dict], history: list[dict], scores: dict,
         seconds: float, networks: int) -> None:
    """Write the model (members stacked on a leading axis: a model of K networks has
    the same keys), the history, the metrics and the timing."""
    artifacts.save_arrays(outs["model"], **{k: np.stack([net[k] for net in nets])
                                            for k in network.PARAM_NAMES})
    artifacts.write_text(outs["history"], history_csv(history))
    artifacts.write_json(outs["metrics"], scores)
    artifacts.write_json(outs["timing"], {
        "train_seconds": round(seconds, 3),
        "epoch_seconds": [[round(r["seconds"], 6) for r in history if r["member"] == k]
                          for k in range(networks)],
    })


def checkpoint_path(model: Path) -> Path:
    """Where training keeps its checkpoint: beside the model."""
    return Path(model).with_name("checkpoint.npz")


def history_csv(history: list[dict]) -> str:
    """The per-epoch history as CSV text with a header, as `dvc plots` reads it."""
    lines = [",".join(HISTORY_COLUMNS)]
    for step, row in enumerate(history, start=1):
        row = {**row, "step": step}
        lines.append(",".join(
            str(row[c]) if c in ("epoch", "member", "step") else f"{row[c]:.6g}" if c == "lr"
            else f"{row[c]:.6f}" for c in HISTORY_COLUMNS))
    return "\n".join(lines) + "\n"

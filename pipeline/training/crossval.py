"""k-fold cross-validation of one network on all labelled rows.

A recipe of several networks (an ensemble, or a student distilled from one) is not
cross-validated as such: each fold trains one network, and the log line, the metrics
(`networks`: 1) and the runs table say so."""
from __future__ import annotations

import dataclasses
import logging
from typing import Callable

import numpy as np

from pipeline.config.sections import Train
from pipeline.nn import metrics, network
from pipeline.training.fit import fit
from pipeline.training.splits import stratified_folds

log = logging.getLogger(__name__)


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
    log.info("train: %d-fold cross-validation of %s: %.2f%% +- %.2f (mean and standard "
             "deviation of the folds); %.2f%% over all %d rows (95%% interval %.2f-%.2f%%)", k,
             scored(cfg), 100 * cv["mean"], 100 * cv["std"], 100 * cv["accuracy"], cv["rows"],
             100 * cv["accuracy_ci95"]["low"], 100 * cv["accuracy_ci95"]["high"])
    return {**cv, "networks": 1}


def scored(cfg: Train) -> str:
    """What the folds score, in words: one network, and not the recipe when the run
    keeps more than one network's work (an ensemble, or a distilled student)."""
    if cfg.distill_temperature:
        return (f"one network, not the student distilled from {cfg.members} (each fold "
                "trains one network)")
    if cfg.members > 1:
        return f"one network, not the ensemble of {cfg.members} (each fold trains one)"
    return "one network"


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
        right = metrics.n_correct(network.predict_proba(params, X[held]), y[held])
        accuracy.append(right / int(held.sum()))
        correct += right
    low, high = metrics.wilson_interval(correct, len(y))
    return {"folds": k, "fold_accuracy": [round(a, 6) for a in accuracy],
            "mean": round(float(np.mean(accuracy)), 6),
            "std": round(float(np.std(accuracy, ddof=1)), 6) if k > 1 else 0.0,
            "accuracy": round(correct / len(y), 6),
            "accuracy_ci95": {"low": round(low, 6), "high": round(high, 6)}, "rows": len(y)}

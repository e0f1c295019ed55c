"""Validation metrics from class probabilities, in NumPy. No I/O.

`summary` returns them in the shape `dvc metrics show` reads: nested dicts whose
leaves are numbers (DVC skips lists), keyed by strings such as "true_3".
"""
from __future__ import annotations

import math

import numpy as np

from pipeline.nn import network

N_CLASSES = 10
Z95 = 1.959964                     # the standard normal's 97.5th percentile


def n_correct(probs: np.ndarray, y: np.ndarray) -> int:
    """How many rows of probs (N, 10) give their highest probability to the label
    in y (N,)."""
    return int((probs.argmax(axis=1) == y).sum())


def accuracy(probs: np.ndarray, y: np.ndarray) -> float:
    """The share of rows of probs (N, 10) whose likeliest class is the label in y (N,)."""
    return float((probs.argmax(axis=1) == y).mean())


def wilson_interval(correct: int, n: int, z: float = Z95) -> tuple[float, float]:
    """The 95% Wilson score interval of the accuracy correct / n.

    Unlike the normal approximation p +- z sqrt(p (1 - p) / n), it stays within
    [0, 1] and keeps its coverage near 100% accuracy, where few errors are counted
    (Brown, Cai and DasGupta, 2001, recommend it for this reason).
    """
    if n == 0:
        return 0.0, 1.0
    p, z2 = correct / n, z * z
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = z / (1 + z2 / n) * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray,
                     n_classes: int = N_CLASSES) -> np.ndarray:
    """Counts (n_classes, n_classes): row = true label, column = predicted label."""
    flat = np.bincount(y_true * n_classes + y_pred, minlength=n_classes * n_classes)
    return flat.reshape(n_classes, n_classes)


def class_scores(cm: np.ndarray) -> dict[str, np.ndarray]:
    """Per-class precision, recall, F1 (each (C,)) and support from a confusion matrix.

    A score whose denominator is zero (a class never predicted, or absent) is 0,
    as scikit-learn reports it with zero_division=0.
    """
    tp = np.diag(cm).astype(np.float64)                  # (C,)
    predicted = cm.sum(axis=0)                           # (C,) column sums
    support = cm.sum(axis=1)                             # (C,) row sums

    def ratio(num, den):
        return np.divide(num, den, out=np.zeros_like(num), where=den > 0)

    precision = ratio(tp, predicted.astype(np.float64))
    recall = ratio(tp, support.astype(np.float64))
    f1 = ratio(2 * precision * recall, precision + recall)
    return {"precision": precision, "recall": recall, "f1": f1, "support": support}


def summary(probs: np.ndarray, y: np.ndarray) -> dict:
    """Accuracy, loss, per-class scores and the confusion matrix of probabilities
    `probs` (N, C) against integer labels `y` (N,), as a JSON-ready dict."""
    n_classes = probs.shape[1]
    pred = probs.argmax(axis=1)
    cm = confusion_matrix(y, pred, n_classes)
    scores = class_scores(cm)
    per_class = {
        str(c): {"precision": round(float(scores["precision"][c]), 6),
                 "recall": round(float(scores["recall"][c]), 6),
                 "f1": round(float(scores["f1"][c]), 6),
                 "support": int(scores["support"][c])}
        for c in range(n_classes)
    }
    correct = int((pred == y).sum())
    low, high = wilson_interval(correct, len(y))
    return {
        "val_accuracy": round(float((pred == y).mean()), 6),
        "val_accuracy_ci95": {"low": round(low, 6), "high": round(high, 6)},
        "val_errors": len(y) - correct,
        "val_loss": round(network.cross_entropy(probs, y), 6),
        "val_rows": int(len(y)),
        "macro_f1": round(float(scores["f1"].mean()), 6),
        "per_class": per_class,
        "confusion_matrix": {
            f"true_{t}": {f"pred_{p}": int(cm[t, p]) for p in range(n_classes)}
            for t in range(n_classes)
        },
    }


def matrix_from_summary(summary_: dict) -> np.ndarray:
    """The confusion matrix (C, C) back from `summary`'s nested dict."""
    rows = summary_["confusion_matrix"]
    n = len(rows)
    return np.array([[rows[f"true_{t}"][f"pred_{p}"] for p in range(n)] for t in range(n)],
                    dtype=np.int64)

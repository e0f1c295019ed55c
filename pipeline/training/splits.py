"""Stratified splits of labelled rows: a hold-out split and k folds, each class
shuffled once and then divided, so every part holds each class in proportion."""
from __future__ import annotations

import numpy as np


def _shuffled_classes(labels: np.ndarray, rng: np.random.Generator) -> list[np.ndarray]:
    """Each class's row indices, shuffled, class by class in ascending order."""
    return [rng.permutation(np.flatnonzero(labels == cls)) for cls in np.unique(labels)]


def stratified_split(labels: np.ndarray, val_fraction: float,
                     rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Indices (train, val) of labels (N,), each class split in the same proportion.

    Each class gives round(val_fraction * its count) rows to validation, at least
    one when it has two or more. Both index arrays come back sorted.
    """
    val = []
    for rows in _shuffled_classes(labels, rng):
        n_val = int(round(val_fraction * len(rows)))
        if len(rows) >= 2:
            n_val = min(max(n_val, 1), len(rows) - 1)
        val.append(rows[:n_val])
    val_idx = np.sort(np.concatenate(val))
    train_mask = np.ones(len(labels), bool)
    train_mask[val_idx] = False
    return np.flatnonzero(train_mask), val_idx


def stratified_folds(labels: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """The fold, 0 to k-1, of each row (N,): every class dealt round its folds in a
    random order, so each fold holds each class's count / k rows, give or take one."""
    fold = np.empty(len(labels), np.int64)
    start = 0                          # where the next class's dealing starts
    for rows in _shuffled_classes(labels, rng):
        fold[rows] = (start + np.arange(len(rows))) % k
        start += len(rows)             # classes' remainders fall in different folds
    return fold

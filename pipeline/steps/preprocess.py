"""Stage 2, preprocess: scale pixels to [0, 1] float32 and split off validation rows."""
from __future__ import annotations

import logging

import numpy as np

from pipeline import artifacts
from pipeline.errors import PipelineError

log = logging.getLogger(__name__)


def scale(images: np.ndarray) -> np.ndarray:
    """uint8 images (N, 784) -> float32 (N, 784) in [0, 1]."""
    return images.astype(np.float32) * np.float32(1.0 / 255.0)


def stratified_split(labels: np.ndarray, val_fraction: float,
                     rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Indices (train, val) with each class split in the same proportion.

    Each class gives round(val_fraction * its count) rows to validation, at least
    one when it has two or more. Both index arrays come back sorted.
    """
    val = []
    for cls in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == cls))
        n_val = int(round(val_fraction * len(members)))
        if len(members) >= 2:
            n_val = min(max(n_val, 1), len(members) - 1)
        val.append(members[:n_val])
    val_idx = np.sort(np.concatenate(val))
    train_mask = np.ones(len(labels), bool)
    train_mask[val_idx] = False
    return np.flatnonzero(train_mask), val_idx


def run_train(images_in, labels_in, out: dict, seed: int, val_fraction: float) -> None:
    """Split and scale the labelled images. `out` maps train_x, train_y, val_x,
    val_y to their paths."""
    images = artifacts.load_array(images_in, "ingest")
    labels = artifacts.load_array(labels_in, "ingest")
    if len(images) != len(labels):
        raise PipelineError(
            f"{images_in} has {len(images)} rows but {labels_in} has {len(labels)}: "
            "run `python run.py ingest --force`")
    # A child of the seed, so the split does not share a random stream with training.
    rng = np.random.default_rng([seed, 1])
    train_idx, val_idx = stratified_split(labels, val_fraction, rng)
    if len(val_idx) == 0 or len(train_idx) == 0:
        raise PipelineError(
            f"{labels_in}: {len(labels)} labelled rows give {len(train_idx)} training and "
            f"{len(val_idx)} validation rows with preprocess.val_fraction={val_fraction}: "
            "expected at least one of each (use more rows, or another val_fraction)")
    artifacts.save_array(out["train_x"], scale(images[train_idx]))
    artifacts.save_array(out["train_y"], labels[train_idx])
    artifacts.save_array(out["val_x"], scale(images[val_idx]))
    artifacts.save_array(out["val_y"], labels[val_idx])
    log.info("preprocess: %d training rows, %d validation rows", len(train_idx), len(val_idx))


def run_test(images_in, test_x_out) -> None:
    """Scale the test images."""
    artifacts.save_array(test_x_out, scale(artifacts.load_array(images_in, "ingest")))

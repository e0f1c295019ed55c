"""Stage 2, preprocess: scale pixels to [0, 1] float32 (`images.pixels.scale`) and split
off validation rows (`training.splits.stratified_split`)."""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from pipeline import artifacts
from pipeline.errors import PipelineError
from pipeline.images.pixels import scale
from pipeline.training.splits import stratified_split

log = logging.getLogger(__name__)


def run_train(params: dict, deps: dict[str, Path], outs: dict[str, Path]) -> None:
    """Split off preprocess.val_fraction of the labelled images (deps train_images,
    train_labels), stratified, and scale them: outs train_x, train_y, val_x, val_y."""
    images_in, labels_in = deps["train_images"], deps["train_labels"]
    seed, val_fraction, out = params["seed"], params["preprocess.val_fraction"], outs
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


def run_test(params: dict, deps: dict[str, Path], outs: dict[str, Path]) -> None:
    """Scale the test images: deps test_images -> outs test_x."""
    artifacts.save_array(outs["test_x"], scale(artifacts.load_array(deps["test_images"],
                                                                    "ingest")))

"""Stage 4, predict: class probabilities and labels for the test and validation rows."""
from __future__ import annotations

import logging

import numpy as np

from pipeline import artifacts, network
from pipeline.errors import PipelineError

log = logging.getLogger(__name__)


def members(model: dict[str, np.ndarray]) -> list[dict[str, np.ndarray]]:
    """Split a saved model (arrays stacked over K members) into K param dicts."""
    missing = [k for k in network.PARAM_NAMES if k not in model]
    if missing:
        raise PipelineError(f"the saved model lacks {', '.join(missing)}")
    return [{k: model[k][i] for k in network.PARAM_NAMES} for i in range(len(model["W1"]))]


def ensemble_proba(nets: list[dict], X: np.ndarray, batch_size: int) -> np.ndarray:
    """Mean of the members' softmax outputs, (N, 10)."""
    total = network.predict_proba(nets[0], X, batch_size)
    for params in nets[1:]:
        total += network.predict_proba(params, X, batch_size)
    total /= len(nets)
    return total


def run(inputs: dict, out: dict, batch_size: int) -> None:
    """`inputs` maps model, test_x, val_x to paths; `out` maps test_probs,
    test_labels and val_probs to paths."""
    nets = members(artifacts.load_arrays(inputs["model"], "train"))
    test_x = artifacts.load_array(inputs["test_x"], "preprocess")
    val_x = artifacts.load_array(inputs["val_x"], "preprocess")
    n_in = nets[0]["W1"].shape[0]
    for name, X in (("test", test_x), ("validation", val_x)):
        if X.ndim != 2 or X.shape[1] != n_in:
            raise PipelineError(f"the {name} images have shape {X.shape}, the model expects "
                                f"(N, {n_in}): run `python run.py --force`")
    test_probs = ensemble_proba(nets, test_x, batch_size)
    artifacts.save_array(out["test_probs"], test_probs)
    artifacts.save_array(out["test_labels"], test_probs.argmax(axis=1).astype(np.int64))
    artifacts.save_array(out["val_probs"], ensemble_proba(nets, val_x, batch_size))
    log.info("predict: %d test images", len(test_x))

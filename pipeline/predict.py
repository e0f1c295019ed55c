"""Stage 4, predict: class probabilities and labels for the test and validation rows,
and the validation metrics (<outputs>/metrics.json)."""
from __future__ import annotations

import logging

import numpy as np

from pipeline import artifacts, metrics, network
from pipeline.errors import PipelineError

log = logging.getLogger(__name__)


def members(model: dict[str, np.ndarray]) -> list[dict[str, np.ndarray]]:
    """Split a saved model (arrays stacked over K members) into K param dicts."""
    missing = [k for k in network.PARAM_NAMES if k not in model]
    if missing:
        raise PipelineError(f"the saved model lacks {', '.join(missing)}")
    return [{k: model[k][i] for k in network.PARAM_NAMES} for i in range(len(model["W1"]))]


def load_model(path) -> list[dict[str, np.ndarray]]:
    """The networks saved by train in `path`, checked to hold finite weights."""
    model = artifacts.load_arrays(path, "train")
    nets = members(model)
    bad = [k for k in network.PARAM_NAMES if not np.isfinite(model[k]).all()]
    if bad:
        raise PipelineError(f"{path}: the weights are not finite (NaN or infinity in "
                            f"{', '.join(bad)}): retrain with `python run.py train --force`")
    return nets


def ensemble_proba(nets: list[dict], X: np.ndarray, batch_size: int) -> np.ndarray:
    """Mean of the members' softmax outputs, (N, 10)."""
    total = network.predict_proba(nets[0], X, batch_size)
    for params in nets[1:]:
        total += network.predict_proba(params, X, batch_size)
    total /= len(nets)
    return total


def run(inputs: dict, out: dict, batch_size: int) -> None:
    """`inputs` maps model, test_x, val_x, val_y to paths; `out` maps test_probs,
    test_labels, val_probs and metrics to paths."""
    nets = load_model(inputs["model"])
    test_x = artifacts.load_array(inputs["test_x"], "preprocess")
    val_x = artifacts.load_array(inputs["val_x"], "preprocess")
    val_y = artifacts.load_array(inputs["val_y"], "preprocess")
    n_in = nets[0]["W1"].shape[0]
    for name, X in (("test", test_x), ("validation", val_x)):
        if X.ndim != 2 or X.shape[1] != n_in:
            raise PipelineError(f"the {name} images have shape {X.shape}, the model expects "
                                f"(N, {n_in}): run `python run.py --force`")
    if len(val_y) != len(val_x):
        raise PipelineError(f"{inputs['val_y']} has {len(val_y)} labels for {len(val_x)} "
                            f"validation images in {inputs['val_x']}: run `python run.py "
                            "preprocess --force`")
    test_probs = ensemble_proba(nets, test_x, batch_size)          # (M, 10)
    val_probs = ensemble_proba(nets, val_x, batch_size)            # (N_val, 10)
    scores = metrics.summary(val_probs, val_y)
    artifacts.save_array(out["test_probs"], test_probs)
    artifacts.save_array(out["test_labels"], test_probs.argmax(axis=1).astype(np.int64))
    artifacts.save_array(out["val_probs"], val_probs)
    artifacts.write_json(out["metrics"], scores)
    log.info("predict: %d test images; validation accuracy %.2f%% on %d rows",
             len(test_x), 100 * scores["val_accuracy"], len(val_y))

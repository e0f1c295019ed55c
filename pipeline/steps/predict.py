"""Stage 4, predict: class probabilities and labels for the test and validation rows,
and the validation metrics: the headline figures in <outputs>/metrics.json, per-class
scores and the confusion matrix in predict/scores.json."""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from pipeline import artifacts
from pipeline.errors import PipelineError
from pipeline.nn import metrics
from pipeline.training import ensemble as model

log = logging.getLogger(__name__)

NOT_HELD_OUT = " (not held out: train.all_rows=true trained on these rows)"


def run(params: dict, deps: dict[str, Path], outs: dict[str, Path]) -> None:
    """The stage's entry, as every step's: `predict` with params' predict section."""
    predict(deps, outs, batch_size=params["predict.batch_size"],
            tta_shift=params["predict.tta_shift"])


def predict(inputs: dict, out: dict, batch_size: int, tta_shift: float) -> None:
    """Class probabilities for the test and validation rows, and the metrics.

    `inputs` maps model, train_metrics, test_x, val_x, val_y to paths; `out` maps
    test_probs, test_labels, val_probs, metrics and scores to paths. tta_shift > 0 averages
    each image's probabilities with those of its copies moved that many pixels
    (`model.shifted_copies`). The metrics say whether the validation rows were held out, as
    train's metrics do for the same model."""
    nets = model.load(inputs["model"])
    # The model's own record, not today's params: train.all_rows may have changed since.
    held_out = artifacts.load_json(inputs["train_metrics"], "train").get("val_held_out", True)
    test_x = artifacts.load_array(inputs["test_x"], "preprocess")     # (M, 784) float32
    val_x = artifacts.load_array(inputs["val_x"], "preprocess")       # (N_val, 784) float32
    val_y = artifacts.load_array(inputs["val_y"], "preprocess")       # (N_val,) int64
    n_in = nets[0]["W1"].shape[0]
    for name, X in (("test", test_x), ("validation", val_x)):
        if X.ndim != 2 or X.shape[1] != n_in:
            raise PipelineError(f"the {name} images have shape {X.shape}, the model expects "
                                f"(N, {n_in}): run `python run.py --force`")
    if len(val_y) != len(val_x):
        raise PipelineError(f"{inputs['val_y']} has {len(val_y)} labels for {len(val_x)} "
                            f"validation images in {inputs['val_x']}: run `python run.py "
                            "preprocess --force`")
    test_probs = model.ensemble_proba(nets, test_x, batch_size, tta_shift)   # (M, 10)
    val_probs = model.ensemble_proba(nets, val_x, batch_size, tta_shift)     # (N_val, 10)
    scores = {**metrics.summary(val_probs, val_y), "val_held_out": held_out}
    # The headline alone in metrics.json, which git keeps and DVC compares across
    # commits, one row a commit; the per-class table and the matrix go beside the arrays.
    details = {key: scores.pop(key) for key in ("per_class", "confusion_matrix")}
    details["tta_shift"] = tta_shift                 # a param (DVC has it): not a metric
    scores["val_f1"] = {c: s["f1"] for c, s in details["per_class"].items()}
    artifacts.save_array(out["test_probs"], test_probs)
    artifacts.save_array(out["test_labels"], test_probs.argmax(axis=1).astype(np.int64))
    artifacts.save_array(out["val_probs"], val_probs)
    artifacts.write_json(out["scores"], details)
    artifacts.write_json(out["metrics"], scores)
    ci = scores["val_accuracy_ci95"]
    log.info("predict: %d test images; validation accuracy %.2f%% (95%% interval %.2f-%.2f%%, "
             "%d of %d rows wrong)%s", len(test_x), 100 * scores["val_accuracy"],
             100 * ci["low"], 100 * ci["high"], scores["val_errors"], len(val_y),
             "" if held_out else NOT_HELD_OUT)

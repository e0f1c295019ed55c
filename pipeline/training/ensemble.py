"""The saved model: K networks (an ensemble of one or more) stacked in one .npz.

Loading, checking and averaging it, for predict, report and predict-image alike.
"""
from __future__ import annotations

import numpy as np

from pipeline import artifacts
from pipeline.errors import PipelineError
from pipeline.nn import network
from pipeline.training import augment


def members(model: dict[str, np.ndarray]) -> list[dict[str, np.ndarray]]:
    """Split a saved model (arrays stacked over K members) into K param dicts,
    checking that the shapes fit: W1 (K, 784, H), b1 (K, H), W2 (K, H, C), b2 (K, C)."""
    missing = [k for k in network.PARAM_NAMES if k not in model]
    if missing:
        raise PipelineError(f"the saved model lacks {', '.join(missing)}")
    shapes = {k: model[k].shape for k in network.PARAM_NAMES}
    w1, w2 = shapes["W1"], shapes["W2"]
    if len(w1) != 3 or len(w2) != 3 or shapes != {
            "W1": w1, "b1": (w1[0], w1[2]), "W2": (w1[0], w1[2], w2[2]), "b2": (w1[0], w2[2])}:
        found = ", ".join(f"{name} {shape}" for name, shape in shapes.items())
        raise PipelineError(f"the saved model's arrays do not fit together ({found})")
    return [{k: model[k][i] for k in network.PARAM_NAMES} for i in range(len(model["W1"]))]


def load(path) -> list[dict[str, np.ndarray]]:
    """The networks saved by train in `path`, checked to fit together and to hold
    finite weights."""
    model = artifacts.load_arrays(path, "train")
    try:
        nets = members(model)
    except PipelineError as exc:
        raise PipelineError(f"{path}: {exc}: retrain with `python run.py train --force`") \
            from None
    bad = [k for k in network.PARAM_NAMES if not np.isfinite(model[k]).all()]
    if bad:
        raise PipelineError(f"{path}: the weights are not finite (NaN or infinity in "
                            f"{', '.join(bad)}): retrain with `python run.py train --force`")
    return nets


# Test-time augmentation: the image and four copies, moved along x and y either way
# (augment.translate's shifts: +1 along x reads the pixel to the right, so the digit
# moves left).
MOVES = ((0.0, 0.0), (1.0, 0.0), (-1.0, 0.0), (0.0, 1.0), (0.0, -1.0))


def shifted_copies(X: np.ndarray, shift: float) -> list[np.ndarray]:
    """The images X (N, side*side), and when shift > 0 their copies with the digit
    moved `shift` pixels left, right, up and down (bilinearly; what moves out is lost,
    zeros move in): 1 or 5 arrays (N, side*side)."""
    if not shift:
        return [X]
    if not len(X):
        return [X] * len(MOVES)
    side = int(round(np.sqrt(X.shape[1])))
    moved = [X]
    for dx, dy in MOVES[1:]:
        by = np.empty((2, len(X)), np.float32)          # (x, y) per image
        by[0], by[1] = dx * shift, dy * shift
        moved.append(augment.translate(X, by, side))
    return moved


def ensemble_proba(nets: list[dict], X: np.ndarray, batch_size: int,
                   tta_shift: float = 0.0) -> np.ndarray:
    """Mean of the members' softmax outputs, (N, 10), over the images X (N, 784) and,
    when tta_shift > 0, their moved copies (`shifted_copies`): test-time augmentation, which
    costs a forward pass per copy and lifted one network's validation accuracy by
    about 0.15 points (docs/accuracy.md)."""
    total = np.zeros((len(X), len(nets[0]["b2"])), np.float32)
    copies = 1
    for start in range(0, len(X), batch_size):
        rows = slice(start, start + batch_size)
        views = shifted_copies(X[rows], tta_shift)      # a batch at a time: bounded memory
        copies = len(views)
        for view in views:
            for params in nets:
                total[rows] += network.predict_proba(params, view, batch_size)
    total /= len(nets) * copies
    return total

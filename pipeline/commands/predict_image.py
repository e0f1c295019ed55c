"""`python run.py predict-image PATH...`: the trained model's three likeliest digits for
each of the user's own images, prepared as MNIST's were (pipeline/images/prepare.py)."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from pipeline import artifacts
from pipeline.errors import PipelineError, printable
from pipeline.images.prepare import SIDE, Prepared, prepare_files, sheet
from pipeline.steps.graph import artifact
from pipeline.training import ensemble

UNSURE = 0.8           # an answer less likely than this is marked unsure


def run(params: dict, paths: list[str], show: bool) -> int:
    """Name the model, then print each image's three likeliest digits; with `show`,
    save the images as the network received them. Returns the exit status: 1 when
    any image could not be read."""
    if not paths:
        raise PipelineError("predict-image: expected one or more image paths (PNG or JPEG)")
    model = artifact(params, "train", "model.npz")
    nets = load_model(model)
    scores = artifact(params, "train", "metrics.json")
    record = artifacts.load_json(scores) if scores.exists() else {}
    accuracy = record.get("val_accuracy")
    # The model's own record, as predict reads it: train.all_rows may have changed since.
    held_out = "" if record.get("val_held_out", True) else ", not held out: train.all_rows=true"
    tta = params["predict.tta_shift"]
    print(f"model: {model} ({len(nets)} network{'s' if len(nets) > 1 else ''}"
          + (f", validation accuracy {100 * accuracy:.2f}%{held_out}" if accuracy else "")
          + (" without test-time augmentation; classifying with it)" if tta and accuracy
             else ")"), flush=True)
    prepared = _prepare([Path(p) for p in paths])
    failed = False
    tops = top_classes(nets, prepared, params["predict.batch_size"], tta_shift=tta)
    for path, item, top in zip(paths, prepared, tops):
        if isinstance(top, PipelineError):
            print(f"error: {printable(str(top))}", file=sys.stderr, flush=True)
            failed = True
        else:
            print(describe(path, top, item.doubts, item.where()), flush=True)
    seen = [p for p in prepared if not isinstance(p, PipelineError)]
    if show and seen:
        where = Path(params["outputs"]) / "predict-image.png"
        with artifacts.atomic_path(where) as tmp:
            sheet(seen).save(tmp, format="PNG")
        crops = "; under each, the page found inside a larger picture" if any(
            p.crop is not None for p in seen) else ""
        print(f"shown: {where} (what the network received, in the order above{crops})",
              flush=True)
    return 1 if failed else 0


def load_model(model_path: Path) -> list[dict]:
    """The saved networks, checked to take 28x28 images."""
    nets = ensemble.load(model_path)
    n_in = nets[0]["W1"].shape[0]
    if n_in != SIDE * SIDE:
        raise PipelineError(f"{model_path} expects {n_in} inputs, not {SIDE * SIDE} "
                            "(28x28 images): retrain with `python run.py --force`")
    return nets


def top_classes(nets: list[dict], prepared: list[Prepared | PipelineError],
                batch_size: int = 4096, k: int = 3,
                tta_shift: float = 0.0) -> list[list[tuple[int, float]] | PipelineError]:
    """The `k` likeliest (class, probability) pairs for each prepared image; errors
    are passed through. tta_shift as predict's (`ensemble.ensemble_proba`)."""
    results = list(prepared)
    good = [i for i, r in enumerate(results) if not isinstance(r, PipelineError)]
    if good:
        probs = ensemble.ensemble_proba(nets, np.stack([results[i].pixels for i in good]),
                                     batch_size, tta_shift)          # (len(good), 10)
        best = np.argsort(-probs, axis=1, kind="stable")[:, :k]     # (len(good), k)
        for row, i in enumerate(good):
            results[i] = [(int(c), float(probs[row, c])) for c in best[row]]
    return results


def classify(model_path: Path, paths: list[Path], batch_size: int = 4096,
             k: int = 3) -> list[list[tuple[int, float]] | PipelineError]:
    """The `k` likeliest (class, probability) pairs for each image in `paths`, or,
    for an image that cannot be read or holds no digit, the error that says why."""
    return top_classes(load_model(model_path), _prepare(paths), batch_size, k)


def _prepare(paths: list[Path]) -> list[np.ndarray | PipelineError]:
    """`prepare_files`, but a FIFO or a device (which would hang when opened) gets its
    error without being opened."""
    refused: dict[int, PipelineError] = {}
    for i, path in enumerate(paths):
        try:
            artifacts.regular_file(path, "an image file")
        except PipelineError as exc:
            refused[i] = exc
        except OSError:
            pass                                  # missing or unreadable: read_grey says so
    kept = iter(prepare_files([p for i, p in enumerate(paths) if i not in refused]))
    return [refused[i] if i in refused else next(kept) for i in range(len(paths))]


def describe(path: Path, top: list[tuple[int, float]], doubts: list[str] = (),
             where: str = "") -> str:
    """One output line: the path, then each class with its probability, rounded
    down so that 99.97% does not read as a certain 100.0%; "unsure" when the
    likeliest class has less than UNSURE, or when the preparation had doubts
    (said after it, however likely the network finds the answer); then where the
    page was found, when inside a larger picture."""
    line = f"{printable(str(path))}: " + "  ".join(
        f"{c} ({np.floor(1000 * p) / 10:.1f}%)" for c, p in top)
    if top[0][1] < UNSURE or doubts:
        line += "  unsure" + "".join(f" ({d})" for d in doubts)
    return line + (f"  [{where}]" if where else "")

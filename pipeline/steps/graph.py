"""The ordered list of steps: what each reads, writes, and which params and code it uses.

A stage is what the user names on the command line (ingest, preprocess, train,
predict, submit, report). Ingest and preprocess each have a train part and a test part,
fingerprinted apart, so a new test.csv never retrains the network.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from pipeline.config.params import SCHEMA
from pipeline.report.figures import FIGURES
from pipeline.steps import ingest, predict, preprocess, report, submit, train

STAGES = ("ingest", "preprocess", "train", "predict", "submit", "report")


@dataclass(frozen=True)
class Step:
    """One fingerprinted unit of work."""

    name: str                                       # "ingest:train", or the stage name
    stage: str                                      # the stage it belongs to
    params: tuple[str, ...]                         # dotted param keys it reads
    code: tuple[str, ...]                           # modules whose source it runs
    deps: Callable[[dict], dict[str, Path]]         # params -> named input files
    outs: Callable[[dict], dict[str, Path]]         # params -> named output files
    run: Callable[[dict, dict, dict], None]         # (params, deps, outs) -> None
    # Files the step keeps while it runs (train's checkpoint), deleted once it is recorded.
    scratch: Callable[[dict], list[Path]] = lambda params: []
    # Outputs that differ from run to run (wall-clock times) and that no step reads:
    # written and cached with the others, but neither compared nor recorded, here or
    # by DVC, so that a rerun making the same bytes leaves every fingerprint as it was.
    volatile: tuple[str, ...] = ()


def code(*modules: str) -> tuple[str, ...]:
    """A step's code, as paths from the project's folder: its modules ("nn/network"
    for pipeline/nn/network.py) and other files by their full name
    ("report/static/draw.js"), plus artifacts.py, through which every step reads
    and writes."""
    return tuple(f"pipeline/{m}" if Path(m).suffix else f"pipeline/{m}.py"
                 for m in modules) + ("pipeline/artifacts.py",)


def artifact(params: dict, stage: str, filename: str) -> Path:
    """Where `stage` keeps `filename`: <outputs>/<stage>/<filename>."""
    return Path(params["outputs"]) / stage / filename


def submission_path(params: dict) -> Path:
    """<outputs>/submission.csv: the file to upload to Kaggle."""
    return Path(params["outputs"]) / "submission.csv"


def metrics_path(params: dict) -> Path:
    """<outputs>/metrics.json: the headline validation metrics, small enough for git
    and `dvc metrics show` (the confusion matrix is in predict/scores.json)."""
    return Path(params["outputs"]) / "metrics.json"


def _data(params: dict) -> tuple[Path, Path, bool]:
    return ingest.resolve_data(params["data.train"], params["data.test"], params["data.sample"])


def _files(stage: str, *names: str) -> Callable[[dict], dict[str, Path]]:
    """outs/deps function for files named `<name>.npy` (or with their own suffix)."""
    def paths(params: dict) -> dict[str, Path]:
        return {Path(n).stem: artifact(params, stage, n if "." in n else n + ".npy")
                for n in names}
    return paths


_ingest_train = _files("ingest", "train_images", "train_labels")
_ingest_test = _files("ingest", "test_images")
_pre_train = _files("preprocess", "train_x", "train_y", "val_x", "val_y")
_pre_test = _files("preprocess", "test_x")
# timing.json holds train's wall-clock times; no later step reads it, so a retrain
# that reproduces the weights stops the cascade.
_train = _files("train", "model.npz", "history.csv", "metrics.json", "timing.json")
_predict = _files("predict", "test_probs", "test_labels", "val_probs", "scores.json")
_report = _files("report", *(f"{name}.png" for name in FIGURES), "index.html")

# Every train.* param is fingerprinted, so a new one can never be silently ignored.
TRAIN_KEYS = tuple(k for k in SCHEMA if k.startswith("train."))

STEPS: tuple[Step, ...] = (
    Step("ingest:train", "ingest", (), code("steps/ingest"),
         deps=lambda p: {"csv": _data(p)[0]}, outs=_ingest_train, run=ingest.run_train),
    Step("ingest:test", "ingest", (), code("steps/ingest"),
         deps=lambda p: {"csv": _data(p)[1]}, outs=_ingest_test, run=ingest.run_test),
    Step("preprocess:train", "preprocess", ("seed", "preprocess.val_fraction"),
         code("steps/preprocess", "training/splits", "images/pixels"),
         deps=_ingest_train, outs=_pre_train, run=preprocess.run_train),
    Step("preprocess:test", "preprocess", (),
         code("steps/preprocess", "training/splits", "images/pixels"),
         deps=_ingest_test, outs=_pre_test, run=preprocess.run_test),
    Step("train", "train", ("seed",) + TRAIN_KEYS,
         code("steps/train", "training/fit", "training/members", "training/crossval",
              "training/splits", "nn/network", "nn/optim", "training/augment", "nn/schedule",
              "training/checkpoint", "nn/metrics", "config/sections", "training/feed",
              "training/threads", "nn/jit"),
         deps=_pre_train, outs=_train, run=train.run,
         scratch=lambda p: [train.checkpoint_path(_train(p)["model"])], volatile=("timing",)),
    Step("predict", "predict", ("predict.batch_size", "predict.tta_shift"),
         code("steps/predict", "training/ensemble", "nn/network", "training/augment",
              "nn/metrics", "nn/jit"),
         deps=lambda p: {"model": _train(p)["model"], "train_metrics": _train(p)["metrics"],
                         "test_x": _pre_test(p)["test_x"],
                         "val_x": _pre_train(p)["val_x"], "val_y": _pre_train(p)["val_y"]},
         outs=lambda p: {**_predict(p), "metrics": metrics_path(p)}, run=predict.run),
    Step("submit", "submit", (), code("steps/submit"),
         deps=lambda p: {"test_labels": _predict(p)["test_labels"]},
         outs=lambda p: {"submission": submission_path(p)}, run=submit.run),
    # Last, so that a failure drawing figures never holds back the submission.
    Step("report", "report", (),
         code("steps/report", "report/figures", "nn/metrics", "training/ensemble", "nn/network",
              "training/augment", "nn/jit", "report/page", "images/prepare", "images/pixels",
              "report/runs_table",
              "report/templates/index.html", "report/templates/panel.html",
              "report/static/report.css", "report/static/draw.css", "report/static/draw.js"),
         deps=lambda p: {"history": _train(p)["history"], "model": _train(p)["model"],
                         "train_metrics": _train(p)["metrics"],
                         "val_x": _pre_train(p)["val_x"], "val_y": _pre_train(p)["val_y"],
                         "val_probs": _predict(p)["val_probs"],
                         "test_labels": _predict(p)["test_labels"], "metrics": metrics_path(p),
                         "scores": _predict(p)["scores"]},
         outs=_report, run=report.run),
)

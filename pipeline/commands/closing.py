"""What a run ends with: the closing lines (accuracy, the submission, the report, what
to do next), and the upload to Kaggle when the submission is up to date."""
from __future__ import annotations

import logging
from pathlib import Path

from pipeline import artifacts
from pipeline.commands import kaggle
from pipeline.config.params import DEFAULTS
from pipeline.engine import journal, runner
from pipeline.errors import PipelineError
from pipeline.report import runs_table
from pipeline.steps import graph
from pipeline.steps.predict import NOT_HELD_OUT

log = logging.getLogger(__name__)

UPLOAD = 'python run.py submit --kaggle "your message"'


def options(params_file: str, overrides: list[str], flags: list[str] = ()) -> str:
    """--params and --set options as shell words: those of a command line, plus
    `flags` (KEY=VALUE) after them, which override them."""
    words = [] if params_file == DEFAULTS else ["--params", params_file]
    for override in [*overrides, *flags]:
        words += ["--set", override]
    return kaggle.shell(words)


def summarize(params: dict, sample: bool, again: str = "") -> None:
    """The closing lines: validation accuracy, the submission, the report and what
    to do next; each flagged when the step that wrote it is behind the params and
    data, and, after a run on the bundled sample, marked as a demo. `again` holds
    the --params and --set options the upload command needs to find the same files."""
    if not log.isEnabledFor(logging.INFO):          # --quiet: no closing lines
        return
    metrics, submission = graph.metrics_path(params), graph.submission_path(params)
    try:
        states = dict(runner.status(params))
    except (PipelineError, OSError):                # the run itself went well: say less
        states = {}

    def behind(step: str) -> str:
        st = states.get(step)
        if st is None or (st.state == "up to date" and not st.reasons):
            return ""
        return (" (out of date: run `python run.py` with the same --params and --set "
                "to update it)")

    demo = " (the bundled sample: a demo, not for upload)" if sample else ""
    model_scores = _read(graph.artifact(params, "train", "metrics.json"))
    if states.get("predict") and states["predict"].state != "up to date" and model_scores:
        # predict has not run for this model: its metrics.json is an earlier run's.
        if model_scores.get("val_accuracy") is not None:
            log.info("validation accuracy: %.2f%% (the model's, from train; run predict for "
                     "its interval)%s", 100 * model_scores["val_accuracy"], behind("train"))
    elif metrics.exists():
        scores = artifacts.load_json(metrics)
        if scores.get("val_accuracy") is not None:
            held_out = "" if scores.get("val_held_out", True) else NOT_HELD_OUT
            ci = scores.get("val_accuracy_ci95")
            wrong = (f", {scores['val_errors']} of {scores['val_rows']} wrong"
                     if {"val_errors", "val_rows"} <= scores.keys() else "")
            interval = (f" (95% interval {100 * ci['low']:.2f}-{100 * ci['high']:.2f}%"
                        f"{wrong})") if ci else ""
            log.info("validation accuracy: %.2f%%%s%s%s", 100 * scores["val_accuracy"],
                     interval, held_out, behind("predict"))
    cv = (model_scores or {}).get("cv")
    if isinstance(cv, dict) and cv.get("mean") is not None:
        log.info("cross-validation: %.2f%% +- %.2f (%s folds, each scoring one network)%s",
                 100 * cv["mean"], 100 * (cv.get("std") or 0), cv.get("folds"), behind("train"))
    if submission.exists():
        log.info("submission: %s%s%s", submission, demo, behind("submit"))
    page = graph.artifact(params, "report", "index.html")
    if page.exists():
        log.info("report: %s (open it in a browser)%s", page, behind("report"))
    if sample:
        log.info("next: put Kaggle's train.csv and test.csv, or digit-recognizer.zip, in %s/ "
                 "and run again (README.md, Getting the data)", Path(params["data.train"]).parent)
    elif submission.exists() and not behind("submit"):
        log.info("next: upload it with `%s`", f"{UPLOAD} {again}".strip())


def _read(path: Path) -> dict | None:
    """A JSON file of metrics, or None when it is missing or unreadable."""
    try:
        found = artifacts.load_json(path)
    except PipelineError:
        return None
    return found if isinstance(found, dict) else None


def upload_if_current(params: dict, message: str, sample: bool) -> None:
    """Upload submission.csv, unless it was made from the bundled sample or a step
    it is made from is out of date."""
    refuse_sample(sample)
    late = [f"{name} ({st.describe()})" for name, st in runner.status(params)
            if name != "report" and st.state == "stale"]
    if late:
        raise PipelineError(f"not uploading: the submission is not up to date with the params "
                            f"and data: {'; '.join(late)}. Run `python run.py` first")
    upload(params, message)


def refuse_sample(sample: bool) -> None:
    """Refuse to upload a submission made from the bundled sample."""
    if sample:
        raise PipelineError("not uploading: this submission was made from the bundled sample, "
                            "a demo; Kaggle scores only its own test.csv (README.md, Getting "
                            "the data)")


def upload(params: dict, message: str, path: Path | None = None) -> None:
    """Upload submission.csv (or `path`, a blend's) as it is, naming the run of the
    runs log that made it, and log the upload (time, message, the submission's hash)
    under that run."""
    path = path or graph.submission_path(params)
    digest = artifacts.file_hash(path) if path.exists() else None
    found = runs_table.logged_runs(params["outputs"])
    made = [r for r in found if digest and r.get("submission") == digest]
    if made:
        log.info("uploading run %d's submission (%s): %s", made[-1]["run"],
                 describe_run(made[-1]), path)
    kaggle.upload(path, message)
    if digest:
        journal.log_upload(params["outputs"], message, digest,
                           made[-1]["run"] if made else None)


def describe_run(run: dict) -> str:
    """A run in a few words: its time, validation figure and the settings it changed."""
    parts = [(run.get("time") or "")[:16].replace("T", " ")]
    if run.get("event") == "blend":
        parts.append(f"a blend of runs {', '.join(map(str, run.get('runs', [])))}")
    if run.get("val_accuracy") is not None:
        parts.append(f"validation accuracy {100 * run['val_accuracy']:.2f}%")
    cv = run.get("cv")
    if isinstance(cv, dict) and cv.get("mean") is not None:
        parts.append(f"cross-validated {100 * cv['mean']:.2f}%")
    changed = [f"{k}={v}" for k, v in (run.get("changed") or {}).items()
               if k != "outputs" and not k.startswith("data.")]
    if run.get("params_file") not in (None, DEFAULTS):
        changed.insert(0, f"--params {run['params_file']}")
    parts.append(", ".join(changed) if changed else "the params file's settings")
    return "; ".join(p for p in parts if p)

"""What a run ends with: the closing lines (accuracy, the submission, the report, what
to do next), and the upload to Kaggle when the submission is up to date."""
from __future__ import annotations

import logging
from pathlib import Path

from pipeline import artifacts
from pipeline.commands import kaggle
from pipeline.config.params import DEFAULTS
from pipeline.engine import runner
from pipeline.errors import PipelineError
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
    if metrics.exists():
        scores = artifacts.load_json(metrics)
        if scores.get("val_accuracy") is not None:
            held_out = "" if scores.get("val_held_out", True) else NOT_HELD_OUT
            ci = scores.get("val_accuracy_ci95")
            interval = (f" (95% interval {100 * ci['low']:.2f}-{100 * ci['high']:.2f}%, "
                        f"{scores['val_errors']} of {scores['val_rows']} wrong)") if ci else ""
            log.info("validation accuracy: %.2f%%%s%s%s", 100 * scores["val_accuracy"],
                     interval, held_out, behind("predict"))
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


def upload_if_current(params: dict, message: str, sample: bool) -> None:
    """Upload submission.csv, unless it was made from the bundled sample or a step
    it is made from is out of date."""
    if sample:
        raise PipelineError("not uploading: this submission was made from the bundled sample, "
                            "a demo; Kaggle scores only its own test.csv (README.md, Getting "
                            "the data)")
    late = [f"{name} ({st.describe()})" for name, st in runner.status(params)
            if name != "report" and st.state == "stale"]
    if late:
        raise PipelineError(f"not uploading: the submission is not up to date with the params "
                            f"and data: {'; '.join(late)}. Run `python run.py` first")
    kaggle.upload(graph.submission_path(params), message)

"""`python run.py blend N M ...`: average earlier runs' class probabilities into a
submission of its own, recorded in the runs log as a run.

Each run's model comes from the run cache (or is the one in place), checked against
the hash the runs log holds, and gives its probabilities with its own predict
settings; so the blend needs no retraining. The runs must share their validation rows
and their test rows (the hashes the log holds), and the preprocessed rows in the
outputs folder must be theirs: otherwise the average would mix other images, and the
blend is refused with one line saying which runs differ.
"""
from __future__ import annotations

import hashlib
import io
import logging
from pathlib import Path

import numpy as np

from pipeline import artifacts
from pipeline.engine import cache, journal
from pipeline.errors import PipelineError
from pipeline.nn import metrics
from pipeline.report import runs_table
from pipeline.steps import graph, submit
from pipeline.training import ensemble

log = logging.getLogger(__name__)

FOLDER = "blend"            # <outputs>/blend/: the blend's submission.csv and metrics.json


def submission_path(params: dict) -> Path:
    """<outputs>/blend/submission.csv: the latest blend's submission."""
    return graph.artifact(params, FOLDER, "submission.csv")


def _numbers(words: list[str], count: int) -> list[int]:
    if len(words) < 2 or not all(w.isdigit() for w in words) or len(set(words)) != len(words):
        raise PipelineError("blend: expected two or more run numbers, each once, such as "
                            "`python run.py blend 3 5 8` (`python run.py runs` lists them)")
    numbers = [int(w) for w in words]
    missing = [n for n in numbers if not 1 <= n <= count]
    if missing:
        have = f"runs 1-{count}" if count else "no runs yet"
        raise PipelineError(f"blend: no run {missing[0]} in the runs log ({have})")
    return numbers


def _same_rows(chosen: list[dict], here: dict[str, str]) -> None:
    """Refuse runs validated or tested on other rows than each other, or than the
    preprocessed rows in the outputs folder (`here`)."""
    for run in chosen:
        if run.get("event") == "blend":
            raise PipelineError(f"blend: run {run['run']} is a blend itself; name the runs "
                                f"it blends ({'+'.join(map(str, run.get('runs', [])))})")
        if not {"val_x", "val_y", "test_x"} <= (run.get("rows") or {}).keys():
            raise PipelineError(f"blend: run {run['run']} was logged before the runs log kept "
                                "the rows it was validated and tested on; restore it "
                                f"(`python run.py restore {run['run']}`) to log it again")
    first = chosen[0]
    for what, names in (("validation rows", ("val_x", "val_y")), ("test rows", ("test_x",))):
        for run in chosen[1:]:
            if any(run["rows"][n] != first["rows"][n] for n in names):
                raise PipelineError(
                    f"blend: runs {first['run']} and {run['run']} have different {what} (other "
                    "data, seed or preprocess.val_fraction), so their probabilities cannot be "
                    "averaged row by row")
        if any(here.get(n) != first["rows"][n] for n in names):
            raise PipelineError(
                f"blend: the {what} in the outputs folder are not those of run "
                f"{first['run']}: run `python run.py restore {first['run']}` first, so that "
                "they are")


def _model(params: dict, run: dict) -> list[dict]:
    """Run `run`'s networks: from the model in place when it is that run's, else from
    the run cache, checked against the hash the runs log holds."""
    in_place = graph.artifact(params, "train", "model.npz")
    if in_place.exists() and artifacts.file_hash(in_place) == run.get("model"):
        data = in_place.read_bytes()
    else:
        train = next(s for s in graph.STEPS if s.name == "train")
        files = cache.load(params["outputs"], "train", str(run.get("key")), train.outs(params))
        data = None if files is None else files["model"]
        if data is None or hashlib.sha256(data).hexdigest() != run.get("model"):
            raise PipelineError(
                f"blend: run {run['run']}'s model is not in the run cache (evicted, cleared, "
                f"or replaced by a --force retrain); `python run.py restore {run['run']}` says "
                "how to get it back")
    with np.load(io.BytesIO(data)) as arrays:
        return ensemble.members(dict(arrays))


def blend(params: dict, words: list[str]) -> Path:
    """Average the test and validation probabilities of the runs named in `words`,
    each with its own predict settings; write <outputs>/blend/submission.csv and
    metrics.json, and log the blend as a run. Returns the submission's path."""
    found = runs_table.logged_runs(params["outputs"])
    chosen = [found[n - 1] for n in _numbers(words, len(found))]
    paths = {n: graph.artifact(params, "preprocess", f"{n}.npy")
             for n in ("val_x", "val_y", "test_x")}
    here = {n: artifacts.file_hash(p) for n, p in paths.items() if p.exists()}
    _same_rows(chosen, here)
    test_x = artifacts.load_array(paths["test_x"], "preprocess")      # (M, 784)
    val_x = artifacts.load_array(paths["val_x"], "preprocess")        # (N_val, 784)
    val_y = artifacts.load_array(paths["val_y"], "preprocess")        # (N_val,)
    test_probs, val_probs = [], []
    for run in chosen:
        nets = _model(params, run)
        # The run's own predict settings (this command line's where its line lacks one).
        settings = {**params, **run.get("params", {})}
        batch, shift = settings["predict.batch_size"], settings["predict.tta_shift"]
        test_probs.append(ensemble.ensemble_proba(nets, test_x, batch, shift))   # (M, 10)
        val_probs.append(ensemble.ensemble_proba(nets, val_x, batch, shift))     # (N_val, 10)
    test_mean, val_mean = np.mean(test_probs, axis=0), np.mean(val_probs, axis=0)
    scores = metrics.summary(val_mean, val_y)
    held_out = all(run.get("val_held_out", True) for run in chosen)
    out = submission_path(params)
    with artifacts.renames_together():
        artifacts.write_text(out, submit.submission_text(test_mean.argmax(axis=1)))
        artifacts.write_json(out.with_name("metrics.json"),
                             {**scores, "val_held_out": held_out,
                              "runs": [r["run"] for r in chosen]})
    submit.check_submission(out, len(test_x))
    numbers = [r["run"] for r in chosen]
    journal.log_blend(params["outputs"], {
        "runs": numbers, "val_accuracy": scores.get("val_accuracy"),
        "val_accuracy_ci95": scores.get("val_accuracy_ci95"), "val_held_out": held_out,
        "submission": artifacts.file_hash(out), "path": str(out),
        "rows": chosen[0]["rows"]})
    ci = scores.get("val_accuracy_ci95") or {}
    log.info("blend of runs %s: validation accuracy %.2f%% (95%% interval %.2f-%.2f%%; the "
             "runs alone: %s)", ", ".join(map(str, numbers)), 100 * scores["val_accuracy"],
             100 * ci.get("low", 0), 100 * ci.get("high", 0),
             ", ".join(f"{100 * r['val_accuracy']:.2f}%" for r in chosen
                       if r.get("val_accuracy") is not None))
    log.info("submission: %s (upload it with `python run.py blend %s --kaggle \"your "
             "message\"`, or `python run.py submit --kaggle \"your message\"` while it is the "
             "last run)", out, " ".join(map(str, numbers)))
    return out

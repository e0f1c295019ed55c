"""Writing the runs log (pipeline/report/runs_table.py reads it back): one line for
each train, predict and submit step the runner finishes, and for each upload and note.

The log is only appended to, one `os.write` of a whole line on a file opened with
O_APPEND: a killed run leaves whole lines, at most a torn last one, which is skipped
with a warning when read (and the next line starts on a line of its own).
"""
from __future__ import annotations

import json
import os
import stat
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

from pipeline import artifacts
from pipeline.engine import cache
from pipeline.errors import PipelineError
from pipeline.report.runs_table import EVENTS, log_path


def append(path: Path, entry: dict) -> None:
    """Add `entry` to the log as one line, in one write."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data = (json.dumps(entry, sort_keys=True) + "\n").encode("utf-8")
    try:
        # O_NOFOLLOW: a runs.jsonl that is a symlink (planted to make the log append to
        # another file, such as ~/.bashrc) is refused, not written through.
        fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK,
                     0o666)
    except OSError:
        if path.is_symlink():
            raise PipelineError(f"{path}: expected the runs log as a file, found a symlink "
                                "(not written through: remove it)") from None
        raise
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise PipelineError(f"{path}: expected the runs log as a file, found "
                                f"{artifacts.file_kind(mode)}")
        end = os.fstat(fd).st_size
        if end and os.pread(fd, 1, end - 1) != b"\n":      # a torn last line: start anew
            data = b"\n" + data
        while data:                                         # one write, unless the disk fills
            data = data[os.write(fd, data):]
    finally:
        os.close(fd)


class Journal:
    """Writes the runs log as the runner finishes steps, for one command line: the
    params file it named and what its params.local.yaml and --set changed.

    A command line that changes any output is one run: the first line it writes
    (train's, or predict's when the model was already in place) opens the run with
    every param and the model's figures; its later lines name the run by `command`,
    an id of this command line, so that they are never credited to another run."""

    def __init__(self, params_file: str, changed: dict[str, Any]):
        self.params_file = params_file
        self.changed = changed
        self.command = uuid.uuid4().hex[:16]
        self.opened = False

    def step_done(self, params: dict, step: str, record: dict, records: dict,
                  restored: bool, files: dict[str, Path]) -> None:
        """Called once `step`'s record is written; `records` holds every step's;
        `files` names the step's outputs (timing.json among them, which no record
        holds)."""
        if step not in EVENTS:
            return
        model = ((records.get("train") or {}).get("outs", {}).get("model") or {}).get("hash")
        entry: dict[str, Any] = {"event": step, "model": model, "command": self.command,
                                 "time": now()}
        outs = record["outs"]
        if not self.opened and records.get("train"):
            entry.update(params_file=self.params_file, changed=self.changed, params=params,
                         restored=step == "train" and restored,
                         **model_fields(records["train"]), rows=row_hashes(records))
            self.opened = True
        if step == "predict":
            scores = artifacts.load_json(Path(outs["metrics"]["path"]))
            # What the submission was made with (test-time augmentation included); read
            # with care, as metrics.json's shape may grow: a figure it lacks leaves the
            # model's own in place.
            entry.update({k: scores[k] for k in ("val_accuracy", "val_accuracy_ci95")
                          if isinstance(scores, dict) and scores.get(k) is not None})
        elif step == "submit":
            entry["submission"] = outs["submission"]["hash"]
        append(log_path(params["outputs"]), entry)


def now() -> str:
    """The local time with its UTC offset, to the second."""
    return datetime.now().astimezone().isoformat("T", "seconds")


def model_fields(train_record: dict) -> dict[str, Any]:
    """What a run's line says of its model, from train's record and files: its cache
    key, validation figures, members, epochs, train seconds and cross-validation."""
    outs = train_record["outs"]
    scores = artifacts.load_json(Path(outs["metrics"]["path"]))
    try:
        # timing.json is in no record (its clock would make every rerun differ): beside
        # the metrics.
        timing = artifacts.load_json(Path(outs["metrics"]["path"]).with_name("timing.json"))
    except PipelineError:
        timing = {}
    fields = {"key": cache.key(train_record), "val_accuracy": scores.get("val_accuracy"),
              "val_held_out": scores.get("val_held_out", True),
              "members": scores.get("members"), "epochs": scores.get("epochs"),
              "train_seconds": timing.get("train_seconds")}
    cv = scores.get("cv")
    if isinstance(cv, dict):
        fields["cv"] = {k: cv.get(k) for k in ("folds", "mean", "std", "accuracy", "networks")
                        if k in cv}
    return fields


def row_hashes(records: dict) -> dict[str, str]:
    """The hashes of the rows a run was validated and tested on (preprocess's val_x,
    val_y and test_x), so that `blend` can tell whether two runs' rows are the same."""
    found = {}
    for step, names in (("preprocess:train", ("val_x", "val_y")), ("preprocess:test", ("test_x",))):
        outs = (records.get(step) or {}).get("outs", {})
        found.update({n: outs[n]["hash"] for n in names if n in outs})
    return found


def log_blend(outputs: str | Path, entry: dict) -> None:
    """Log a blend of earlier runs (`pipeline/commands/blend.py`): a run of its own."""
    append(log_path(outputs), {"event": "blend", "time": now(), **entry})


def log_upload(outputs: str | Path, message: str, submission: str, run: int) -> None:
    """Log an upload to Kaggle of the submission with hash `submission`, made by `run`."""
    append(log_path(outputs), {"event": "upload", "time": now(), "message": message,
                               "submission": submission, "run": run})


def log_note(outputs: str | Path, run: int, text: str) -> None:
    """Log a note on `run` (a leaderboard score, a thought)."""
    append(log_path(outputs), {"event": "note", "time": now(), "run": run, "text": text})

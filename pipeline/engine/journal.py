"""Writing the runs log (pipeline/report/runs_table.py reads it back): one line for
each train, predict and submit step the runner finishes.

The log is only appended to, one `os.write` of a whole line on a file opened with
O_APPEND: a killed run leaves whole lines, at most a torn last one, which is skipped
with a warning when read (and the next line starts on a line of its own).
"""
from __future__ import annotations

import json
import os
import stat
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
    params file it named and what its params.local.yaml and --set changed."""

    def __init__(self, params_file: str, changed: dict[str, Any]):
        self.params_file = params_file
        self.changed = changed

    def step_done(self, params: dict, step: str, record: dict, records: dict,
                  restored: bool, files: dict[str, Path]) -> None:
        """Called once `step`'s record is written; `records` holds every step's;
        `files` names the step's outputs (timing.json among them, which no record
        holds)."""
        if step not in EVENTS:
            return
        model = ((records.get("train") or {}).get("outs", {}).get("model") or {}).get("hash")
        entry: dict[str, Any] = {"event": step, "model": model,
                                 "time": datetime.now().astimezone().isoformat("T", "seconds")}
        outs = record["outs"]
        if step == "train":
            scores = artifacts.load_json(Path(outs["metrics"]["path"]))
            timing = artifacts.load_json(files["timing"])
            entry.update(params_file=self.params_file, changed=self.changed, params=params,
                         key=cache.key(record), restored=restored,
                         val_accuracy=scores.get("val_accuracy"),
                         val_held_out=scores.get("val_held_out", True),
                         members=scores.get("members"), epochs=scores.get("epochs"),
                         train_seconds=timing.get("train_seconds"))
        elif step == "predict":
            scores = artifacts.load_json(Path(outs["metrics"]["path"]))
            entry.update(val_accuracy=scores.get("val_accuracy"),
                         val_accuracy_ci95=scores.get("val_accuracy_ci95"))
        else:
            entry["submission"] = outs["submission"]["hash"]
        append(log_path(params["outputs"]), entry)

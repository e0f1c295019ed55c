"""The runs log read back as a table: what was tried, and how well it did (MLflow's
runs table and DVC's `dvc exp show`, without a server). The report shows it, and so
does `python run.py runs`; pipeline/engine/journal.py writes the log.

<outputs>/runs.jsonl gets one JSON line each time train finishes, trained or restored
from the run cache: a run. Its line holds the time, the params file, the params this
command line changed in it (params.local.yaml and --set), every param, the validation
accuracy, members, epochs, train seconds, and the key of its cache entry. Later lines
from predict and submit add the accuracy's 95% interval and the submission's hash to
the latest run with the same model. A torn last line (a run killed while writing it)
is skipped with a warning.
"""
from __future__ import annotations

import csv
import io
import json
import logging
from pathlib import Path
from typing import Any

from pipeline import artifacts

log = logging.getLogger(__name__)

LOG = "runs.jsonl"
EVENTS = ("train", "predict", "submit")          # the steps that write a line
# Columns shown whatever their values; the others are left out when the same in every run.
ALWAYS = ("run", "time", "val_accuracy", "ci95_low", "ci95_high", "best", "train_seconds",
          "submission")


def log_path(outputs: str | Path) -> Path:
    """<outputs>/runs.jsonl."""
    return Path(outputs) / LOG


def read(path: Path) -> list[dict]:
    """The log's lines, in order; one that is not a whole record (a run killed while
    writing it) is skipped with a warning."""
    try:
        artifacts.regular_file(path, "the runs log, a file of JSON lines")
        text = path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return []
    entries = []
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
        except ValueError:
            entry = None
        if not isinstance(entry, dict) or entry.get("event") not in EVENTS:
            log.warning("%s, line %d: not a whole record (a run killed while writing it?): "
                        "skipped", path, number)
            continue
        entries.append(entry)
    return entries


def runs(entries: list[dict]) -> list[dict]:
    """One dict per train line, numbered from 1 as "run", with what the predict and
    submit lines after it added (the latest run with the same model gets them)."""
    found: list[dict] = []
    for entry in entries:
        if entry["event"] == "train":
            found.append({**entry, "run": len(found) + 1})
            continue
        same = [r for r in found if r.get("model") == entry.get("model")]
        if same:
            added = {k: v for k, v in entry.items() if k not in ("event", "time", "model")}
            same[-1].update(added)
    return found


def _same(values: list) -> bool:
    return len({json.dumps(v, sort_keys=True) for v in values}) <= 1


def rows(found: list[dict]) -> list[dict[str, Any]]:
    """One row per run, newest last, with the columns: run, time, params_file, the
    params, val_accuracy, ci95_low, ci95_high, val_held_out, best (the best held-out
    accuracy, ties all marked), train_seconds, members, epochs, restored, submission.
    Columns other than ALWAYS are left out when they hold the same value in every run;
    values are as logged (accuracy a fraction, the submission's full hash)."""
    keys = list(dict.fromkeys(k for r in found for k in r.get("params", {})))
    held_out = [r["val_accuracy"] for r in found
                if r.get("val_held_out", True) and r.get("val_accuracy") is not None]
    best = max(held_out, default=None)
    rows = []
    for r in found:
        ci = r.get("val_accuracy_ci95") or {}
        rows.append({
            "run": r["run"], "time": r.get("time"), "params_file": r.get("params_file"),
            **{k: r.get("params", {}).get(k) for k in keys},
            "val_accuracy": r.get("val_accuracy"), "ci95_low": ci.get("low"),
            "ci95_high": ci.get("high"), "val_held_out": r.get("val_held_out", True),
            "best": best is not None and r.get("val_held_out", True)
            and r.get("val_accuracy") == best,
            "train_seconds": r.get("train_seconds"), "members": r.get("members"),
            "epochs": r.get("epochs"), "restored": bool(r.get("restored")),
            "submission": r.get("submission"),
        })
    shown = [c for c in (rows[0] if rows else ())
             if c in ALWAYS or not _same([row[c] for row in rows])]
    return [{c: row[c] for c in shown} for row in rows]


def load_table(outputs: str | Path) -> list[dict[str, Any]]:
    """`rows` of the outputs folder's log: what `python run.py runs` shows."""
    return rows(runs(read(log_path(outputs))))


def _cell(column: str, row: dict) -> str:
    """One value of the table as text."""
    value = row[column]
    if value is None:
        return ""
    if column == "time":
        return value[:16].replace("T", " ")                # minutes, local time
    if column == "val_accuracy":
        text = f"{100 * value:.2f}%"
        if row["ci95_low"] is not None:
            text += f" ({100 * row['ci95_low']:.2f}-{100 * row['ci95_high']:.2f})"
        if not row.get("val_held_out", True):
            text += " not held out"
        return text + (" *" if row["best"] else "")
    if column == "restored":
        return "restored" if value else ""
    if column == "submission":
        return value[:10]
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def cells(rows: list[dict]) -> tuple[list[str], list[list[str]]]:
    """The table as text: (header, one list of cells per row), for the terminal and
    the report page. Accuracy and its interval share a cell, marked * when best."""
    merged = ("ci95_low", "ci95_high", "val_held_out", "best")
    columns = [c for c in (rows[0] if rows else ()) if c not in merged]
    names = {"params_file": "params file", "val_accuracy": "val accuracy (95% interval)",
             "train_seconds": "train s"}
    return ([names.get(c, c) for c in columns],
            [[_cell(c, row) for c in columns] for row in rows])


def format_table(rows: list[dict]) -> str:
    """The table as aligned plain text, with a line saying what * marks."""
    header, body = cells(rows)
    widths = [max(len(x) for x in column) for column in zip(header, *body)]
    lines = ["  ".join(x.ljust(w) for x, w in zip(line, widths)).rstrip()
             for line in [header, *body]]
    if any(row["best"] for row in rows):
        lines.append("* the best held-out validation accuracy")
    return "\n".join(lines) + "\n"


def format_csv(rows: list[dict]) -> str:
    """The table as CSV, values as logged, for a spreadsheet."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(rows[0]) if rows else ["run"],
                            lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()

"""The runs log read back as a table: what was tried, and how well it did (MLflow's
runs table and DVC's `dvc exp show`, without a server). The report shows it, and so
does `python run.py runs`; pipeline/engine/journal.py writes the log.

<outputs>/runs.jsonl gets a line each time train, predict or submit finishes. Each
command line that changes an output is a run: its first line holds the time, the params
file, the params this command line changed in it (params.local.yaml and --set), every
param, the model's figures (validation accuracy, members, epochs, train seconds,
cross-validation) and the key of its cache entry; its later lines, naming the same
command line, add predict's figure and interval and the submission's hash. Uploads and
notes have lines of their own. A torn last line (a run killed while writing it) is
skipped with a warning.
"""
from __future__ import annotations

import csv
import io
import json
import logging
import textwrap
from pathlib import Path
from typing import Any

from pipeline import artifacts

log = logging.getLogger(__name__)

LOG = "runs.jsonl"
EVENTS = ("train", "predict", "submit")          # the steps that write a line
KINDS = EVENTS + ("upload", "note", "blend")     # every kind of line
# Columns shown whatever their values; the others are left out when the same in every run.
ALWAYS = ("run", "time", "val_accuracy", "ci95_low", "ci95_high", "best", "train_seconds",
          "submission")
WHEN_ANY = ("blend", "cv", "uploaded", "note")   # shown when any run has one


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
        if not isinstance(entry, dict) or entry.get("event") not in KINDS:
            log.warning("%s, line %d: not a whole record (a run killed while writing it?): "
                        "skipped", path, number)
            continue
        entries.append(entry)
    return entries


def runs(entries: list[dict]) -> list[dict]:
    """One dict per run, numbered from 1 as "run": a line holding `params` opens a run
    (train's, or predict's when the model was in place); the predict and submit lines
    of the same command line add to it. Uploads go to the latest run with the
    submission they sent, notes to the run they name. (Logs written before lines named
    their command line: the latest run with the same model gets a predict or submit.)"""
    found: list[dict] = []
    for entry in entries:
        event = entry["event"]
        if (event in ("train", "predict", "submit") and isinstance(entry.get("params"), dict)) \
                or event == "blend":
            found.append({**entry, "run": len(found) + 1})
        elif event in ("predict", "submit"):
            if entry.get("command"):
                same = [r for r in found if r.get("command") == entry["command"]]
            else:
                same = [r for r in found if r.get("model") == entry.get("model")]
            if same:
                added = {k: v for k, v in entry.items()
                         if k not in ("event", "time", "model", "command")}
                same[-1].update(added)
        elif event == "upload":
            same = [r for r in found if r.get("submission") == entry.get("submission")]
            if same:
                same[-1].setdefault("uploads", []).append(
                    {k: entry.get(k) for k in ("time", "message", "submission")})
        elif event == "note":
            number = entry.get("run")
            if isinstance(number, int) and 1 <= number <= len(found):
                found[number - 1].setdefault("notes", []).append(entry.get("text", ""))
    return found


def _same(values: list) -> bool:
    return len({json.dumps(v, sort_keys=True) for v in values}) <= 1


def figure(value: float | None) -> float | None:
    """An accuracy as compared: train logs the full float, predict one rounded to 6
    digits, so both are compared at 6 digits."""
    return None if value is None else round(float(value), 6)


def _cv_text(r: dict) -> str | None:
    """A run's cross-validated figure, saying when it scored one network of a recipe
    of several (an ensemble, or a distilled student's teachers)."""
    cv = r.get("cv")
    if not isinstance(cv, dict) or cv.get("mean") is None:
        return None
    text = f"{100 * cv['mean']:.2f}% +-{100 * (cv.get('std') or 0):.2f}"
    params = r.get("params", {})
    if cv.get("networks", 1) == 1 and (params.get("train.members", 1) > 1
                                       or params.get("train.distill_temperature", 0)):
        text += " (1 network)"
    return text


def _uploaded(r: dict) -> str | None:
    """The latest upload of a run's submission: its time and message."""
    if not r.get("uploads"):
        return None
    last = r["uploads"][-1]
    count = f" (x{len(r['uploads'])})" if len(r["uploads"]) > 1 else ""
    return f"{(last.get('time') or '')[5:16].replace('T', ' ')} {last.get('message')}{count}"


def rows(found: list[dict]) -> list[dict[str, Any]]:
    """One row per run, newest last, with the columns: run, time, params_file, the
    params, val_accuracy, ci95_low, ci95_high, val_held_out, best (the best held-out
    accuracy, ties all marked), cv, train_seconds, members, epochs, restored,
    submission, uploaded, note. Columns other than ALWAYS are left out when they hold
    the same value in every run; values are as logged (accuracy a fraction, the
    submission's full hash)."""
    keys = list(dict.fromkeys(k for r in found for k in r.get("params", {})))
    blends = [r["run"] for r in found if r.get("event") == "blend"]
    held_out = [figure(r["val_accuracy"]) for r in found
                if r.get("val_held_out", True) and r.get("val_accuracy") is not None]
    best = max(held_out, default=None)
    rows = []
    for r in found:
        ci = r.get("val_accuracy_ci95") or {}
        rows.append({
            "run": r["run"], "time": r.get("time"),
            "blend": "+".join(map(str, r.get("runs", []))) or None,
            "params_file": r.get("params_file"),
            **{k: r.get("params", {}).get(k) for k in keys},
            "val_accuracy": r.get("val_accuracy"), "ci95_low": ci.get("low"),
            "ci95_high": ci.get("high"), "val_held_out": r.get("val_held_out", True),
            "best": best is not None and bool(r.get("val_held_out", True))
            and figure(r.get("val_accuracy")) == best,
            "cv": _cv_text(r),
            "train_seconds": r.get("train_seconds"), "members": r.get("members"),
            "epochs": r.get("epochs"), "restored": bool(r.get("restored")),
            "submission": r.get("submission"), "uploaded": _uploaded(r),
            "note": "; ".join(r.get("notes", [])) or None,
            # The params its params file gives (none changed by --set): not for display.
            "_from_file": [k for k in keys if isinstance(r.get("changed"), dict)
                           and k not in r["changed"]],
        })
    # A blend has no params of its own: its empty cells never make a param's column.
    made = [row for row in rows if row["run"] not in blends]
    shown = [c for c in (rows[0] if rows else ())
             if c in ALWAYS or c.startswith("_")
             or not _same([row[c] for row in (made if c in keys else rows)])
             or (c in WHEN_ANY and any(row[c] is not None for row in rows))]
    return [{c: row[c] for c in shown} for row in rows]


def logged_runs(outputs: str | Path) -> list[dict]:
    """`runs` of the outputs folder's log, numbered from 1."""
    return runs(read(log_path(outputs)))


def load_table(outputs: str | Path) -> list[dict[str, Any]]:
    """`rows` of the outputs folder's log: what `python run.py runs` shows."""
    return rows(logged_runs(outputs))


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


MERGED = ("ci95_low", "ci95_high", "val_held_out", "best")    # parts of the accuracy's cell
NAMES = {"params_file": "params file", "val_accuracy": "val accuracy (95% interval)",
         "train_seconds": "train s", "cv": "cv (mean +-sd)"}
WIDTH = 120                          # the terminal table's width, unless --wide
# Left out first when the table is too wide: the least telling columns, then the
# params from the last one shown (run, time, the figures, submission, uploads and
# notes always stay).
SPARE = ("members", "restored", "epochs", "train_seconds", "params_file")
KEEP = ("run", "time", "blend", "val_accuracy", "cv", "submission", "uploaded", "note")
FIXED = KEEP + SPARE                 # the columns that are not params


def cells(rows: list[dict]) -> tuple[list[str], list[list[str]]]:
    """The table as text: (header, one list of cells per row), for the terminal and
    the report page. Accuracy and its interval share a cell, marked * when best."""
    columns = [c for c in (rows[0] if rows else ()) if c not in MERGED and c[0] != "_"]
    return ([NAMES.get(c, c) for c in columns],
            [[_cell(c, row) for c in columns] for row in rows])


def _short(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _narrow(rows: list[dict], width: int) -> tuple[list[str], list[list[str]], list[str]]:
    """(header, cells, the columns left out) of a table at most `width` characters
    wide where it can be: members once (train.members says it), shorter times, hashes,
    values and notes; if still too wide, the params each row's params file gives left
    out (the params file column names them), params named without their section where
    that is unique, then the SPARE columns and the last params left out until it fits.
    A table that fits names params in full, as --set takes them."""
    columns = [c for c in (rows[0] if rows else ()) if c not in MERGED and c[0] != "_"]
    if "train.members" in columns and "members" in columns:     # the same, twice
        columns.remove("members")
    names = {c: NAMES.get(c, c) for c in columns}
    # Params that each row's params file gives, when the table names the files.
    explained = [c for c in columns if "params_file" in columns and c not in FIXED
                 and all(c in row["_from_file"] for row in rows if not row.get("blend"))]

    def text(c: str, row: dict) -> str:
        if c == "time":
            return _cell(c, row)[5:]                            # the year aside
        if c == "submission":
            return _cell(c, row)[:7]
        if c == "params_file" and row[c]:
            return _short(Path(row[c]).name, 24)                  # the folder aside
        if c in ("uploaded", "note"):
            return _short(_cell(c, row), 24)
        return _short(_cell(c, row), 14) if c not in FIXED else _cell(c, row)

    body = {c: [text(c, row) for row in rows] for c in columns}

    def wide(cols: list[str]) -> int:
        return sum(max(len(names[c]), *(len(x) for x in body[c])) for c in cols) \
            + 2 * (len(cols) - 1)
    left_out = []
    if wide(columns) > width and explained:
        columns = [c for c in columns if c not in explained]
        left_out.append("the params their params file gives")
    if wide(columns) > width:          # params by their key without the section, if unique
        for c in columns:
            bare = c.split(".", 1)[-1]
            if c not in FIXED and sum(bare in (x, x.split(".", 1)[-1]) for x in columns) == 1:
                names[c] = bare
    spare = [c for c in SPARE if c in columns and not (c == "params_file" and explained)] + \
        [c for c in reversed(columns) if c not in FIXED]
    while wide(columns) > width and spare:
        gone = spare.pop(0)
        columns.remove(gone)
        left_out.append(names[gone])
    return ([names[c] for c in columns], [[body[c][i] for c in columns]
                                          for i in range(len(rows))], left_out)


def format_table(rows: list[dict], width: int | None = WIDTH) -> str:
    """The table as aligned plain text, with a line saying what * marks: at most
    `width` characters wide where it can be (see `_narrow`), every column with None."""
    if width is None:
        header, body = cells(rows)
        left_out = []
    else:
        header, body, left_out = _narrow(rows, width)
    widths = [max(len(x) for x in column) for column in zip(header, *body)]
    lines = ["  ".join(x.ljust(w) for x, w in zip(line, widths)).rstrip()
             for line in [header, *body]]
    if any(row["best"] for row in rows):
        lines.append("* the best held-out validation accuracy")
    if left_out:
        lines += textwrap.wrap(f"left out to fit {width} characters: {', '.join(left_out)} "
                               "(`python run.py runs --wide` shows every column)", width)
    return "\n".join(lines) + "\n"


def format_csv(rows: list[dict]) -> str:
    """The table as CSV, values as logged, for a spreadsheet."""
    out = io.StringIO()
    fields = [c for c in rows[0] if c[0] != "_"] if rows else ["run"]
    writer = csv.DictWriter(out, fieldnames=fields, lineterminator="\n", extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()

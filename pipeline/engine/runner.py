"""Running steps in order, skipping those whose fingerprint still matches.

A step's fingerprint, recorded in <outputs>/.records/<step>.json once all of its
outputs are in place, holds the content hashes of the files it read, the values of
the params it reads, a hash of its code, and the hashes of what it wrote. A step
is up to date when all of these still match; a changed upstream output therefore
reruns downstream steps, while a rerun that reproduces the same bytes stops there,
and writes the same record, byte for byte: DVC keeps the records with the outputs
(dvc.yaml), so that outputs it puts back come with the record that vouches for them.
Sizes and modification times, which spare hashing unchanged files again, are kept
apart for that reason (`STATES`).

As with `make TARGET` and `dvc repro TARGET`, running a step first brings every step
it is made from up to date; with `single` (dvc's --single-item) it runs alone and
refuses to build on an upstream step that is not up to date.

A step in `cache.STEPS` (train) whose fingerprint matches one seen before is restored
from the run cache instead of run (not when forced); a journal
(`Journal`), when given, logs the runs.
"""
from __future__ import annotations

import contextlib
import difflib
import hashlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

from pipeline import artifacts, sources
from pipeline.engine import cache, lock
from pipeline.errors import PipelineError, printable
from pipeline.steps.graph import STAGES, STEPS, Step

log = logging.getLogger(__name__)

RECORDS = ".records"
# In RECORDS: the hash, size and modification time of each file last hashed.
STATES = "file-states.json"


@dataclass
class Status:
    """What `check` found for one step."""

    state: str                                  # "up to date", "stale" or "never run"
    reasons: list[str] = field(default_factory=list)

    def describe(self) -> str:
        """"stale: param train.epochs changed (12 -> 5)", or just the state."""
        return self.state + (": " + "; ".join(self.reasons) if self.reasons else "")


def _source(name: str) -> bytes:
    return (sources.ROOT / name).read_bytes()


def code_hash(modules: tuple[str, ...]) -> str:
    """SHA-256 over the source files of `modules` as they are on disk now: what the
    next run will execute, compared with the record by `check`."""
    return hashlib.sha256(b"".join(_source(name) for name in modules)).hexdigest()


def loaded_code_hash(modules: tuple[str, ...]) -> str:
    """The same hash over the sources this process loaded (`sources.LOADED`): the
    code a step run now executes, and so what its record stores."""
    return hashlib.sha256(b"".join(sources.LOADED[name] for name in modules)).hexdigest()


def record_path(params: dict, step: Step) -> Path:
    """Where the step's fingerprint is kept."""
    return Path(params["outputs"]) / RECORDS / (step.name.replace(":", "-") + ".json")


def states_path(params: dict) -> Path:
    """Where the sizes and modification times of hashed files are kept."""
    return Path(params["outputs"]) / RECORDS / STATES


def read_states(params: dict) -> dict[str, dict]:
    """Path -> {"hash", "size", "mtime_ns"} as last hashed; {} when unreadable (every
    file is then simply hashed again)."""
    try:
        states = json.loads(states_path(params).read_text(encoding="utf-8"))
    except (FileNotFoundError, ValueError):
        return {}
    if not isinstance(states, dict):
        return {}
    return {path: state for path, state in states.items()
            if isinstance(state, dict) and {"hash", "size", "mtime_ns"} <= state.keys()}


def read_record(params: dict, step: Step) -> dict | None:
    """The step's last fingerprint, or None when there is none, or it is unreadable
    or not of the shape `run_steps` writes (the step then simply runs again)."""
    try:
        record = json.loads(record_path(params, step).read_text(encoding="utf-8"))
    except (FileNotFoundError, ValueError):
        return None
    if not isinstance(record, dict) or not isinstance(record.get("params", {}), dict):
        return None
    for files in (record.get("deps", {}), record.get("outs", {})):
        if not isinstance(files, dict) or not all(
                isinstance(e, dict) and {"path", "hash"} <= e.keys() for e in files.values()):
            return None
    return record


def producers(params: dict) -> dict[Path, Step]:
    """Which step writes each artifact."""
    return {path: step for step in STEPS for path in step.outs(params).values()}


def upstream(params: dict, step: Step) -> list[Step]:
    """The steps that write this step's inputs."""
    made_by = producers(params)
    names = {made_by[p].name for p in step.deps(params).values() if p in made_by}
    return [s for s in STEPS if s.name in names]


def ancestors(params: dict, step: Step) -> list[Step]:
    """Every step whose outputs this step's inputs are made from, in order."""
    found, todo = set(), [step]
    while todo:
        for up in upstream(params, todo.pop()):
            if up.name not in found:
                found.add(up.name)
                todo.append(up)
    return [s for s in STEPS if s.name in found]


def plan(params: dict, steps: list[Step], single: bool = False) -> list[Step]:
    """The steps a run of `steps` goes through, in order: them and, unless `single`,
    every step they are made from (as `make` and `dvc repro` do)."""
    names = {s.name for s in steps}
    if not single:
        names |= {up.name for s in steps for up in ancestors(params, s)}
    return [s for s in STEPS if s.name in names]


class NotCached(PipelineError):
    """A step that may only be restored from the run cache has no entry there."""


class Runner:
    """Checks and runs the steps for one set of params; `journal`, when given, is
    told of each step done (see `Journal`)."""

    def __init__(self, params: dict, journal=None):
        self.params = params
        self.journal = journal
        self.records = {s.name: read_record(params, s) for s in STEPS}
        # Earlier hashes by path, so that unchanged files are not reread.
        self.known: dict[str, dict] = read_states(params)

    def _state(self, path: Path) -> dict:
        """The file's path and content hash, as a record keeps them."""
        state = artifacts.file_state(path, self.known.get(str(path)))
        self.known[str(path)] = state
        return {"path": str(path), "hash": state["hash"]}

    def check(self, step: Step) -> Status:
        """Compare the step's record with its current inputs, params, code and outputs."""
        record = self.records[step.name]
        if record is None:
            return Status("never run")
        if record.get("format") != artifacts.FORMAT_VERSION:
            return Status("stale", ["written by another version of the pipeline"])
        reasons = []
        if record.get("code") != code_hash(step.code):
            reasons.append("code changed")
        for key in step.params:
            old = record.get("params", {}).get(key, "(unset)")
            if old != self.params[key]:
                reasons.append(f"param {key} changed ({old} -> {self.params[key]})")
        for name, path in step.deps(self.params).items():
            reasons += self._file_changed(path, record.get("deps", {}).get(name),
                                          "input", "changed")
        for name, path in step.outs(self.params).items():
            if name not in step.volatile:
                reasons += self._file_changed(path, record.get("outs", {}).get(name),
                                              "output", "was modified")
        return Status("stale", reasons) if reasons else Status("up to date")

    def _file_changed(self, path: Path, old: dict | None, what: str, changed: str) -> list[str]:
        """Why the `what` ("input", "output") at `path` differs from its record entry
        `old`: [] when it does not."""
        if not path.exists():
            return [f"{what} {path} is missing"]
        if path.is_dir():
            return [f"{what} {path} is a directory"]
        if not path.is_file():                     # a FIFO or a device: never read
            return [f"{what} {path} is not a regular file"]
        if old is None or self._state(path)["hash"] != old["hash"]:
            return [f"{what} {path} {changed}"]
        return []

    def fingerprint(self, step: Step, dep_states: dict) -> dict:
        """The record the step would get, but for its outputs: format, params, the code
        this process loaded, and its inputs' states. The run cache is keyed by it."""
        return {
            "format": artifacts.FORMAT_VERSION,
            "step": step.name,
            "params": {k: self.params[k] for k in step.params},
            "code": loaded_code_hash(step.code),
            "deps": dep_states,
        }

    def in_cache(self, step: Step) -> bool:
        """Whether the run cache has an entry (not yet checked) for the step as it
        would run now."""
        deps = step.deps(self.params)
        if step.name not in cache.STEPS or not all(p.is_file() for p in deps.values()):
            return False
        key = cache.key(self.fingerprint(step, {n: self._state(p) for n, p in deps.items()}))
        return cache.entry_path(self.params["outputs"], step.name, key).is_dir()

    def _check_input(self, path: Path) -> None:
        """Raise PipelineError, saying what to run or where to put it, when an input
        file is missing or a directory."""
        producer = producers(self.params).get(path)
        if path.is_dir():
            raise PipelineError(f"{path}: expected a file, found a directory")
        if not path.exists() and producer:
            raise PipelineError(f"{path} is missing: run `python run.py {producer.stage}` first")
        if not path.exists():                       # a data file
            where = "" if path.is_absolute() else f", relative to {Path.cwd()}"
            raise PipelineError(
                f"{path}: file not found (expected a CSV file there{where}; README.md, "
                "Getting the data, says where to get the competition's files)")

    def _record(self, step: Step, outs: dict[str, Path], dep_states: dict,
                restored: bool) -> None:
        """Once a step's outputs are in place: store them in the run cache (unless
        restored from it), write its record, delete its scratch files, tell the
        journal."""
        # The code that ran is the code loaded at start; an edit since then leaves the
        # record behind the disk, so the next run reruns the step.
        edited = [m for m in step.code if _source(m) != sources.LOADED[m]]
        if edited:
            log.warning("%s: %s changed while this run was going; %s ran the code as "
                        "it was loaded and will rerun on the next run", step.name,
                        ", ".join(edited), step.name)
        record = {**self.fingerprint(step, dep_states),
                  "outs": {name: self._state(path) for name, path in outs.items()
                           if name not in step.volatile}}
        if step.name in cache.STEPS and not restored:
            try:
                cache.store(self.params["outputs"], step.name, cache.key(record), outs,
                            self.params["cache.max_mb"])
            except OSError as exc:          # a full disk: the run itself went well
                log.warning("cache: %s's entry not stored (%s); the run goes on without "
                            "it", step.name, exc.strerror or exc)
        artifacts.write_json(record_path(self.params, step), record)
        self.records[step.name] = record
        for path in step.scratch(self.params):     # not before: a kill would lose it
            path.unlink(missing_ok=True)
        if self.journal is not None:
            self.journal.step_done(self.params, step.name, record, self.records, restored,
                                   outs)

    def run_steps(self, steps: list[Step], forced: tuple[str, ...] = (),
                  retrain: bool = True) -> None:
        """Run steps that read nothing of each other's; their outputs are renamed
        into place together, and only then is each one's fingerprint recorded.

        A step with an intact run cache entry is restored from it, unless named in
        `forced`; new results are stored there. Without `retrain`, a cached step that
        is not in the cache raises NotCached instead of running."""
        outputs = self.params["outputs"]
        started = []
        for step in steps:
            deps, outs = step.deps(self.params), step.outs(self.params)
            for path in deps.values():
                self._check_input(path)
            for folder in {p.parent for p in outs.values()}:
                artifacts.remove_temporaries(folder)
            dep_states = {name: self._state(path) for name, path in deps.items()}
            started.append((step, deps, outs, dep_states))
        restored = set()
        with artifacts.renames_together():
            for step, deps, outs, dep_states in started:
                key = cache.key(self.fingerprint(step, dep_states))
                if step.name in cache.STEPS and step.name not in forced and cache.restore(
                        outputs, step.name, key, outs):
                    restored.add(step.name)
                elif step.name in cache.STEPS and not retrain:
                    raise NotCached(f"{step.name}: no run cache entry for these params, "
                                    "inputs and code")
                else:
                    step.run(self.params, deps, outs)
        for step, _, outs, dep_states in started:
            self._record(step, outs, dep_states, step.name in restored)
        named = {e["path"] for r in self.records.values() if r
                 for e in [*r.get("deps", {}).values(), *r.get("outs", {}).values()]}
        artifacts.write_json(states_path(self.params),
                             {p: s for p, s in self.known.items() if p in named})


def select(stages: list[str], start: str | None,
           commands: dict[str, str] | None = None) -> list[Step]:
    """The steps for the named stages (or `ingest:test`-style step names), or
    from `start` on; every step when neither is given. `commands` (name -> usage)
    are the command line's other commands, named in the messages."""
    commands = commands or {}
    names = list(STAGES) + [s.name for s in STEPS]
    for name in stages + ([start] if start else []):
        if name in commands:
            raise PipelineError(f"'{name}' is a command of its own: `python run.py "
                                f"{commands[name]}`, first and without stage names or --from")
        if name not in names:
            close = difflib.get_close_matches(name, names + list(commands), n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise PipelineError(
                f"unknown stage '{name}'{hint}: expected one of {', '.join(STAGES)}, a step "
                f"such as {STEPS[0].name}, or a command: {', '.join(commands)}")
    if start:
        first = next(i for i, s in enumerate(STEPS) if start in (s.stage, s.name))
        return list(STEPS[first:])
    if not stages:
        return list(STEPS)
    return [s for s in STEPS if s.stage in stages or s.name in stages]


def _ours(path: Path) -> bool:
    """Whether `path`, at the top of an outputs folder without RECORDS/, is the
    pipeline's own: the lock a run takes, the run cache, a run on the sample's
    outputs, the runs log, or the headline metrics.json that git keeps for DVC (a fresh
    clone has it alone)."""
    if path.name in (lock.NAME, cache.FOLDER, ".gitkeep"):
        return True
    if path.name == "sample":
        return (path / RECORDS).is_dir()
    if path.name in ("metrics.json", "runs.jsonl") and path.is_file() and not path.is_symlink():
        with contextlib.suppress(OSError, ValueError, UnicodeDecodeError):
            with open(path, "rb") as f:
                first = json.loads(f.readline(1 << 20))     # the runs log: its first line
            return isinstance(first, dict) and ("val_accuracy" in first or "event" in first)
    return False


def claim_outputs(folder: Path) -> None:
    """Make sure the outputs folder is this pipeline's before anything is written in
    it: one that does not exist yet, is empty, or already holds RECORDS/ (the mark of
    a folder a run has written to; made here first, so a run killed at once still
    leaves it). A folder holding anything else, such as a home folder or another
    tool's results, is refused rather than having its submission.csv or metrics.json
    overwritten. A folder that is not a directory is left to fail where it is used."""
    if (folder / RECORDS).is_dir() or (folder.exists() and not folder.is_dir()):
        return
    if folder.is_dir():
        others = sorted(p.name for p in folder.iterdir() if not _ours(p))
        if others:
            shown = ", ".join(printable(n) for n in others[:3]) + (", ..." if others[3:] else "")
            raise PipelineError(f"{folder}: expected an outputs folder this pipeline made "
                                f"(holding {RECORDS}/) or an empty one, found other files "
                                f"({shown}): name another with --set outputs=PATH")
    (folder / RECORDS).mkdir(parents=True, exist_ok=True)


def run(params: dict, steps: list[Step], force: bool = False, single: bool = False,
        journal=None, retrain: bool = True) -> list[str]:
    """Bring `steps` up to date: first the steps they are made from (unless
    `single`), then each of them that is stale. `force` reruns `steps` themselves
    even when up to date, without the run cache; the steps they are made from still
    run only if stale. `journal` and `retrain` are handed to the Runner and
    `Runner.run_steps`.

    With `single`, raises PipelineError before running a step whose upstream is not
    up to date (stale, never run, or its outputs no longer match their record).
    Returns the names of the steps that ran (or were restored from the run cache).
    """
    claim_outputs(Path(params["outputs"]))
    runner = Runner(params, journal)
    artifacts.remove_temporaries(Path(params["outputs"]) / RECORDS)
    todo = plan(params, steps, single)
    chosen, targets = {s.name for s in todo}, {s.name for s in steps}
    ran = []
    for stage in dict.fromkeys(s.stage for s in todo):      # stage order, each once
        to_run = []
        for step in (s for s in todo if s.stage == stage):
            # Upstream steps in the plan ran (or were found up to date) before this
            # one; any other must be up to date, so no step reads a half-written set.
            for up in (u for u in ancestors(params, step) if u.name not in chosen):
                status = runner.check(up)
                if status.state != "up to date":
                    what = ("has never run" if status.state == "never run"
                            else f"is {status.describe()}")
                    raise PipelineError(
                        f"{step.name} is built on {up.name}, which {what}. Run `python run.py "
                        f"{step.stage}` without --single to bring it up to date first")
            status = runner.check(step)
            forced = force and step.name in targets
            if status.state == "up to date" and not forced:
                log.info("%s: up to date, skipped", step.name)
                continue
            how = "restoring from the run cache" if not forced and runner.in_cache(step) \
                else "running"
            log.info("%s: %s (%s)", step.name, how, "forced" if forced else status.describe())
            to_run.append(step)
        if to_run:
            runner.run_steps(to_run, forced=tuple(s.name for s in to_run if force and
                                                   s.name in targets), retrain=retrain)
            ran += [s.name for s in to_run]
    return ran


def status(params: dict) -> list[tuple[str, Status]]:
    """Each step's status; a step whose upstream will rerun says so."""
    runner = Runner(params)
    result, pending = [], set()
    for step in STEPS:
        st = runner.check(step)
        late = [u.name for u in upstream(params, step) if u.name in pending]
        if st.state == "up to date" and late:
            st = Status("up to date", [f"but {', '.join(late)} will rerun first"])
        if st.state != "up to date" or late:
            pending.add(step.name)
        result.append((step.name, st))
    return result

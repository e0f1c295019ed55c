"""The fingerprint matrix: for every step, each param it reads, each file it reads and
each module of its code makes it stale when changed; anything else leaves it up to date.

What each step reads is written here independently of `pipeline/stages.py`, which is
what is being checked: the params from the signatures of the stage functions, the
input files from docs/pipeline.md's table of stages, the code from the modules each stage's
module imports. The pipeline runs once on tiny data; each test makes its change,
asks `runner.status` and undoes the change. (Not cached across tests: mutmut runs only
the tests that themselves reach the runner's code.)
"""
import ast
import dataclasses
import inspect
import os
import typing
from functools import lru_cache
from pathlib import Path

import pytest
from helpers import ROOT, sample_rows, write_lines

from pipeline.config import params as params_mod
from pipeline.engine import cache, runner
from pipeline.errors import PipelineError
from pipeline.steps import train as train_step
from pipeline.steps.graph import STEPS

NAMES = [s.name for s in STEPS]
BASE = ["train.hidden=8", "train.epochs=1", "data.sample=null"]

# Params a step reads: those its stage function is called with.
STAGE_FUNCTION_ARGS = {"deps", "outs"}


def arguments(function, section: str) -> set[str]:
    """The params `function` takes, as dotted keys of `section`: one per argument, or
    each field of an argument that is a settings dataclass (train_step.train's cfg)."""
    types = typing.get_type_hints(function)
    keys = set()
    for arg in inspect.signature(function).parameters:
        if arg in STAGE_FUNCTION_ARGS | {"seed"}:
            continue
        names = [f.name for f in dataclasses.fields(types[arg])] \
            if dataclasses.is_dataclass(types.get(arg)) else [arg]
        keys |= {f"{section}.{name}" for name in names}
    return keys


READS = {name: set() for name in NAMES}
READS["preprocess:train"] = {"seed", "preprocess.val_fraction"}
READS["train"] = {"seed"} | arguments(train_step.train, "train")
READS["predict"] = {"predict.batch_size", "predict.tta_shift"}

# Every param that is a value rather than a place gets changed; `outputs` and `data.*`
# name files, and changing the files is the input test's business.
PLACES = {"outputs", "data.train", "data.test", "data.sample"}
VALUES = sorted(set(params_mod.SCHEMA) - PLACES)

# Input files, relative to the folder holding data/ and outputs/ (docs/pipeline.md, Stages and artifacts).
INGEST = "outputs/ingest/"
PRE = "outputs/preprocess/"
DEPS = {
    "ingest:train": {"data/train.csv"},
    "ingest:test": {"data/test.csv"},
    "preprocess:train": {INGEST + "train_images.npy", INGEST + "train_labels.npy"},
    "preprocess:test": {INGEST + "test_images.npy"},
    "train": {PRE + f"{name}.npy" for name in ("train_x", "train_y", "val_x", "val_y")},
    "predict": {"outputs/train/model.npz", "outputs/train/metrics.json", PRE + "test_x.npy",
                PRE + "val_x.npy", PRE + "val_y.npy"},
    "submit": {"outputs/predict/test_labels.npy"},
    "report": {"outputs/train/history.csv", "outputs/train/model.npz",
               "outputs/train/metrics.json", PRE + "val_x.npy", PRE + "val_y.npy",
               "outputs/predict/val_probs.npy", "outputs/predict/test_labels.npy",
               "outputs/metrics.json", "outputs/predict/scores.json"},
}

# Code: the pipeline modules a stage's module imports, directly or not, but for the
# error class, the progress display and the record of the loaded sources, which
# change no output.
PACKAGE = ROOT / "pipeline"
MODULES = {".".join(p.relative_to(ROOT).with_suffix("").parts): p.relative_to(ROOT).as_posix()
           for p in PACKAGE.rglob("*.py") if p.stem != "__init__"}
NO_OUTPUT = {"pipeline/errors.py", "pipeline/progress.py", "pipeline/sources.py"}


def imported(module: str) -> set[str]:
    """The pipeline modules `module` imports anywhere in its source."""
    tree = ast.parse((ROOT / MODULES[module]).read_text(encoding="utf-8"))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("pipeline"):
            found.add(node.module)
            found |= {f"{node.module}.{a.name}" for a in node.names}
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("pipeline.")}
    return found & set(MODULES)


def runs(module: str) -> set[str]:
    """The file of `module` and of every pipeline module it imports, recursively."""
    found, todo = set(), [module]
    while todo:
        name = todo.pop()
        if name not in found:
            found.add(name)
            todo += imported(name)
    return {MODULES[name] for name in found}


CODE = {s.name: runs(f"pipeline.steps.{s.stage}") - NO_OUTPUT for s in STEPS}


def load_params(folder: Path, *overrides: str) -> dict:
    return params_mod.load(ROOT / "params.yaml", [
        f"data.train={folder / 'data' / 'train.csv'}", f"data.test={folder / 'data' / 'test.csv'}",
        f"outputs={folder / 'outputs'}", *BASE, *overrides])


@lru_cache(maxsize=None)
def alternative(key: str) -> str:
    """`key=value` with a value other than the base one that params.load accepts:
    the first that fits of a few made from the param's kind, so that a new param
    is covered without a word here."""
    spec, value = params_mod.SCHEMA[key], load_params(Path("/layout"))[key]
    if spec.kind == "bool":
        candidates = [not value]
    elif spec.kind == "choice":
        candidates = [c for c in spec.choices if c != value]
    elif spec.kind == "int":
        candidates = [value + 1, value + 2, value - 1, 2, 3, 10]
    else:
        candidates = [value * 2, value / 2, value + 1e-4, value + 0.1, 0.5, 0.25, 2.0]
    for candidate in candidates:
        text = f"{key}={str(candidate).lower() if spec.kind == 'bool' else candidate}"
        try:
            if load_params(Path("/layout"), text)[key] != value:
                return text
        except PipelineError:
            continue
    raise AssertionError(f"no other value of {key} loads: add one to alternative()")


# Every file a run leaves (records and the run cache aside), named as in DEPS.
_layout = load_params(Path("/layout"))
FILES = sorted({"data/train.csv", "data/test.csv"} | {
    str(path.relative_to("/layout")) for s in STEPS for path in s.outs(_layout).values()})


def outs(params: dict, folder: Path, step_name: str) -> set[str]:
    """The step's outputs that it compares: not timing.json, a new clock on every run."""
    step = next(s for s in STEPS if s.name == step_name)
    return {str(p.relative_to(folder)) for n, p in step.outs(params).items()
            if n not in step.volatile}


class Built:
    """A complete run on tiny data, and the statuses after one change at a time."""

    def __init__(self, folder: Path):
        self.folder = folder
        write_lines(folder / "data" / "train.csv", sample_rows("train.csv.gz", 200))
        write_lines(folder / "data" / "test.csv", sample_rows("test.csv.gz", 30))
        self.params = load_params(folder)
        assert runner.run(self.params, list(STEPS)) == NAMES

    def statuses(self, params: dict | None = None) -> dict[str, runner.Status]:
        return dict(runner.status(params or self.params))

    def after_param(self, key: str) -> dict[str, runner.Status]:
        return self.statuses(load_params(self.folder, alternative(key)))

    def after_file(self, name: str) -> dict[str, runner.Status]:
        """Statuses with one byte of the file changed (its size kept, as an editor
        might leave it), then the file put back as it was, modification time too."""
        path = self.folder / name
        data, stat = path.read_bytes(), path.stat()
        try:
            path.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
            os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10 ** 9))
            return self.statuses()
        finally:
            path.write_bytes(data)
            os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))

    def after_edit(self, module: str) -> dict[str, runner.Status]:
        """Statuses as they would be were `module`'s source edited: the hash of any
        code that includes it changes. No real source file is touched."""
        real = runner.code_hash
        runner.code_hash = lambda mods: real(mods) + ("+edit" if module in mods else "")
        try:
            return self.statuses()
        finally:
            runner.code_hash = real


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    return Built(tmp_path_factory.mktemp("fingerprints"))


def test_a_complete_run_is_up_to_date_and_leaves_the_files_listed_here(built):
    assert {n: s.describe() for n, s in built.statuses().items()} == \
        dict.fromkeys(NAMES, "up to date")
    left = {str(p.relative_to(built.folder)) for p in built.folder.rglob("*")
            if p.is_file() and not {runner.RECORDS, cache.FOLDER} & set(p.parts)}
    assert left == set(FILES)
    assert set().union(*DEPS.values()) <= set(FILES)


@pytest.mark.parametrize("key, notes", [
    ("seed", {"predict": "preprocess:train, train", "submit": "predict",
              "report": "preprocess:train, train, predict"}),
    ("predict.batch_size", {"submit": "predict", "report": "predict"}),
])
def test_status_names_the_upstream_steps_that_will_rerun_first(built, key, notes):
    for step, status in built.after_param(key).items():
        if key in READS[step]:
            continue
        note = f": but {notes[step]} will rerun first" if step in notes else ""
        assert status.describe() == "up to date" + note, step


def test_every_value_param_has_another_value_that_loads():
    assert READS["train"] <= set(VALUES)
    for key in VALUES:
        assert alternative(key)


@pytest.mark.parametrize("key", VALUES)
@pytest.mark.parametrize("step", NAMES)
def test_a_param_makes_a_step_stale_exactly_when_the_step_reads_it(built, step, key):
    status = built.after_param(key)[step]
    if key in READS[step]:
        new = load_params(built.folder, alternative(key))[key]
        assert status.describe() == f"stale: param {key} changed ({built.params[key]} -> {new})", \
            f"{step} ignores a change of {key}"
    else:
        assert status.state == "up to date", f"{step} does not read {key}: {status.describe()}"


@pytest.mark.parametrize("name", FILES)
@pytest.mark.parametrize("step", NAMES)
def test_a_file_makes_a_step_stale_exactly_when_the_step_reads_or_writes_it(built, step, name):
    status = built.after_file(name)[step]
    path = built.folder / name
    if name in DEPS[step]:
        assert status.describe() == f"stale: input {path} changed", \
            f"{step} ignores a change of its input {name}"
    elif name in outs(built.params, built.folder, step):
        assert status.describe() == f"stale: output {path} was modified", \
            f"{step} ignores a change of its output {name}"
    else:
        assert status.state == "up to date", f"{step} does not read {name}: {status.describe()}"
    # Put back as it was, the file leaves every step up to date again.
    assert built.statuses()[step].state == "up to date"


@pytest.mark.parametrize("module", MODULES)
@pytest.mark.parametrize("step", NAMES)
def test_a_module_makes_a_step_stale_exactly_when_the_step_runs_it(built, step, module):
    status = built.after_edit(module)[step]
    if module in CODE[step]:
        assert status.describe() == "stale: code changed", f"{step} ignores an edit of {module}"
    else:
        assert status.state == "up to date", f"{step} does not run {module}: {status.describe()}"


@pytest.mark.parametrize("name", ["outputs/preprocess/val_x.npy", "data/test.csv"])
@pytest.mark.parametrize("how", ["missing", "a directory"])
def test_a_missing_file_or_a_directory_in_its_place_makes_its_steps_stale(built, name, how):
    path = built.folder / name
    moved = path.with_name(path.name + ".away")
    path.rename(moved)
    try:
        if how == "a directory":
            path.mkdir()
        statuses = built.statuses()
    finally:
        if path.is_dir():
            path.rmdir()
        moved.rename(path)
    for step in NAMES:
        if name in DEPS[step]:
            assert statuses[step].describe() == f"stale: input {path} is {how}", step
        elif name in outs(built.params, built.folder, step):
            assert statuses[step].describe() == f"stale: output {path} is {how}", step
        else:
            assert statuses[step].state == "up to date", step


def edited_record(built, step_name: str, edit) -> runner.Status:
    """The step's status with its record changed by `edit(record)`, then put back."""
    step = next(s for s in STEPS if s.name == step_name)
    path = runner.record_path(built.params, step)
    text = path.read_text()
    record = __import__("json").loads(text)
    edit(record)
    path.write_text(__import__("json").dumps(record))
    try:
        return built.statuses()[step_name]
    finally:
        path.write_text(text)


def test_a_record_of_another_format_is_stale(built):
    status = edited_record(built, "submit", lambda r: r.update(format=r["format"] + 1))
    assert status.describe() == "stale: written by another version of the pipeline"


def test_a_param_missing_from_the_record_is_a_change(built):
    # As when a param is added to the pipeline after the step last ran.
    status = edited_record(built, "predict", lambda r: r["params"].pop("predict.batch_size"))
    assert status.describe() == \
        f"stale: param predict.batch_size changed ((unset) -> {built.params['predict.batch_size']})"


@pytest.mark.parametrize("part, reason", [("params", "param predict."),
                                          ("deps", "input"), ("outs", "output")])
def test_a_record_without_a_part_is_stale_on_that_part(built, part, reason):
    status = edited_record(built, "predict", lambda r: r.pop(part))
    assert status.state == "stale" and status.reasons
    assert all(r.startswith(reason) for r in status.reasons), status.describe()


def raw_record(built, step_name: str, text: str) -> runner.Status:
    """The step's status with its record replaced by `text`, then put back."""
    step = next(s for s in STEPS if s.name == step_name)
    path = runner.record_path(built.params, step)
    kept = path.read_text()
    path.write_text(text)
    try:
        return built.statuses()[step_name]
    finally:
        path.write_text(kept)


@pytest.mark.parametrize("text", [
    "[1]", "{not json", '{"params": [1]}', '{"deps": []}', '{"outs": []}', '{"deps": {"x": "p"}}',
    '{"deps": {"x": {}}}', '{"outs": {"x": {"path": "p"}}}', '{"deps": {"x": {"hash": "h"}}}',
])
def test_a_record_not_of_the_shape_runs_write_is_as_good_as_none(built, text):
    assert raw_record(built, "predict", text).describe() == "never run"


def test_a_record_holds_only_the_path_and_hash_of_each_file(built):
    # No clock: the same work writes the same record, byte for byte, which DVC keeps with
    # the outputs (dvc.yaml). Sizes and modification times only spare rereading a file,
    # and are kept apart; without them every file is hashed again, and is up to date.
    for step in STEPS:
        record = __import__("json").loads(runner.record_path(built.params, step).read_text())
        assert all(set(entry) == {"path", "hash"}
                   for entry in [*record["deps"].values(), *record["outs"].values()])
    states = runner.states_path(built.params)
    kept = states.read_bytes()
    states.unlink()
    try:
        assert {s.state for s in built.statuses().values()} == {"up to date"}
    finally:
        states.write_bytes(kept)


def test_record_files_are_named_apart_and_portably(built):
    names = [runner.record_path(built.params, s).name for s in STEPS]
    assert len(set(names)) == len(names)
    assert not any(c in name for name in names for c in ':*?"<>|')       # Windows refuses these


def test_unchanged_files_are_not_read_again(built, monkeypatch):
    # docs/pipeline.md, Rerunning: files whose size and modification time match are not hashed.
    from pipeline import artifacts
    def never(path):
        raise AssertionError(f"{path} was hashed again")
    monkeypatch.setattr(artifacts, "file_hash", never)
    assert {s.describe() for s in built.statuses().values()} == {"up to date"}


def test_the_code_of_each_step_is_what_its_stage_imports():
    # The expectations above are not empty by accident.
    assert CODE["train"] >= {"pipeline/steps/train.py", "pipeline/nn/network.py",
                             "pipeline/nn/optim.py", "pipeline/training/augment.py",
                             "pipeline/nn/schedule.py", "pipeline/artifacts.py"}
    assert CODE["ingest:train"] >= {"pipeline/steps/ingest.py", "pipeline/artifacts.py"}
    assert {"train.lr", "train.epochs", "train.distill_weight"} <= READS["train"]
    assert "pipeline/steps/train.py" not in CODE["predict"]
    assert "pipeline/engine/runner.py" not in CODE["train"]


def test_code_hash_follows_the_source_files(tmp_path, monkeypatch):
    # A throwaway project folder, so that no real source file is edited.
    from pipeline import sources
    monkeypatch.setattr(sources, "ROOT", tmp_path)
    (tmp_path / "demo").mkdir()
    (tmp_path / "demo" / "a.py").write_text("A = 1\n")
    (tmp_path / "demo" / "b.js").write_text("let b = 1;\n")
    both = ("demo/a.py", "demo/b.js")
    before = runner.code_hash(both)
    assert runner.code_hash(both) == before
    assert runner.code_hash(both[:1]) != before != runner.code_hash(both[1:])
    (tmp_path / "demo" / "b.js").write_text("let b = 2;\n")
    assert runner.code_hash(both) != before


# --- what a step is refused to run on ---

def test_a_step_whose_inputs_are_missing_is_refused_before_it_runs(tmp_path, monkeypatch):
    steps = {s.name: s for s in STEPS}
    params = load_params(tmp_path)
    train_x = tmp_path / "outputs" / "preprocess" / "train_x.npy"
    with pytest.raises(PipelineError, match=f"^{train_x} is missing: run `python run.py "
                                            "preprocess` first$"):
        runner.Runner(params).run_steps([steps["train"]])
    # A data file: where it was looked for, relative paths with the folder they are in.
    absolute = tmp_path / "data" / "train.csv"
    with pytest.raises(PipelineError, match=f"^{absolute}: file not found \\(expected a CSV "
                                            "file there; README.md"):
        runner.Runner(params).run_steps([steps["ingest:train"]])
    monkeypatch.chdir(tmp_path)
    relative = load_params(tmp_path, "data.train=data/train.csv")
    with pytest.raises(PipelineError, match=f"there, relative to {tmp_path};"):
        runner.Runner(relative).run_steps([steps["ingest:train"]])
    absolute.mkdir(parents=True)
    with pytest.raises(PipelineError, match="expected a file, found a directory"):
        runner.Runner(params).run_steps([steps["ingest:train"]])
    assert not (tmp_path / "outputs").exists()


def test_a_runner_knows_the_records_it_has_just_written(tmp_path):
    write_lines(tmp_path / "data" / "train.csv", sample_rows("train.csv.gz", 20))
    ingest = next(s for s in STEPS if s.name == "ingest:train")
    known = runner.Runner(load_params(tmp_path))
    assert known.check(ingest).state == "never run"
    known.run_steps([ingest])
    assert known.check(ingest).describe() == "up to date"


def test_a_module_edited_while_its_step_runs_leaves_the_step_stale(tmp_path, monkeypatch, caplog):
    # The record keeps the hash of the code as loaded (pipeline/sources.py), not as on
    # disk when the step ends: an edit in between must show up as stale next time.
    from pipeline import sources
    write_lines(tmp_path / "data" / "train.csv", sample_rows("train.csv.gz", 20))
    ingest = next(s for s in STEPS if s.name == "ingest:train")
    monkeypatch.setitem(sources.LOADED, "pipeline/steps/ingest.py", b"# as it was when loaded\n")
    logger = __import__("logging").getLogger("pipeline")
    logger.addHandler(caplog.handler)              # the CLI may have stopped propagation
    try:
        runner.Runner(load_params(tmp_path)).run_steps([ingest])
    finally:
        logger.removeHandler(caplog.handler)
    # One warning (seen once or twice: the handler above and propagation), naming the
    # edited module alone.
    warned = {r.getMessage() for r in caplog.records if r.levelname == "WARNING"}
    assert len(warned) == 1
    message = warned.pop()
    assert "pipeline/steps/ingest.py changed while this run" in message
    assert "pipeline/artifacts.py" not in message
    status = dict(runner.status(load_params(tmp_path)))["ingest:train"]
    assert status.describe() == "stale: code changed"

"""Issue 30, items 5 and 8 for the runner and the runs log: special files as data
paths, a crafted runs.jsonl for `restore`, and a runs.jsonl that is a symlink get
one line each, without hanging and without a traceback.

Every hostile file is made here, in a temporary folder.
"""
import json
import os
from pathlib import Path

import pytest
from helpers import ROOT, run_cli, sample_rows, tree_state, write_lines

from pipeline.config import params as params_mod
from pipeline.engine import journal, lock, runner
from pipeline.errors import PipelineError

TRAIN = sample_rows("train.csv.gz", 20)
TEST = [r.partition(",")[2] for r in TRAIN]


def args(train: Path, test: Path, out: Path) -> list[str]:
    return [f"--set=data.train={train}", f"--set=data.test={test}", "--set=data.sample=null",
            f"--set=outputs={out}"]


def test_a_fifo_or_dev_zero_as_data_gets_one_line(tmp_path):
    fifo = tmp_path / "train.csv"
    os.mkfifo(fifo)                              # opening it would wait for a writer
    test = write_lines(tmp_path / "test.csv", TEST)
    out = tmp_path / "out"
    status = run_cli("status", *args(fifo, test, out), timeout=30)
    assert status.returncode == 0, status.stderr
    assert "Traceback" not in status.stderr
    for data in (fifo, Path("/dev/zero")):
        done = run_cli("ingest", *args(data, test, out), timeout=30)
        assert done.returncode == 1
        kind = "a named pipe (FIFO)" if data == fifo else "a character device"
        assert done.stderr.splitlines() == [f"error: {data}: expected a regular file, found {kind}"]


def crafted_log(out: Path, entry: dict) -> Path:
    """A runs.jsonl of one train line: params.yaml's params, then `entry`'s keys (a
    dotted key changes one param, another key the line itself)."""
    params = params_mod.load(ROOT / "params.yaml")
    line = {"event": "train", "model": "0" * 64, "key": "0" * 64, "params": params,
            "params_file": "params.yaml", "changed": {}}
    for key, value in entry.items():
        if key in params:
            params[key] = value
        else:
            line[key] = value
    out.mkdir(parents=True, exist_ok=True)
    path = out / "runs.jsonl"
    path.write_text(json.dumps(line) + "\n")
    return path


NOT_CACHED = "run 1 cannot be restored: its model is no longer in the run cache"


@pytest.mark.parametrize("entry, want", [
    ({"predict.batch_size": "many"},
     "{log}, run 1, params: predict.batch_size must be an integer, found 'many' (str)"),
    ({"train.lr": int("9" * 400)}, "{log}, run 1, params: train.lr must be a finite number"),
    ({"params_file": "/dev/zero"}, NOT_CACHED),
    # Not a run's line at all: the log holds no run 1.
    ({"params": ["not", "a", "mapping"], "changed": "nor this"}, "restore: no run 1 in {log}"),
])
def test_restore_checks_a_logged_runs_params(tmp_path, entry, want):
    out = tmp_path / "out"
    log_file = crafted_log(out, entry)
    before = tree_state(out)
    train = write_lines(tmp_path / "train.csv", TRAIN)
    test = write_lines(tmp_path / "test.csv", TEST)
    done = run_cli("restore", "1", *args(train, test, out), timeout=60)
    assert done.returncode == 1
    assert len(done.stderr.splitlines()) == 1, done.stderr
    assert done.stderr.startswith("error: " + want.format(log=log_file))
    # Nothing of the run's is touched; the lock a writing command takes stays, empty.
    assert {k: v for k, v in tree_state(out).items() if k != lock.NAME} == before


def test_the_runs_log_is_not_appended_through_a_symlink(tmp_path):
    target = tmp_path / "bashrc"
    target.write_text("mine\n")
    log_file = tmp_path / "out" / "runs.jsonl"
    log_file.parent.mkdir()
    log_file.symlink_to(target)
    with pytest.raises(PipelineError, match="expected the runs log as a file, found a symlink"):
        journal.append(log_file, {"event": "train"})
    assert target.read_text() == "mine\n"


def test_a_fifo_as_the_runs_log_gets_one_line(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    os.mkfifo(out / "runs.jsonl")
    train = write_lines(tmp_path / "train.csv", TRAIN)
    test = write_lines(tmp_path / "test.csv", TEST)
    done = run_cli("runs", *args(train, test, out), timeout=30)
    assert done.returncode == 1
    assert done.stderr.splitlines() == [(f"error: {out / 'runs.jsonl'}: expected the runs log, "
                                         "a file of JSON lines, found a named pipe (FIFO)")]
    with pytest.raises(PipelineError, match="found a named pipe"):
        journal.append(out / "runs.jsonl", {"event": "train"})


def test_a_folder_the_pipeline_did_not_make_is_refused_as_outputs(tmp_path):
    home = tmp_path / "home"                     # another tool's results, or a home folder
    home.mkdir()
    (home / "submission.csv").write_text("theirs\n")
    (home / "metrics.json").write_text("{}")
    (home / "\x1b[2Jnote").write_text("x")
    before = tree_state(home)
    train = write_lines(tmp_path / "train.csv", TRAIN)
    test = write_lines(tmp_path / "test.csv", TEST)
    done = run_cli(*args(train, test, home), timeout=60)
    assert done.returncode == 1
    assert done.stderr.splitlines() == [(
        f"error: {home}: expected an outputs folder this pipeline made (holding .records/) or "
        "an empty one, found other files (\\x1b[2Jnote, metrics.json, submission.csv): name "
        "another with --set outputs=PATH")]
    assert tree_state(home) == before and not (home / ".records").exists()


def test_new_empty_and_own_folders_are_claimed_first(tmp_path):
    new, empty, mixed = tmp_path / "new" / "out", tmp_path / "empty", tmp_path / "mixed"
    empty.mkdir()
    (mixed / "sample" / ".records").mkdir(parents=True)      # a sample run's, beside real ones
    for folder in (new, empty, mixed):
        runner.claim_outputs(folder)
        assert (folder / ".records").is_dir()    # marked before anything else is written
    (empty / "ingest").mkdir()                    # a run killed at once is still recognised
    runner.claim_outputs(empty)
    (tmp_path / "other" / "sample").mkdir(parents=True)       # not a sample run's
    with pytest.raises(PipelineError, match="found other files \\(sample\\)"):
        runner.claim_outputs(tmp_path / "other")


def test_a_fresh_clone_with_the_headline_metrics_is_ours_and_a_foreign_one_is_not(tmp_path):
    clone = tmp_path / "clone"                  # git keeps outputs/metrics.json for DVC
    clone.mkdir()
    (clone / "metrics.json").write_text('{"val_accuracy": 0.98, "val_f1": {"0": 0.99}}')
    runner.claim_outputs(clone)
    assert (clone / ".records").is_dir()
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    (theirs / "metrics.json").write_text('{"auc": 0.7}')
    with pytest.raises(PipelineError, match="found other files \\(metrics.json\\)"):
        runner.claim_outputs(theirs)

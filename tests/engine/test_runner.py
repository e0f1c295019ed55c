"""Fingerprints: what reruns after a change, status, --force/--from, crash safety."""
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from helpers import ROOT, make_params, run_cli, sample_rows, tree_state, write_lines

from pipeline import artifacts, cli
from pipeline.engine import runner
from pipeline.errors import PipelineError
from pipeline.steps.graph import STEPS

ALL = [s.name for s in STEPS]


@pytest.fixture
def setup(tmp_path, tiny_csvs):
    """(csvs, run): run(*overrides, stages=(), start=None, force=False, single=False)
    -> the names of the steps that ran."""
    def run(*overrides, stages=(), start=None, force=False, single=False):
        params = make_params(tmp_path, *tiny_csvs, *overrides)
        return runner.run(params, runner.select(list(stages), start), force=force,
                          single=single)
    return tiny_csvs, run


def states(params):
    return {name: st.state for name, st in runner.status(params)}


def test_second_run_skips_every_step(setup):
    _, run = setup
    assert run() == ALL
    assert run() == []


def test_changing_epochs_reruns_training_onwards_only(setup, tmp_path):
    csvs, run = setup
    run()
    ran = run("train.epochs=3")
    assert ran[:2] == ["train", "predict"]
    assert not [n for n in ran if n.startswith(("ingest", "preprocess"))]
    assert set(states(make_params(tmp_path, *csvs, "train.epochs=3")).values()) == {"up to date"}


def test_new_test_csv_does_not_retrain(setup):
    (train_csv, test_csv), run = setup
    run()
    write_lines(test_csv, sample_rows("test.csv.gz", 80))
    ran = run()
    assert ran[:3] == ["ingest:test", "preprocess:test", "predict"]
    assert "train" not in ran and "ingest:train" not in ran


def test_same_bytes_at_a_new_path_is_up_to_date(setup, tmp_path):
    (train_csv, _), run = setup
    run()
    moved = tmp_path / "elsewhere.csv"
    moved.write_bytes(train_csv.read_bytes())
    assert run(f"data.train={moved}") == []


def test_status_says_what_changed(setup, tmp_path):
    csvs, run = setup
    params = make_params(tmp_path, *csvs)
    assert set(states(params).values()) == {"never run"}
    run()
    changed = dict(runner.status(make_params(tmp_path, *csvs, "preprocess.val_fraction=0.2")))
    assert changed["preprocess:train"].state == "stale"
    assert "param preprocess.val_fraction changed (0.1 -> 0.2)" in changed["preprocess:train"].describe()
    assert changed["ingest:train"].state == "up to date"
    assert "preprocess:train will rerun first" in changed["train"].describe()
    write_lines(csvs[1], sample_rows("test.csv.gz", 70))
    assert f"input {csvs[1]} changed" in dict(runner.status(params))["ingest:test"].describe()


def test_code_change_reruns_the_step(setup, monkeypatch):
    _, run = setup
    run()
    real = runner.code_hash
    monkeypatch.setattr(runner, "code_hash",
                        lambda mods: real(mods) + ("x" if "pipeline/steps/train.py" in mods
                                                   else ""))
    assert run()[0] == "train"


def test_modified_or_missing_output_reruns_the_step(setup, tmp_path):
    csvs, run = setup
    run()
    params = make_params(tmp_path, *csvs)
    model = Path(params["outputs"]) / "train" / "model.npz"
    model.write_bytes(model.read_bytes()[:100])            # as a crashed plain write leaves it
    assert "output" in dict(runner.status(params))["train"].describe()
    assert run()[0] == "train"
    (Path(params["outputs"]) / "submission.csv").unlink()
    assert run() == ["submit"]


def test_force_and_from(setup):
    _, run = setup
    run()
    assert run(stages=["train"]) == []
    assert run(start="predict") == []
    assert run(start="predict", force=True) == ALL[ALL.index("predict"):]
    assert run(stages=["train"], force=True) == ["train"]
    assert run(stages=["ingest"], force=True) == ["ingest:train", "ingest:test"]


def test_a_stage_first_brings_what_it_needs_up_to_date(setup):
    _, run = setup
    assert run(stages=["train"]) == ["ingest:train", "preprocess:train", "train"]
    assert run("preprocess.val_fraction=0.3", stages=["train"]) == ["preprocess:train", "train"]
    # --force forces the named stage only; upstream runs when stale.
    assert run("preprocess.val_fraction=0.3", stages=["train"], force=True) == ["train"]
    assert run("preprocess.val_fraction=0.2", stages=["train"], force=True) == \
        ["preprocess:train", "train"]


def test_single_refuses_an_upstream_that_is_not_up_to_date(setup, tmp_path):
    _, run = setup
    with pytest.raises(PipelineError, match=r"^train is built on ingest:train, which has never "
                                            r"run\. Run `python run.py train` without --single"):
        run(stages=["train"], single=True)
    assert not (tmp_path / "outputs" / "train").exists()
    run()
    before = tree_state(tmp_path / "outputs")
    with pytest.raises(PipelineError, match=r"^train is built on preprocess:train, which is "
                                            r"stale: param preprocess.val_fraction changed"):
        run("preprocess.val_fraction=0.3", stages=["train"], single=True)
    assert tree_state(tmp_path / "outputs") == before
    assert run("preprocess.val_fraction=0.3", stages=["preprocess"], single=True) == \
        ["preprocess:train"]
    assert run("preprocess.val_fraction=0.3", stages=["train"], single=True) == ["train"]


def test_a_half_renamed_upstream_is_rebuilt_before_it_is_read(setup, tmp_path):
    # A SIGKILL between two renames of one step leaves new files beside old ones under
    # the old record: here, other labels beside the same images.
    _, run = setup
    run()
    labels = tmp_path / "outputs" / "preprocess" / "train_y.npy"
    kept = labels.read_bytes()
    artifacts.save_array(labels, np.roll(np.load(labels), 1))
    before = tree_state(tmp_path / "outputs")
    with pytest.raises(PipelineError, match=rf"which is stale: output {labels} was modified\."):
        run(stages=["train"], single=True)
    assert tree_state(tmp_path / "outputs") == before
    # The step is rebuilt whole; its bytes are those train was made from, so train stays.
    assert run(stages=["train"]) == ["preprocess:train"]
    assert labels.read_bytes() == kept


def test_a_retrain_with_the_same_weights_stops_the_cascade(setup, tmp_path):
    csvs, run = setup
    run()
    params = make_params(tmp_path, *csvs)
    outputs = Path(params["outputs"])
    model, timing = (outputs / "train" / "model.npz").read_bytes(), \
        (outputs / "train" / "timing.json").read_bytes()
    assert run(stages=["train"], force=True) == ["train"]
    assert (outputs / "train" / "model.npz").read_bytes() == model        # deterministic
    assert (outputs / "train" / "timing.json").read_bytes() != timing     # a new clock
    assert set(states(params).values()) == {"up to date"}
    assert run() == []


def test_a_module_edited_during_a_run_reruns_its_steps_next_time(tmp_path, tiny_csvs):
    # On a copy of the package, so that no one's working tree is edited.
    shutil.copytree(ROOT / "pipeline", tmp_path / "pipeline",
                    ignore=shutil.ignore_patterns("__pycache__"))
    network = tmp_path / "pipeline" / "nn" / "network.py"
    args = [f"--params={ROOT / 'params.yaml'}", f"--set=data.train={tiny_csvs[0]}",
            f"--set=data.test={tiny_csvs[1]}", "--set=data.sample=null",
            f"--set=outputs={tmp_path / 'out'}", "--set=train.epochs=1"]

    def main(*argv, edit=False):
        """cli.main(ARGV) in a fresh process on the copy; `edit` changes network.py
        after the modules are imported and before any step runs."""
        change = f"p = pathlib.Path({str(network)!r}); p.write_text(p.read_text() + '# edited\\n'); "
        script = (f"import pathlib, sys; from pipeline import cli; "
                  f"assert cli.__file__.startswith({str(tmp_path)!r}), cli.__file__; "
                  f"{change if edit else ''}sys.exit(cli.main({[*argv, *args]!r}))")
        done = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True,
                              text=True, timeout=120, stdin=subprocess.DEVNULL)
        assert done.returncode == 0, done.stderr
        return done.stdout

    first = main(edit=True)
    assert "train: pipeline/nn/network.py changed while this run was going" in first
    status = dict(line.split(None, 1) for line in main("status").splitlines())
    assert status["train"].startswith("stale: code changed")
    assert status["ingest:train"] == "up to date"
    assert "train: running (stale: code changed)" in main()
    assert "stale" not in main("status")


def test_unknown_stage_is_refused():
    with pytest.raises(runner.PipelineError, match=r"unknown stage 'trian' \(did you mean "
                                                   r"'train'\?\): expected one of"):
        runner.select(["trian"], None)
    with pytest.raises(runner.PipelineError, match="unknown stage 'xyz': expected one of"):
        runner.select(["xyz"], None)
    with pytest.raises(runner.PipelineError, match="'status' is a command of its own"):
        runner.select(["train", "status"], None, cli.USAGES)
    with pytest.raises(runner.PipelineError, match="`python run.py predict-image PATH...`"):
        runner.select([], "predict-image", cli.USAGES)
    # The command line's own commands are named, and only there.
    assert set(cli.USAGES) == {"status", "predict-image", "runs", "restore", "note", "blend", "cache"}
    for name, usage in cli.USAGES.items():
        assert usage.split()[0] == name and name in cli.USAGE_EPILOG


def test_cli_status_and_skip(tmp_path, tiny_csvs):
    args = [f"--set=data.train={tiny_csvs[0]}", f"--set=data.test={tiny_csvs[1]}",
            f"--set=outputs={tmp_path / 'out'}", "--set=train.epochs=1"]
    assert "never run" in run_cli("status", *args).stdout
    first = run_cli(*args)
    assert first.returncode == 0, first.stderr
    again = run_cli("train", *args)
    assert "train: up to date, skipped" in again.stdout
    assert again.returncode == 0
    refused = run_cli("train", "--single", "--set=preprocess.val_fraction=0.3", *args)
    assert refused.returncode == 1 and refused.stderr.count("\n") == 1
    assert refused.stderr.startswith("error: train is built on preprocess:train, which is stale")
    assert "like dvc repro --single-item" in " ".join(run_cli("--help").stdout.split())


def _kill_when(args, marker, delay):
    """Start `run.py ARGS`, SIGKILL it `delay` s after `marker` appears in its output."""
    proc = subprocess.Popen([sys.executable, "-u", str(ROOT / "run.py"), *args], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            stdin=subprocess.DEVNULL)
    for line in proc.stdout:
        if marker in line:
            break
    else:
        proc.wait()
        return False                                       # finished before the marker
    time.sleep(delay)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    return proc.returncode == -signal.SIGKILL


@pytest.fixture(scope="module")
def clean_run(tmp_path_factory):
    """An unbroken run, to compare resumed runs with: (base args, its outputs folder)."""
    folder = tmp_path_factory.mktemp("kill")
    train_csv = write_lines(folder / "train.csv", sample_rows("train.csv.gz", 400))
    test_csv = write_lines(folder / "test.csv", sample_rows("test.csv.gz", 60))
    base = [f"--set=data.train={train_csv}", f"--set=data.test={test_csv}",
            "--set=data.sample=null", "--set=train.epochs=6"]
    out = folder / "clean"
    assert run_cli(*base, f"--set=outputs={out}").returncode == 0
    return base, out


@pytest.mark.parametrize("marker,delay,surely_killed", [
    ("ingest:train: running", 0.05, False),
    ("preprocess:train: running", 0.02, False),
    ("train: epoch 2", 0.0, True),
    ("predict: running", 0.01, False),
    ("submit: running", 0.0, False),
])
def test_sigkill_midway_then_rerun_recovers(tmp_path, clean_run, marker, delay, surely_killed):
    base, clean_out = clean_run
    killed_out = tmp_path / "killed"
    killed = _kill_when(base + [f"--set=outputs={killed_out}"], marker, delay)
    assert killed or not surely_killed
    resumed = run_cli(*base, f"--set=outputs={killed_out}")
    assert resumed.returncode == 0, resumed.stderr
    assert "error" not in resumed.stdout
    # Whatever the kill interrupted was redone: the result is what an unbroken run makes.
    assert (killed_out / "submission.csv").read_bytes() == (clean_out / "submission.csv").read_bytes()
    assert (killed_out / "train" / "model.npz").read_bytes() == \
        (clean_out / "train" / "model.npz").read_bytes()
    assert not list(killed_out.rglob("*.tmp"))
    status = run_cli("status", *base, f"--set=outputs={killed_out}").stdout
    assert "stale" not in status and "never run" not in status


def test_ctrl_c_exits_cleanly_and_keeps_outputs(tmp_path, clean_run):
    base, _ = clean_run
    out = tmp_path / "out"
    # A shell ignores Ctrl-C in what it starts in the background, and the child would
    # inherit that: give it the default, as a terminal's foreground has.
    proc = subprocess.Popen([sys.executable, "-u", str(ROOT / "run.py"), *base,
                             f"--set=outputs={out}", "--set=train.epochs=40"], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            stdin=subprocess.DEVNULL,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    for line in proc.stdout:
        if "train: epoch 1" in line:
            break
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130
    assert "interrupted" in err and "Traceback" not in err
    assert (out / "preprocess" / "train_x.npy").exists()        # finished steps are kept
    assert not (out / "train" / "model.npz").exists()


def test_a_stale_step_several_steps_upstream(setup):
    _, run = setup
    run()
    with pytest.raises(PipelineError, match="submit is built on train, which is stale: param "
                                            "train.epochs changed"):
        run("train.epochs=3", stages=["submit"], single=True)
    ran = run("train.epochs=3", stages=["submit"])
    assert ran[:2] == ["train", "predict"] and "report" not in ran


def test_closing_lines_flag_results_a_partial_run_left_behind(tmp_path, tiny_csvs):
    args = [f"--set=data.train={tiny_csvs[0]}", f"--set=data.test={tiny_csvs[1]}",
            f"--set=outputs={tmp_path / 'out'}"]
    assert run_cli(*args, "--set=train.epochs=1").returncode == 0
    # Training again with new params leaves the submission behind; the accuracy given
    # is the new model's, from train, not predict's of the earlier model.
    partial = run_cli("train", *args, "--set=train.epochs=2")
    closing = [line for line in partial.stdout.splitlines()
               if line.startswith(("validation accuracy", "submission"))]
    model = artifacts.load_json(tmp_path / "out" / "train" / "metrics.json")
    assert len(closing) == 2, partial.stdout
    assert closing[0] == (f"validation accuracy: {100 * model['val_accuracy']:.2f}% (the "
                          "model's, from train; run predict for its interval)")
    assert "(out of date: run `python run.py`" in closing[1]
    whole = run_cli(*args, "--set=train.epochs=2")
    assert whole.returncode == 0 and "validation accuracy: " in whole.stdout
    assert "out of date" not in whole.stdout


def test_all_rows_marks_the_accuracy_as_not_held_out(tmp_path, tiny_csvs):
    out = tmp_path / "out"
    result = run_cli(f"--set=data.train={tiny_csvs[0]}", f"--set=data.test={tiny_csvs[1]}",
                     f"--set=outputs={out}", "--set=train.epochs=1",
                     "--set=train.all_rows=true")
    assert result.returncode == 0, result.stderr
    assert artifacts.load_json(out / "metrics.json")["val_held_out"] is False
    closing = next(line for line in result.stdout.splitlines()
                   if line.startswith("validation accuracy"))
    assert "not held out" in closing
    # With all_rows back to false the model is stale: predict alone refuses it, and
    # predict with what it needs retrains first, so its scores are held out again.
    back = [f"--set=data.train={tiny_csvs[0]}", f"--set=data.test={tiny_csvs[1]}",
            f"--set=outputs={out}", "--set=train.epochs=1", "predict"]
    refused = run_cli(*back, "--single")
    assert refused.returncode == 1
    assert refused.stderr.startswith("error: predict is built on train, which is stale")
    again = run_cli(*back)
    assert again.returncode == 0, again.stderr
    assert artifacts.load_json(out / "metrics.json")["val_held_out"] is True
    assert "not held out" not in again.stdout


@pytest.mark.parametrize("error, shown", [
    (MemoryError("Unable to allocate 584. GiB for an array"), "(Unable to allocate 584. GiB"),
    (MemoryError(), "(an allocation failed)"),          # Python's own carry no message
])
def test_running_out_of_memory_is_one_line(tmp_path, tiny_csvs, monkeypatch, capsys, error, shown):
    def too_big(*args, **kwargs):
        raise error
    monkeypatch.setattr(runner, "run", too_big)
    status = cli.main([f"--set=data.train={tiny_csvs[0]}", f"--set=data.test={tiny_csvs[1]}",
                       f"--set=outputs={tmp_path / 'out'}"])
    err = capsys.readouterr().err
    assert status == 1 and err.count("\n") == 1
    assert err.startswith(f"error: not enough memory {shown}") and "train.hidden" in err


def test_an_odd_output_does_not_fail_a_run_that_does_not_write_it(tmp_path, tiny_csvs):
    args = [f"--set=data.train={tiny_csvs[0]}", f"--set=data.test={tiny_csvs[1]}",
            f"--set=outputs={tmp_path / 'out'}", "--set=train.epochs=1"]
    assert run_cli(*args).returncode == 0
    page = tmp_path / "out" / "report" / "index.html"
    page.unlink()
    page.mkdir()                                      # something else took its name
    for quiet in ([], ["--quiet"]):
        done = run_cli("ingest", *args, *quiet)
        assert done.returncode == 0 and not done.stderr, done.stderr
    assert f"output {page} is a directory" in run_cli("status", *args).stdout


@pytest.mark.parametrize("text", ['{"format": 1, "deps": []}', '{"deps": {"x": {}}}', "[1]",
                                  "{not json"])
def test_a_damaged_record_only_makes_its_step_run_again(setup, tmp_path, text):
    csvs, run = setup
    run()
    params = make_params(tmp_path, *csvs)
    submit = next(s for s in STEPS if s.name == "submit")
    runner.record_path(params, submit).write_text(text)
    assert dict(runner.status(params))["submit"].state == "never run"
    assert run() == ["submit"]

"""The runs log, the run cache and the commands around them: runs, restore N, cache."""
import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import ROOT, make_params, run_cli, sample_rows, write_lines

from pipeline import artifacts, cli
from pipeline.engine import cache, runner
from pipeline.engine.journal import Journal, append
from pipeline.report import runs_table
from pipeline.steps import train as train_step
from pipeline.steps.graph import STEPS

TRAIN_OUTS = ("model.npz", "history.csv", "metrics.json", "timing.json")
UNTIL_SUBMIT = [s for s in STEPS if s.stage != "report"]       # the report adds nothing here
TRAIN_CODE = "pipeline/steps/train.py"


@pytest.fixture
def pipeline(tmp_path, tiny_csvs, monkeypatch):
    """run(*overrides, force=False) runs every step with a journal, as the command line
    does, and returns the names of the steps that ran; `trained` counts the trainings
    (a restore from the run cache is not one)."""
    real, trained = train_step.train, []

    def counting(*args, **kwargs):
        trained.append(1)
        return real(*args, **kwargs)
    monkeypatch.setattr(train_step, "train", counting)

    def run(*overrides, force=False):
        params = make_params(tmp_path, *tiny_csvs, "train.hidden=8", *overrides)
        journal = Journal("params.yaml", {})
        return runner.run(params, UNTIL_SUBMIT, force=force, journal=journal)
    run.trained = trained
    run.outputs = tmp_path / "outputs"
    return run


def logged(outputs: Path) -> list[dict]:
    return runs_table.runs(runs_table.read(runs_table.log_path(outputs)))


def train_files(outputs: Path) -> dict[str, bytes]:
    return {name: (outputs / "train" / name).read_bytes() for name in TRAIN_OUTS}


# --- the runs log ---

def test_the_log_holds_one_record_per_train_run(pipeline, tiny_csvs):
    pipeline("train.epochs=1")
    pipeline("train.epochs=1")                                  # nothing to do
    write_lines(tiny_csvs[1], sample_rows("test.csv.gz", 70))   # a new test.csv: no training
    pipeline("train.epochs=1")
    pipeline("train.epochs=2")
    runs = logged(pipeline.outputs)
    # The new test.csv changed the submission: a run of its own, with the same model.
    assert [r["run"] for r in runs] == [1, 2, 3] and len(pipeline.trained) == 2
    assert [r["params"]["train.epochs"] for r in runs] == [1, 1, 2]
    assert runs[1]["model"] == runs[0]["model"] and runs[1]["key"] == runs[0]["key"]
    assert runs[1]["submission"] != runs[0]["submission"]
    runs = [runs[0], runs[2]]
    first = runs[0]
    assert first["params_file"] == "params.yaml" and first["restored"] is False
    assert first["members"] == 1 and first["epochs"] == 1 and first["train_seconds"] > 0
    record = json.loads((pipeline.outputs / ".records" / "train.json").read_text())
    assert runs[1]["key"] == cache.key(record) != first["key"]
    # predict's interval and the submission's hash went to the run whose model made them.
    scores = json.loads((pipeline.outputs / "metrics.json").read_text())
    assert runs[1]["val_accuracy"] == scores["val_accuracy"]
    assert runs[1]["val_accuracy_ci95"] == scores["val_accuracy_ci95"]
    assert runs[1]["submission"] == artifacts.file_hash(pipeline.outputs / "submission.csv")
    assert runs[0]["submission"] != runs[1]["submission"]


def test_a_torn_last_line_is_skipped_and_the_next_record_starts_a_line(tmp_path, caplog):
    path = tmp_path / "runs.jsonl"
    append(path, {"event": "train", "model": "a"})
    with open(path, "a") as f:
        f.write('{"event": "train", "mod')                  # a write cut short
    append(path, {"event": "train", "model": "b"})
    with caplog.at_level(logging.WARNING):
        entries = runs_table.read(path)
    assert [e["model"] for e in entries] == ["a", "b"]
    assert f"{path}, line 2: not a whole record" in caplog.text


def test_a_record_is_appended_in_one_write(tmp_path, monkeypatch):
    # One write(2) on an O_APPEND file: a kill finds the line written or not.
    path, writes = tmp_path / "runs.jsonl", []
    real = os.write
    monkeypatch.setattr(os, "write",
                        lambda fd, data: writes.append(bytes(data)) or real(fd, data))
    append(path, {"event": "submit", "model": "m", "submission": "s" * 5000})
    append(path, {"event": "train", "model": "m"})
    assert len(writes) == 2 and all(w.endswith(b"\n") and w.count(b"\n") == 1 for w in writes)
    assert path.read_bytes() == b"".join(writes)


APPENDER = """
import sys
from pathlib import Path
from pipeline.engine.journal import Journal, append
from pipeline.report import runs_table
path, n = Path(sys.argv[1]), 0
while True:
    append(path, {"event": "train", "n": n, "pad": "x" * 400_000})
    n += 1
"""


@pytest.mark.parametrize("delay", [0.05, 0.2, 0.5])
def test_the_log_survives_sigkill_mid_write(tmp_path, caplog, delay):
    path = tmp_path / "runs.jsonl"
    child = subprocess.Popen([sys.executable, "-c", APPENDER, str(path)], cwd=ROOT)
    while not path.exists() or path.stat().st_size == 0:
        assert child.poll() is None, "the appender stopped before writing"
        time.sleep(0.01)
    time.sleep(delay)
    child.send_signal(signal.SIGKILL)
    assert child.wait() == -signal.SIGKILL
    append(path, {"event": "train", "n": "after"})
    with caplog.at_level(logging.WARNING):
        entries = runs_table.read(path)
    numbers = [e["n"] for e in entries]
    # Every record written before the kill is whole and in order; at most the one
    # being written when it came is lost; the next one reads back.
    assert numbers[:-1] == list(range(len(numbers) - 1)) and numbers[-1] == "after"
    assert len(numbers) >= 2
    assert caplog.text.count("not a whole record") <= 1


# --- the run cache ---

def test_going_back_restores_byte_identical_outputs_instead_of_training(pipeline, tmp_path,
                                                                       tiny_csvs):
    pipeline("train.epochs=2")
    first = train_files(pipeline.outputs)
    pipeline("train.epochs=3")
    assert pipeline("train.epochs=2")[:2] == ["train", "predict"]
    assert len(pipeline.trained) == 2                       # 2 -> 3 -> 2 trains twice
    assert train_files(pipeline.outputs) == first
    runs = logged(pipeline.outputs)
    assert [r["restored"] for r in runs] == [False, False, True]
    assert runs[2]["submission"] == runs[0]["submission"] != runs[1]["submission"]
    # The same bytes as training afresh elsewhere (timing.json aside: a new clock).
    fresh = tmp_path / "fresh"
    runner.run(make_params(fresh, *tiny_csvs, "train.hidden=8", "train.epochs=2"), UNTIL_SUBMIT)
    again = train_files(fresh / "outputs")
    assert {k: v for k, v in again.items() if k != "timing.json"} == \
        {k: v for k, v in first.items() if k != "timing.json"}
    assert (fresh / "outputs" / "submission.csv").read_bytes() == \
        (pipeline.outputs / "submission.csv").read_bytes()
    params = make_params(tmp_path, *tiny_csvs, "train.hidden=8", "train.epochs=2")
    assert {st.state for name, st in runner.status(params) if name != "report"} == {"up to date"}


def test_a_modified_output_is_restored_from_the_cache(pipeline):
    pipeline("train.epochs=1")
    model = pipeline.outputs / "train" / "model.npz"
    kept = model.read_bytes()
    model.write_bytes(kept[:100])
    assert pipeline("train.epochs=1")[0] == "train"
    assert model.read_bytes() == kept and len(pipeline.trained) == 1


def test_other_code_or_other_data_is_never_restored(pipeline, tiny_csvs, monkeypatch):
    pipeline("train.epochs=1")
    real = runner.loaded_code_hash
    monkeypatch.setattr(runner, "loaded_code_hash",
                        lambda mods: real(mods) + ("+edit" if TRAIN_CODE in mods else ""))
    monkeypatch.setattr(runner, "code_hash", runner.loaded_code_hash)   # as a new process sees it
    pipeline("train.epochs=1")
    assert len(pipeline.trained) == 2
    write_lines(tiny_csvs[0], sample_rows("train.csv.gz", 300))
    pipeline("train.epochs=1")
    assert len(pipeline.trained) == 3


def test_force_trains_even_when_the_cache_has_the_result(pipeline):
    pipeline("train.epochs=1")
    pipeline("train.epochs=1", force=True)
    assert len(pipeline.trained) == 2


def entry_sizes(outputs: Path) -> list[int]:
    return [cache.size(e) for e in cache.entries(outputs)]


def test_the_cap_evicts_the_least_recently_used_entries(pipeline):
    pipeline("train.epochs=1")
    one = entry_sizes(pipeline.outputs)[0]
    cap = f"cache.max_mb={2.5 * one / cache.MB}"            # room for two entries
    pipeline("train.epochs=2", cap)
    pipeline("train.epochs=1", cap)                         # restored: used most recently
    assert len(pipeline.trained) == 2
    pipeline("train.epochs=3", cap)                         # a third entry: epochs=2 goes
    assert len(cache.entries(pipeline.outputs)) == 2
    assert sum(entry_sizes(pipeline.outputs)) <= 2.5 * one
    pipeline("train.epochs=1", cap)
    assert len(pipeline.trained) == 3                       # still there
    pipeline("train.epochs=2", cap)
    assert len(pipeline.trained) == 4                       # evicted, so trained again
    pipeline("train.epochs=5", "cache.max_mb=0")            # 0: nothing kept
    assert len(cache.entries(pipeline.outputs)) == 2 and len(pipeline.trained) == 5


@pytest.mark.parametrize("damage", ["flip a byte", "truncate", "delete a file", "manifest"])
def test_a_damaged_entry_is_deleted_and_the_step_trains(pipeline, caplog, damage):
    pipeline("train.epochs=1")
    first = train_files(pipeline.outputs)
    [entry] = cache.entries(pipeline.outputs)
    pipeline("train.epochs=2")
    model = entry / "model.npz"
    if damage == "flip a byte":
        data = bytearray(model.read_bytes())
        data[len(data) // 2] ^= 1
        model.write_bytes(bytes(data))
    elif damage == "truncate":
        model.write_bytes(model.read_bytes()[:-10])
    elif damage == "delete a file":
        (entry / "history.csv").unlink()
    else:
        (entry / cache.MANIFEST).write_text("{")
    with caplog.at_level(logging.WARNING):
        pipeline("train.epochs=1")
    assert "is damaged" in caplog.text and len(pipeline.trained) == 3
    assert {k: v for k, v in train_files(pipeline.outputs).items() if k != "timing.json"} == \
        {k: v for k, v in first.items() if k != "timing.json"}
    # The entry was made again from the new training, and is whole.
    assert cache.load(pipeline.outputs, "train", entry.name,
                      {Path(name).stem: Path(name) for name in TRAIN_OUTS}) is not None


def test_no_leftovers_and_the_cap_is_not_fingerprinted(pipeline, tmp_path, tiny_csvs):
    pipeline("train.epochs=1")
    params = make_params(tmp_path, *tiny_csvs, "train.hidden=8", "train.epochs=1",
                         "cache.max_mb=7")
    assert {st.state for name, st in runner.status(params) if name != "report"} == {"up to date"}
    assert not list(cache.folder(pipeline.outputs).rglob(f"*{artifacts.TMP_SUFFIX}"))


# --- the table ---

def test_the_table_shows_only_what_changed_and_marks_the_best(pipeline):
    pipeline("train.epochs=1")
    pipeline("train.epochs=3", "train.lr=0.001")
    pipeline("train.epochs=1")
    rows = runs_table.rows(logged(pipeline.outputs))
    params = [c for c in rows[0] if "." in c]
    assert params == ["train.epochs", "train.lr"]
    assert [r["train.epochs"] for r in rows] == [1, 3, 1]
    assert "params_file" not in rows[0] and "members" not in rows[0]
    assert [r["restored"] for r in rows] == [False, False, True]
    best = max(r["val_accuracy"] for r in rows)
    assert [r["best"] for r in rows] == [r["val_accuracy"] == best for r in rows]
    assert any(r["best"] for r in rows)
    text = runs_table.format_table(rows)
    header = text.splitlines()[0].split()
    assert header[:4] == ["run", "time", "train.epochs", "train.lr"]
    assert "seed" not in header and "train.hidden" not in header
    assert text.count("*") == sum(r["best"] for r in rows) + 1          # and the legend
    assert runs_table.format_csv(rows).splitlines()[0].split(",")[:4] == \
        ["run", "time", "train.epochs", "train.lr"]


def test_an_accuracy_not_held_out_is_never_the_best():
    found = [{"run": 1, "params": {"train.all_rows": False}, "val_accuracy": 0.98},
             {"run": 2, "params": {"train.all_rows": True}, "val_accuracy": 0.997,
              "val_held_out": False}]
    rows = runs_table.rows(found)
    assert [r["best"] for r in rows] == [True, False]
    assert "not held out" in runs_table.format_table(rows).splitlines()[2]


# --- the commands ---

def test_runs_restore_and_cache_from_the_command_line(tmp_path, tiny_csvs):
    out = tmp_path / "out"
    args = [f"--set=data.train={tiny_csvs[0]}", f"--set=data.test={tiny_csvs[1]}",
            f"--set=outputs={out}", "--set=train.hidden=8"]
    submissions = []
    for epochs in (1, 2):
        done = run_cli(*args, f"--set=train.epochs={epochs}")
        assert done.returncode == 0, done.stderr
        submissions.append((out / "submission.csv").read_bytes())
    assert "upload it with `python run.py submit --kaggle \"your message\" --set" in done.stdout
    table = run_cli("runs", *args)
    assert table.returncode == 0 and table.stdout.splitlines()[0].split()[:3] == \
        ["run", "time", "train.epochs"]
    csv_ = run_cli("runs", "--csv", *args)
    assert csv_.stdout.splitlines()[0].startswith("run,time,train.epochs,val_accuracy")
    assert len(csv_.stdout.splitlines()) == 3

    back = run_cli("restore", "1", *args, "--set=train.epochs=2")
    assert back.returncode == 0, back.stderr
    assert "train: restoring from the run cache" in back.stdout
    assert (out / "submission.csv").read_bytes() == submissions[0]
    assert "--set train.epochs=1`" in back.stdout.splitlines()[-1]       # the upload command
    assert "restored" in run_cli("runs", *args).stdout.splitlines()[3]

    assert run_cli("cache", "clear", *args).stdout.startswith("cache: removed 2 entries")
    refused = run_cli("restore", "2", *args)
    assert refused.returncode == 1 and refused.stderr.count("\n") == 1
    assert refused.stderr.startswith("error: run 2 cannot be restored: its model is no longer "
                                     "in the run cache")
    retrain = refused.stderr.split("retrain it with `")[1].rstrip("`\n")
    assert retrain.endswith("--set train.epochs=2")
    again = subprocess.run(retrain.replace("python run.py", f"{sys.executable} run.py", 1),
                           shell=True, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0, again.stderr
    assert (out / "submission.csv").read_bytes() == submissions[1]

    for words, message in [(["restore", "9"], "error: restore: no run 9 in "),
                           (["restore"], "error: restore: expected one run number"),
                           (["cache", "empty"], "error: cache: expected `python run.py cache`"),
                           (["train", "--csv"], "error: --csv is for `python run.py runs --csv`")]:
        wrong = run_cli(*words, *args)
        assert wrong.returncode == 1 and wrong.stderr.startswith(message), wrong.stderr


def test_restore_refuses_a_run_whose_code_changed_since(tmp_path, tiny_csvs, monkeypatch, capsys):
    args = [f"--set=data.train={tiny_csvs[0]}", f"--set=data.test={tiny_csvs[1]}",
            f"--set=outputs={tmp_path / 'out'}", "--set=train.hidden=8", "--quiet"]
    assert cli.main([*args, "--set=train.epochs=1"]) == 0
    assert cli.main([*args, "--set=train.epochs=2"]) == 0
    real, trained = runner.loaded_code_hash, []
    monkeypatch.setattr(runner, "loaded_code_hash",
                        lambda mods: real(mods) + ("+edit" if TRAIN_CODE in mods else ""))
    monkeypatch.setattr(runner, "code_hash", runner.loaded_code_hash)
    monkeypatch.setattr(train_step, "train", lambda *a, **k: trained.append(1))
    capsys.readouterr()
    assert cli.main(["restore", "1", *args]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: run 1 cannot be restored: the code or the data changed since "
                          "it ran") and err.count("\n") == 1 and "--set train.epochs=1`" in err
    assert trained == []


def test_a_file_of_changes_is_logged_by_name_with_what_the_command_line_changed(tmp_path,
                                                                              tiny_csvs):
    out = tmp_path / "out"
    mine = tmp_path / "my.yaml"
    mine.write_text("train:\n  hidden: 8\n  epochs: 1\n")
    args = [f"--set=data.train={tiny_csvs[0]}", f"--set=data.test={tiny_csvs[1]}",
            f"--set=outputs={out}"]
    assert run_cli(f"--params={mine}", "status", *args).returncode == 0
    done = run_cli(f"--params={mine}", *args)
    assert done.returncode == 0, done.stderr
    done = run_cli(*args, "--set=train.hidden=8", "--set=train.epochs=2")
    assert done.returncode == 0, done.stderr
    first, second = logged(out)
    # my.yaml's keys are what the file gives, not changes of this command line.
    assert first["params_file"] == str(mine) and second["params_file"] == "params.yaml"
    assert set(first["changed"]) == {"data.train", "data.test", "outputs"}
    assert set(second["changed"]) == {"data.train", "data.test", "outputs", "train.hidden",
                                      "train.epochs"}
    assert first["params"]["train.hidden"] == 8 and first["params"]["train.lr"] == 0.002
    assert run_cli("runs", *args).stdout.splitlines()[0].split()[:5] == \
        ["run", "time", "params", "file", "train.epochs"]
    back = run_cli("restore", "1", *args, "--set=train.hidden=8", "--set=train.epochs=2")
    assert back.returncode == 0, back.stderr
    # The upload command names the file again: this command's --set, then what differs.
    assert back.stdout.splitlines()[-1].endswith(
        f"--params {mine} --set data.train={tiny_csvs[0]} --set data.test={tiny_csvs[1]} "
        f"--set outputs={out} --set train.hidden=8 --set train.epochs=1`")


# --- credit: each command line that changes an output is one run ---

def test_a_predict_change_is_a_run_of_its_own(pipeline):
    pipeline("train.epochs=1")
    first = logged(pipeline.outputs)[0]
    assert pipeline("train.epochs=1", "predict.tta_shift=1") == ["predict", "submit"]
    runs = logged(pipeline.outputs)
    assert len(runs) == 2 and len(pipeline.trained) == 1
    plain, shifted = runs
    # The earlier run keeps its own figure and submission.
    assert plain["val_accuracy"] == first["val_accuracy"]
    assert plain["submission"] == first["submission"]
    assert shifted["params"]["predict.tta_shift"] == 1 and shifted["model"] == plain["model"]
    assert shifted["submission"] == artifacts.file_hash(pipeline.outputs / "submission.csv")
    assert shifted["key"] == plain["key"] and shifted["restored"] is False
    rows = runs_table.rows(runs)
    assert [r["predict.tta_shift"] for r in rows] == [0.0, 1]
    # Going back is one more run, credited to itself.
    assert pipeline("train.epochs=1") == ["predict", "submit"]
    runs = logged(pipeline.outputs)
    assert len(runs) == 3 and runs[2]["submission"] == first["submission"]
    assert runs[1]["submission"] != runs[2]["submission"] or \
        runs[1]["val_accuracy_ci95"] is not None


def test_ties_share_the_star_whether_the_figure_was_rounded_or_not():
    # train logs the full float; predict overwrites it with one rounded to 6 digits.
    found = [{"run": 1, "params": {}, "val_accuracy": 0.9830952380952381},
             {"run": 2, "params": {}, "val_accuracy": 0.983095, "submission": "ab"},
             {"run": 3, "params": {}, "val_accuracy": 0.983095, "submission": "cd"},
             {"run": 4, "params": {}, "val_accuracy": 0.98}]
    assert [r["best"] for r in runs_table.rows(found)] == [True, True, True, False]


def test_cross_validation_is_in_the_table_and_the_closing_lines(tmp_path, tiny_csvs, capsys):
    out = tmp_path / "out"
    args = [f"--set=data.train={tiny_csvs[0]}", f"--set=data.test={tiny_csvs[1]}",
            f"--set=outputs={out}", "--set=train.hidden=8", "--set=train.epochs=1"]
    assert cli.main(args) == 0
    capsys.readouterr()
    assert cli.main([*args, "--set=train.cv_folds=2", "--set=train.members=2", "train"]) == 0
    said = capsys.readouterr().out
    model = json.loads((out / "train" / "metrics.json").read_text())
    cv = model["cv"]
    assert cv["networks"] == 1
    # The closing lines give this run's figures, not the previous run's metrics.json.
    assert f"validation accuracy: {100 * model['val_accuracy']:.2f}% (the model's" in said
    assert f"cross-validation: {100 * cv['mean']:.2f}% +- {100 * cv['std']:.2f} (2 folds" in said
    # The log line says plainly what was scored.
    assert "2-fold cross-validation of one network, not the ensemble of 2" in said
    rows = runs_table.load_table(out)
    assert rows[0]["cv"] is None
    assert rows[1]["cv"] == f"{100 * cv['mean']:.2f}% +-{100 * cv['std']:.2f} (1 network)"
    assert "cv (mean +-sd)" in runs_table.format_table(rows).splitlines()[0]


def test_restore_refuses_a_cache_entry_another_model_replaced(tmp_path, tiny_csvs, capsys):
    out = tmp_path / "out"
    args = [f"--set=data.train={tiny_csvs[0]}", f"--set=data.test={tiny_csvs[1]}",
            f"--set=outputs={out}", "--set=train.hidden=8", "--quiet"]
    assert cli.main([*args, "--set=train.epochs=1"]) == 0
    assert cli.main([*args, "--set=train.epochs=2"]) == 0
    first, second = logged(out)
    # As a `train --force` retrain at another thread count would: run 1's key now
    # holds another model (here run 2's, which is in place).
    outs = {Path(name).stem: out / "train" / name for name in TRAIN_OUTS}
    cache.store(out, "train", first["key"], outs, 500)
    kept = {p: p.read_bytes() for p in [*outs.values(), out / "submission.csv"]}
    capsys.readouterr()
    assert cli.main(["restore", "1", *args]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: run 1 cannot be restored: its run cache entry now holds "
                          f"another model ({second['model'][:12]}, not {first['model'][:12]}")
    assert "retrain it with `" in err and err.count("\n") == 1
    assert {p: p.read_bytes() for p in kept} == kept            # nothing was swapped in
    # Restoring run 2, whose model is in place, still works and checks it.
    assert cli.main(["restore", "2", *args]) == 0


def test_the_table_fits_120_characters_unless_wide():
    # params-best.yaml's runs beside params.yaml's: many params differ, and members twice.
    best = {"train.epochs": 160, "train.l2": 1e-5, "train.augment_shift": 1.5,
            "train.augment_scale": 0.08, "train.augment_shear": 8.0,
            "train.elastic_alpha": 20.0, "train.members": 5, "train.keep_best": True,
            "train.lr_schedule": "cosine", "predict.tta_shift": 1.0}
    plain = {"train.epochs": 15, "train.l2": 0.0, "train.augment_shift": 0.0,
             "train.augment_scale": 0.0, "train.augment_shear": 0.0,
             "train.elastic_alpha": 0.0, "train.members": 1, "train.keep_best": False,
             "train.lr_schedule": "step", "predict.tta_shift": 0.0}
    found = [{"run": n, "time": "2026-12-08T01:30:00+00:00", "params": params,
              "params_file": name, "val_accuracy": acc, "members": params["train.members"],
              "epochs": params["train.epochs"], "train_seconds": 9.5 * n, "restored": n == 3,
              "val_accuracy_ci95": {"low": acc - 0.004, "high": acc + 0.004},
              "submission": f"{n}" * 64, "changed": {"train.epochs": 2} if n == 3 else {}}
             for n, (params, name, acc) in enumerate([(plain, "params.yaml", 0.9836),
                                                      (best, "params-best.yaml", 0.9951),
                                                      (plain, "params.yaml", 0.9836)], 1)]
    rows = runs_table.rows(found)
    narrow = runs_table.format_table(rows)
    assert max(len(line) for line in narrow.splitlines()) <= 120, narrow
    header = narrow.splitlines()[0]
    assert header.startswith("run  time") and "val accuracy" in header and "submission" in header
    # params-best.yaml's params are named by its column; the one --set changed is shown.
    assert "params file" in header and "train.epochs" in header and "train.l2" not in header
    assert "the params their params file gives" in narrow
    assert "`python run.py runs --wide` shows every column" in narrow.splitlines()[-1]
    wide = runs_table.format_table(rows, None)
    assert max(len(line) for line in wide.splitlines()) > 120
    assert all(k in wide.splitlines()[0] for k in best)


def test_status_names_the_data_and_a_step_the_cache_would_restore(tmp_path, tiny_csvs):
    out = tmp_path / "out"
    args = [f"--set=data.train={tiny_csvs[0]}", f"--set=data.test={tiny_csvs[1]}",
            f"--set=outputs={out}", "--set=train.hidden=8"]
    for epochs in (1, 2):
        assert run_cli(*args, f"--set=train.epochs={epochs}").returncode == 0
    said = run_cli("status", *args, "--set=train.epochs=1").stdout.splitlines()
    assert said[0] == f"data: {tiny_csvs[0]} and {tiny_csvs[1]} (outputs in {out})"
    train = next(line for line in said if line.startswith("train "))
    assert "stale: param train.epochs changed (2 -> 1)" in train
    assert train.endswith("(its result is in the run cache: restored, not run again)")
    fresh = run_cli("status", *args, "--set=train.epochs=3").stdout
    assert "run cache" not in fresh
    demo = run_cli("status", f"--set=data.train={tmp_path}/absent.csv",
                   f"--set=data.test={tmp_path}/absent.csv", f"--set=outputs={out}").stdout
    assert demo.splitlines()[0].startswith("data: the bundled sample in ")
    assert f"outputs in {out / 'sample'}" in demo.splitlines()[0]


def test_a_note_on_a_run_is_shown_in_the_table(tmp_path, tiny_csvs, capsys):
    out = tmp_path / "out"
    args = [f"--set=data.train={tiny_csvs[0]}", f"--set=data.test={tiny_csvs[1]}",
            f"--set=outputs={out}", "--set=train.hidden=8", "--set=train.epochs=1"]
    assert cli.main([*args, "--quiet"]) == 0
    assert cli.main(["note", "1", "public LB 0.99321", *args]) == 0
    assert capsys.readouterr().out.endswith("note on run 1: public LB 0.99321\n")
    rows = runs_table.load_table(out)
    assert rows[0]["note"] == "public LB 0.99321"
    assert "public LB 0.99321" in runs_table.format_table(rows).splitlines()[1]
    assert cli.main(["note", "2", "x", *args]) == 1
    assert "note: no run 2 in " in capsys.readouterr().err
    assert cli.main(["note", "1", *args]) == 1


def test_blend_averages_runs_from_the_cache_into_a_run_of_its_own(tmp_path, tiny_csvs, capsys):
    out = tmp_path / "out"
    args = [f"--set=data.train={tiny_csvs[0]}", f"--set=data.test={tiny_csvs[1]}",
            f"--set=outputs={out}", "--set=train.hidden=8", "--quiet"]
    submissions = []
    for epochs in (1, 2, 1):                                # run 3: run 1 restored
        assert cli.main([*args, f"--set=train.epochs={epochs}"]) == 0
        submissions.append((out / "submission.csv").read_bytes())
    # The same model twice: the blend is that model's submission and figure.
    assert cli.main(["blend", "1", "3", *args]) == 0
    same = out / "blend" / "submission.csv"
    assert same.read_bytes() == submissions[0]
    assert cli.main(["blend", "1", "2", *args]) == 0        # run 1's model from the cache
    runs = logged(out)
    assert [r["run"] for r in runs] == [1, 2, 3, 4, 5]
    assert runs[4]["event"] == "blend" and runs[4]["runs"] == [1, 2]
    assert runs[3]["val_accuracy"] == runs[0]["val_accuracy"]
    assert runs[4]["submission"] == artifacts.file_hash(same)
    assert (out / "submission.csv").read_bytes() == submissions[2]   # left alone
    rows = runs_table.rows(runs)
    assert [r["blend"] for r in rows] == [None, None, None, "1+3", "1+2"]
    assert "train.epochs" in rows[0] and rows[4]["train.epochs"] is None
    assert runs_table.format_table(rows).splitlines()[0].split()[:3] == ["run", "time", "blend"]
    capsys.readouterr()
    # Other validation rows are refused, in one line.
    assert cli.main([*args, "--set=train.epochs=1", "--set=preprocess.val_fraction=0.2"]) == 0
    assert cli.main(["blend", "1", "6", *args]) == 1
    assert capsys.readouterr().err == ("error: blend: runs 1 and 6 have different validation "
                                       "rows (other data, seed or preprocess.val_fraction), so "
                                       "their probabilities cannot be averaged row by row\n")
    assert cli.main(["blend", "1", "2", *args]) == 1
    assert "the validation rows in the outputs folder are not those of run 1: run `python " \
        "run.py restore 1` first" in capsys.readouterr().err
    for words in (["blend", "1"], ["blend", "1", "1"], ["blend", "1", "9"], ["blend", "4", "1"]):
        assert cli.main([*words, *args]) == 1
    assert cli.main(["restore", "4", *args]) == 1
    assert "run 4 is a blend of runs 1, 3" in capsys.readouterr().err

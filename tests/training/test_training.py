"""Training options on tiny data: schedule, augmentation, keep-best, early stopping,
dropout, max-norm, ensembles and training on all labelled rows."""
import copy
import dataclasses
import logging
import re
import signal
import subprocess
import sys

import numpy as np
import pytest
from helpers import (
    ROOT,
    plain_settings,
    run_cli,
    sample_rows,
    train_settings,
    write_lines,
)

from pipeline import artifacts
from pipeline.config import params as params_mod
from pipeline.errors import PipelineError
from pipeline.nn import network, optim
from pipeline.steps import train as train_step
from pipeline.training import crossval, members, splits
from pipeline.training import ensemble as model
from pipeline.training import fit as fit_mod


@pytest.fixture(scope="module")
def digits():
    """(X, y, X_val, y_val): 240 training and 60 validation digits from the sample."""
    rows = np.array([line.split(",") for line in sample_rows("train.csv.gz", 300)[1:]], int)
    X, y = (rows[:, 1:] / 255).astype(np.float32), rows[:, 0]
    return X[:240], y[:240], X[240:], y[240:]


def fit(digits, seed=0, on_snapshot=None, resume=None, **changes):
    """fit a small plain network (Train.plain), with `changes` to its settings."""
    X, y, X_val, y_val = digits
    cfg = plain_settings(**{**dict(hidden=16, epochs=3, batch_size=32, lr=1e-3,
                                   rms_decay=0.9, eps=1e-8, l2=1e-5), **changes})
    return fit_mod.fit(X, y, X_val, y_val, cfg, rng=np.random.default_rng(seed),
                     on_snapshot=on_snapshot, resume=resume)


def same(a: dict, b: dict) -> bool:
    return all(np.array_equal(a[k], b[k]) for k in network.PARAM_NAMES)


def test_fit_records_and_applies_the_scheduled_rate(digits):
    step = dict(schedule="step", lr=1e-2, lr_step_epochs=1, lr_step_gamma=0.5)
    _, history = fit(digits, **step)
    assert [row["lr"] for row in history] == [1e-2, 5e-3, 2.5e-3]
    # A rate of zero from the second epoch on (a gamma of 0, which params.load refuses):
    # no step moves the weights after the first.
    stop = {**step, "lr_step_gamma": 0.0}
    one, _ = fit(digits, epochs=1, **stop)
    three, _ = fit(digits, epochs=3, **stop)
    assert same(one, three)


def test_augmented_training_is_reproducible_and_differs_from_plain(digits):
    augment = dict(augment_shift=2.0, augment_rotate=10.0, elastic_alpha=20.0)
    a, _ = fit(digits, **augment)
    b, _ = fit(digits, **augment)
    plain, _ = fit(digits)
    assert same(a, b) and not same(a, plain)


def test_keep_best_returns_the_best_epoch_weights(digits):
    X_val, y_val = digits[2], digits[3]
    # A large rate makes validation accuracy jump about from epoch to epoch.
    params, history = fit(digits, epochs=6, lr=0.05, keep_best=True)
    accuracy = (network.predict_proba(params, X_val).argmax(axis=1) == y_val).mean()
    best = fit_mod.best_epoch(history)
    assert accuracy == history[best - 1]["val_accuracy"] == max(r["val_accuracy"] for r in history)
    last, _ = fit(digits, epochs=6, lr=0.05)
    assert same(last, params) == (best == 6)


def test_patience_stops_once_accuracy_stops_improving(digits):
    # So small a rate that nothing changes: epoch 1 stays the best, and two more end it.
    _, history = fit(digits, epochs=10, lr=1e-12, patience=2)
    assert [row["epoch"] for row in history] == [1, 2, 3]
    _, history = fit(digits, epochs=4, lr=1e-12)
    assert len(history) == 4


@pytest.mark.parametrize("lr,l2", [(100.0, 1e-5), (100.0, 0.0), (1e30, 1e-5)])
def test_a_far_too_large_rate_is_divergence_even_with_a_finite_loss(digits, lr, l2):
    # Without L2 the loss cannot grow a hundredfold (the cross-entropy is capped):
    # a cross-entropy far worse than guessing is what gives it away.
    with pytest.raises(PipelineError, match=r"training diverged at epoch 1: .* train\.lr="), \
            np.errstate(over="ignore", invalid="ignore"):
        fit(digits, lr=lr, l2=l2)
    params, _ = fit(digits, lr=0.02)                # ten times the default, yet it learns
    assert all(np.isfinite(p).all() for p in params.values())


def test_dropout_zeroes_about_rate_and_keeps_the_mean():
    X = np.ones((200, 784), np.float32)
    fit_mod.dropout_(X, 0.25, np.random.default_rng(0))
    assert set(np.unique(X)) == {0.0, np.float32(1 / 0.75)}
    assert (X == 0).mean() == pytest.approx(0.25, abs=0.01)
    assert X.mean() == pytest.approx(1.0, abs=0.02)


def test_max_norm_caps_only_the_long_columns():
    params = {"W1": np.array([[3.0, 0.3], [4.0, 0.4]], np.float32),
              "W2": np.array([[3.0], [4.0]], np.float32)}
    fit_mod.max_norm_(params, 2.0)
    np.testing.assert_allclose(params["W1"], [[1.2, 0.3], [1.6, 0.4]], rtol=1e-6)
    np.testing.assert_array_equal(params["W2"], np.float32([[3.0], [4.0]]))   # hidden units only


def test_dropout_and_max_norm_train(digits):
    params, history = fit(digits, input_dropout=0.2, max_norm=0.5)
    assert np.linalg.norm(params["W1"], axis=0).max() <= 0.5 * (1 + 1e-5)
    assert history[-1]["val_accuracy"] > 0.3


# --- the stage: ensembles and all_rows ---

def run_stage(tmp_path, digits, **changes):
    """Run the train stage on `digits` with params.yaml's train section, a small
    network, and `changes` (not checked, as for a direct caller of train_step.run)."""
    inputs = {}
    for name, array in zip(("train_x", "train_y", "val_x", "val_y"), digits):
        inputs[name] = tmp_path / "preprocess" / f"{name}.npy"
        artifacts.save_array(inputs[name], array)
    out = {name: tmp_path / "train" / name for name in ("model.npz", "history.csv",
                                                        "metrics.json", "timing.json")}
    train_step.train(inputs, {"model": out["model.npz"], "history": out["history.csv"],
                       "metrics": out["metrics.json"], "timing": out["timing.json"]}, seed=0,
              cfg=train_settings(**{"hidden": 16, "epochs": 2, "batch_size": 32, **changes}))
    return (artifacts.load_arrays(out["model.npz"]), out["history.csv"].read_text(),
            artifacts.load_json(out["metrics.json"]))


def test_ensemble_probabilities_are_the_mean_of_its_members(tmp_path, digits):
    X_val, y_val = digits[2], digits[3]
    saved, history, metrics = run_stage(tmp_path / "three", digits, members=3)
    assert saved["W1"].shape == (3, 784, 16) and saved["b2"].shape == (3, 10)
    nets = model.members(saved)
    each = [network.predict_proba(net, X_val) for net in nets]
    mean = model.ensemble_proba(nets, X_val, batch_size=7)
    np.testing.assert_allclose(mean, np.mean(each, axis=0), rtol=1e-6, atol=1e-7)
    assert not np.allclose(each[0], each[1])                    # different seeds
    assert metrics["val_accuracy"] == (mean.argmax(axis=1) == y_val).mean()
    assert metrics["member_val_accuracy"] == [(p.argmax(axis=1) == y_val).mean() for p in each]
    assert metrics["members"] == 3 and metrics["val_held_out"] is True
    lines = history.splitlines()
    assert lines[0].split(",") == list(train_step.HISTORY_COLUMNS)
    assert [line.split(",")[-1] for line in lines[1:]] == ["0", "0", "1", "1", "2", "2"]
    # Wall-clock times only in timing.json, which no later step reads.
    assert "seconds" not in lines[0] and not any("seconds" in k for k in metrics)
    timing = artifacts.load_json(tmp_path / "three" / "train" / "timing.json")
    assert [len(member) for member in timing["epoch_seconds"]] == [2, 2, 2]
    # Members may train side by side (members.side_by_side), so their epochs overlap.
    at_once = members.side_by_side(train_settings(hidden=16, epochs=2, batch_size=32,
                                                members=3))[0]
    epochs_seconds = sum(map(sum, timing["epoch_seconds"]))
    assert timing["train_seconds"] >= epochs_seconds / at_once - 1e-3
    # Member 0 does not depend on the size of the ensemble.
    single, _, _ = run_stage(tmp_path / "one", digits, members=1)
    assert all(np.array_equal(single[k][0], saved[k][0]) for k in network.PARAM_NAMES)


def test_all_rows_says_validation_is_not_held_out(tmp_path, digits, caplog):
    held_out, _, _ = run_stage(tmp_path / "split", digits)
    logger = logging.getLogger("pipeline")
    logger.addHandler(caplog.handler)          # the CLI may have stopped propagation
    try:
        model, _, metrics = run_stage(tmp_path / "all", digits, all_rows=True)
    finally:
        logger.removeHandler(caplog.handler)
    assert metrics["val_held_out"] is False
    assert "not held out" in caplog.text
    assert not np.array_equal(model["W1"], held_out["W1"])


@pytest.mark.parametrize("option", [{"keep_best": True}, {"patience": 3}])
def test_all_rows_refuses_to_choose_epochs_on_trained_rows(tmp_path, digits, option):
    # params.load refuses this pair first (test_params.py); train_step.run checks again for
    # callers that skip it, as this test does.
    with pytest.raises(PipelineError, match="all_rows"):
        run_stage(tmp_path, digits, all_rows=True, **option)
    assert not (tmp_path / "train").exists()


def test_params_best_differs_only_in_train():
    default = params_mod.load(ROOT / "params.yaml")
    best = params_mod.load(ROOT / "params-best.yaml")
    changed = {k for k in default if best[k] != default[k]}
    assert changed and all(k.startswith("train.") for k in changed)
    assert best["train.members"] > 1 and best["train.elastic_alpha"] > 0
    # params-single.yaml is params-best.yaml distilled into one network, from fewer
    # members (time).
    single = params_mod.load(ROOT / "params-single.yaml")
    assert {k for k in best if single[k] != best[k]} == {
        "train.distill_temperature", "train.members"}


def test_training_leaves_no_subnormal_weight_or_state(monkeypatch, tmp_path):
    """Weights of pixels blank in every image sink below float32's normal range
    (Intel CPUs then slow down a hundredfold); RMSprop must flush them, during
    training and before anything is saved. The same run without the flush shows
    that this data does produce them, so the check can fail."""
    rows = np.array([line.split(",") for line in sample_rows("train.csv.gz", 1000)[1:]], int)
    X, y = (rows[:, 1:] / 255).astype(np.float32), rows[:, 0]
    seen = []                                   # after each step: subnormal counts

    class Watched(fit_mod.RMSprop):
        def __init__(self, params, **kw):
            super().__init__(params, **kw)
            self.params = params
            seen.append(self)

        def step(self, params, grads):
            super().step(params, grads)
            self.counts = getattr(self, "counts", []) + [
                (optim.count_subnormal(params), optim.count_subnormal(self.mean_sq))]

    monkeypatch.setattr(fit_mod, "RMSprop", Watched)
    cfg = plain_settings(hidden=64, epochs=4, batch_size=32, lr=2e-3, rms_decay=0.9, eps=1e-8,
                         l2=1e-5)

    monkeypatch.setattr(Watched, "flush", lambda self, params: None)
    fit_mod.fit(X[:900], y[:900], X[900:], y[900:], cfg, rng=np.random.default_rng(0))
    unflushed = seen.pop()
    assert sum(unflushed.counts[-1]) > 100, "the control run made no subnormal values"

    monkeypatch.undo()
    monkeypatch.setattr(fit_mod, "RMSprop", Watched)
    params, _ = fit_mod.fit(X[:900], y[:900], X[900:], y[900:], cfg, rng=np.random.default_rng(0))
    opt = seen.pop()
    # Between flushes a value may be subnormal for at most FLUSH_EVERY steps.
    assert all(c == (0, 0) for c in opt.counts[optim.FLUSH_EVERY - 1::optim.FLUSH_EVERY])
    assert optim.count_subnormal(opt.params) == optim.count_subnormal(opt.mean_sq) == 0
    assert all(optim.count_subnormal(p) == 0 for p in params.values())


def test_fit_resumed_from_any_epoch_ends_as_if_never_stopped(digits):
    """Progress saved after epoch 2 of 4 and handed to a fresh fit gives the same
    weights and history, bit for bit: the rng, RMSprop's state and step count, the
    best epoch and the history all come back (augmentation and dropout draw from
    the rng, keep_best keeps a copy)."""
    options = dict(epochs=4, augment_shift=1.0, augment_rotate=5.0, input_dropout=0.1,
                   keep_best=True, patience=3)
    saved = []

    def keep(now):
        saved.append(copy.deepcopy(now))

    whole, history = fit(digits, on_snapshot=keep, **options)
    assert [p.epoch for p in saved] == [1, 2, 3, 4]
    again, rest = fit(digits, seed=99, resume=saved[1], **options)     # the seed is restored
    assert same(whole, again)
    assert [r["loss"] for r in rest] == [r["loss"] for r in history]
    finished, _ = fit(digits, resume=saved[-1], **options)           # nothing left to train
    assert same(whole, finished)


def test_a_killed_training_resumes_from_its_last_epoch(tmp_path):
    """SIGKILL in epoch 3 or 4 of 8: the next run goes on from the checkpoint, and
    ends with the model and submission of a run never stopped; the checkpoint is
    then gone."""
    train_csv = write_lines(tmp_path / "train.csv", sample_rows("train.csv.gz", 400))
    test_csv = write_lines(tmp_path / "test.csv", sample_rows("test.csv.gz", 60))
    base = ["submit", f"--set=data.train={train_csv}", f"--set=data.test={test_csv}",
            "--set=data.sample=null", "--set=train.epochs=8", "--set=train.members=2"]
    clean, killed = tmp_path / "clean", tmp_path / "killed"
    assert run_cli(*base, f"--set=outputs={clean}").returncode == 0
    proc = subprocess.Popen([sys.executable, "-u", str(ROOT / "run.py"), *base,
                             f"--set=outputs={killed}"], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, stdin=subprocess.DEVNULL)
    for line in proc.stdout:
        if "epoch 3/8" in line and "member 2/2" in line:
            proc.send_signal(signal.SIGKILL)        # epoch 2's checkpoint, maybe 3's, is saved
            break
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    assert (killed / "train" / "checkpoint.npz").exists()
    resumed = run_cli(*base, f"--set=outputs={killed}")
    assert re.search(r"resuming from the checkpoint after epoch [23] of member 2", resumed.stdout)
    for name in ("train/model.npz", "train/history.csv", "submission.csv"):
        assert (killed / name).read_bytes() == (clean / name).read_bytes(), name
    assert not (killed / "train" / "checkpoint.npz").exists()


@pytest.mark.parametrize("k", [2, 3, 7])
def test_stratified_folds_hold_every_row_once_and_each_class_evenly(k):
    labels = np.random.default_rng(0).integers(0, 10, 503)
    fold = splits.stratified_folds(labels, k, np.random.default_rng(1))
    assert fold.shape == labels.shape and set(fold) == set(range(k))   # one fold per row
    for cls in range(10):
        counts = np.bincount(fold[labels == cls], minlength=k)
        assert counts.max() - counts.min() <= 1
    sizes = np.bincount(fold)
    assert sizes.max() - sizes.min() <= 1


def test_cross_validation_scores_each_row_once_on_a_network_that_never_saw_it(digits):
    X, y = np.concatenate(digits[::2]), np.concatenate(digits[1::2])
    seen = []

    def train_one(i, X_fit, y_fit, X_held, y_held):
        seen.append((i, len(X_fit), len(X_held)))
        held = {r.tobytes() for r in X_held}
        assert not any(r.tobytes() in held for r in X_fit)
        return fit((X_fit, y_fit, X_held, y_held), epochs=2)[0]

    cv = crossval.cross_validate(X, y, 3, np.random.default_rng(0), train_one)
    assert [i for i, _, _ in seen] == [0, 1, 2]
    assert sum(n_held for _, _, n_held in seen) == len(y) == cv["rows"] == 300
    assert cv["mean"] == pytest.approx(np.mean(cv["fold_accuracy"]), abs=1e-6)
    assert cv["accuracy_ci95"]["low"] < cv["accuracy"] < cv["accuracy_ci95"]["high"]


def test_the_stage_adds_cross_validation_to_its_metrics_and_keeps_its_model(tmp_path, digits):
    plain, _, _ = run_stage(tmp_path / "plain", digits)
    saved, _, scores = run_stage(tmp_path / "cv", digits, cv_folds=3)
    assert all(np.array_equal(plain[k], saved[k]) for k in network.PARAM_NAMES)
    assert scores["cv"]["folds"] == 3 and len(scores["cv"]["fold_accuracy"]) == 3
    assert scores["cv"]["rows"] == len(digits[1]) + len(digits[3])


def test_a_batch_larger_than_the_training_rows_is_named(tmp_path, digits, caplog):
    logger = logging.getLogger("pipeline")
    logger.addHandler(caplog.handler)          # the CLI may have stopped propagation
    try:
        run_stage(tmp_path / "big", digits, batch_size=500, epochs=1)
    finally:
        logger.removeHandler(caplog.handler)
    assert "train.batch_size=500 is more than the 240 training rows" in caplog.text


@pytest.fixture(scope="module")
def sample_split():
    """2000 training and 1000 held-out digits of the bundled sample."""
    rows = np.array([line.split(",") for line in sample_rows("train.csv.gz", 3000)[1:]], int)
    X, y = (rows[:, 1:] / 255).astype(np.float32), rows[:, 0]
    return X[:2000], y[:2000], X[2000:], y[2000:]


def test_a_distilled_student_learns_the_ensembles_outputs(sample_split):
    """A student trained on three networks' softened outputs fits them (its soft-target
    loss falls far below an untrained network's and an independent network's) and
    agrees with the ensemble more often than an independently trained network does."""
    X, y, X_held, y_held = sample_split
    cfg = plain_settings(hidden=64, epochs=4, batch_size=64, lr=2e-3, rms_decay=0.9, eps=1e-8,
                         l2=1e-5, augment_shift=1.0)
    teachers = [fit_mod.fit(X, y, X_held, y_held, cfg, rng=np.random.default_rng(k))[0]
                for k in range(3)]
    teach = members.soft_targets(teachers, 3.0)
    student_cfg = dataclasses.replace(cfg, distill_temperature=3.0, distill_weight=1.0)
    student, _ = fit_mod.fit(X, y, X_held, y_held, student_cfg, rng=np.random.default_rng(9),
                           teacher=teach)
    # The same settings without a teacher: no distillation.
    alone, _ = fit_mod.fit(X, y, X_held, y_held, student_cfg, rng=np.random.default_rng(9))
    untrained = network.init_params(np.random.default_rng(9), 784, 64, 10)
    targets = teach(X_held)

    def soft_loss(params):
        return network.loss(params, X_held, y_held, 0.0, targets, 3.0, 1.0)

    assert soft_loss(student) < soft_loss(alone) < soft_loss(untrained)
    agreed = {name: (network.predict_proba(p, X_held).argmax(1) == targets.argmax(1)).mean()
              for name, p in (("student", student), ("alone", alone))}
    assert agreed["student"] > agreed["alone"], agreed


def test_a_teacher_without_a_temperature_is_refused(digits):
    X, y, X_val, y_val = digits
    with pytest.raises(ValueError, match="distill_temperature > 0"):
        fit_mod.fit(X, y, X_val, y_val, plain_settings(hidden=8, epochs=1),
                  rng=np.random.default_rng(0), teacher=lambda images: None)


def test_the_stage_keeps_only_the_student_when_distilling(tmp_path, digits):
    saved, history, scores = run_stage(tmp_path / "d", digits, members=2,
                                       distill_temperature=2.0)
    assert saved["W1"].shape == (1, 784, 16) and scores["members"] == 1
    assert scores["distilled_from"]["members"] == 2
    assert len(scores["distilled_from"]["member_val_accuracy"]) == 2
    assert [line.split(",")[-1] for line in history.splitlines()[1:]] == \
        ["0", "0", "1", "1", "2", "2"]                 # two teachers, then the student


def test_the_student_trains_for_distill_epochs_when_set(tmp_path, digits):
    _, history, scores = run_stage(tmp_path / "d", digits, members=2, distill_temperature=2.0,
                                   distill_epochs=3)
    rows = [line.split(",") for line in history.splitlines()[1:]]
    assert [(r[0], r[-1]) for r in rows] == [("1", "0"), ("2", "0"), ("1", "1"), ("2", "1"),
                                             ("1", "2"), ("2", "2"), ("3", "2")]
    assert scores["epochs"] == 3 and scores["member_epochs"] == [3]

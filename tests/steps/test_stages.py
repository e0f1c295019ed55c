"""Each stage on tiny data, called as a function, checking the artifacts it writes."""
from pathlib import Path

import numpy as np
import pytest
from helpers import make_params, sample_rows, write_lines

from pipeline import artifacts
from pipeline.engine import runner
from pipeline.errors import PipelineError
from pipeline.steps import preprocess, submit
from pipeline.steps.graph import STEPS, artifact


@pytest.fixture
def params(tmp_path, tiny_csvs):
    return make_params(tmp_path, *tiny_csvs)


def run_until(params, last):
    steps = STEPS[: [s.name for s in STEPS].index(last) + 1]
    return runner.run(params, list(steps))


def test_ingest_stores_uint8_images_and_integer_labels(params):
    run_until(params, "ingest:test")
    images = np.load(artifact(params, "ingest", "train_images.npy"))
    labels = np.load(artifact(params, "ingest", "train_labels.npy"))
    test = np.load(artifact(params, "ingest", "test_images.npy"))
    assert images.shape == (400, 784) and images.dtype == np.uint8
    assert labels.shape == (400,) and labels.dtype.kind == "i" and set(labels) <= set(range(10))
    assert test.shape == (60, 784) and test.dtype == np.uint8
    assert images.max() == 255 and images.min() == 0


def test_preprocess_scales_and_splits_stratified(params):
    run_until(params, "preprocess:test")
    load = lambda name: np.load(artifact(params, "preprocess", name + ".npy"))
    train_x, train_y, val_x, val_y = (load(n) for n in ("train_x", "train_y", "val_x", "val_y"))
    assert train_x.dtype == val_x.dtype == np.float32
    assert 0.0 <= train_x.min() and train_x.max() == 1.0
    assert len(train_x) + len(val_x) == 400 and len(val_x) == pytest.approx(40, abs=5)
    counts = np.bincount(train_y, minlength=10) + np.bincount(val_y, minlength=10)
    np.testing.assert_allclose(np.bincount(val_y, minlength=10), 0.1 * counts, atol=1)
    assert load("test_x").shape == (60, 784)


def test_stratified_split_is_a_seeded_partition():
    labels = np.repeat(np.arange(10), 30)
    a = preprocess.stratified_split(labels, 0.2, np.random.default_rng(5))
    b = preprocess.stratified_split(labels, 0.2, np.random.default_rng(5))
    c = preprocess.stratified_split(labels, 0.2, np.random.default_rng(6))
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[1], c[1])
    assert sorted(np.concatenate(a)) == list(range(300))
    assert (np.bincount(labels[a[1]]) == 6).all()


def test_train_writes_model_history_and_metrics(params):
    run_until(params, "train")
    model = artifacts.load_arrays(artifact(params, "train", "model.npz"))
    assert model["W1"].shape[1:] == (784, 256) and model["W2"].shape[1:] == (256, 10)
    history = artifact(params, "train", "history.csv").read_text().splitlines()
    assert history[0].startswith("epoch,loss,train_accuracy,val_loss,val_accuracy")
    assert len(history) == 1 + params["train.epochs"]
    metrics = artifacts.load_json(artifact(params, "train", "metrics.json"))
    assert 0.5 < metrics["val_accuracy"] <= 1.0     # 2 epochs on 360 rows: far above chance


def test_predict_and_submit_write_one_row_per_test_image(params):
    run_until(params, "submit")
    probs = np.load(artifact(params, "predict", "test_probs.npy"))
    assert probs.shape == (60, 10)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
    lines = (Path(params["outputs"]) / "submission.csv").read_text().splitlines()
    assert lines[0] == "ImageId,Label" and len(lines) == 61
    assert [int(l.split(",")[0]) for l in lines[1:]] == list(range(1, 61))
    assert [int(l.split(",")[1]) for l in lines[1:]] == probs.argmax(axis=1).tolist()


def test_submission_check_rejects_a_bad_file(tmp_path):
    path = tmp_path / "s.csv"
    path.write_text("ImageId,Label\n1,3\n3,4\n")
    with pytest.raises(PipelineError, match="line 3"):
        submit.check_submission(path, 2)
    path.write_text(submit.submission_text(np.array([3, 4])))
    submit.check_submission(path, 2)
    with pytest.raises(PipelineError, match="expected 3 rows"):
        submit.check_submission(path, 3)


def test_a_stage_alone_without_its_inputs_names_the_command_to_run(params):
    with pytest.raises(PipelineError, match=r"Run `python run.py train` without --single"):
        runner.run(params, [s for s in STEPS if s.name == "train"], single=True)


def test_another_seed_gives_other_weights(tmp_path, tiny_csvs):
    models = []
    for seed in (0, 1):
        params = make_params(tmp_path / str(seed), *tiny_csvs, f"seed={seed}", "train.epochs=1")
        run_until(params, "train")
        models.append(artifact(params, "train", "model.npz").read_bytes())
    assert models[0] != models[1]


def test_too_few_rows_for_a_validation_split_is_an_error(tmp_path):
    rows = sample_rows("train.csv.gz", 400)
    # One row per class: no class can spare a validation row.
    firsts = {}
    for line in rows[1:]:
        firsts.setdefault(line.split(",")[0], line)
    train_csv = write_lines(tmp_path / "train.csv", [rows[0], *firsts.values()])
    test_csv = write_lines(tmp_path / "test.csv", sample_rows("test.csv.gz", 5))
    params = make_params(tmp_path, train_csv, test_csv)
    with pytest.raises(PipelineError, match="10 labelled rows give 10 training and 0 validation"):
        run_until(params, "preprocess:train")
    assert not (Path(params["outputs"]) / "preprocess" / "train_x.npy").exists()

"""Predict: ensemble averaging, labels, and <outputs>/metrics.json from the validation rows."""
import re

import numpy as np
import pytest

from pipeline import artifacts
from pipeline.errors import PipelineError
from pipeline.nn import network
from pipeline.steps import predict
from pipeline.training import ensemble as model


@pytest.fixture
def files(tmp_path, rng):
    """A two-member model and small test/validation arrays saved as artifacts."""
    nets = [network.init_params(np.random.default_rng(s), 784, 16, 10) for s in (1, 2)]
    model = tmp_path / "model.npz"
    artifacts.save_arrays(model, **{k: np.stack([n[k] for n in nets])
                                    for k in network.PARAM_NAMES})
    paths = {"model": model, "train_metrics": tmp_path / "train_metrics.json"}
    artifacts.write_json(paths["train_metrics"], {"val_held_out": True})
    for name, n in (("test_x", 30), ("val_x", 40)):
        paths[name] = tmp_path / f"{name}.npy"
        np.save(paths[name], rng.random((n, 784), dtype=np.float32))
    paths["val_y"] = tmp_path / "val_y.npy"
    np.save(paths["val_y"], rng.integers(0, 10, 40))
    out = {n: tmp_path / "out" / f"{n}.npy" for n in ("test_probs", "test_labels", "val_probs")}
    out["metrics"] = tmp_path / "out" / "metrics.json"
    out["scores"] = tmp_path / "out" / "scores.json"
    return nets, paths, out


def test_ensemble_averages_the_members_softmax(files):
    nets, paths, out = files
    predict.predict(paths, out, batch_size=7, tta_shift=0.0)
    X = np.load(paths["test_x"])
    expected = (network.predict_proba(nets[0], X) + network.predict_proba(nets[1], X)) / 2
    np.testing.assert_allclose(np.load(out["test_probs"]), expected, rtol=1e-5)
    np.testing.assert_array_equal(np.load(out["test_labels"]), expected.argmax(axis=1))


def moved(X: np.ndarray, dx: int, dy: int) -> np.ndarray:
    """Images (N, 784) moved dx pixels left and dy up (content), zeros moving in."""
    image = X.reshape(-1, 28, 28)
    out = np.zeros_like(image)
    src = (slice(max(dy, 0), 28 + min(dy, 0)), slice(max(dx, 0), 28 + min(dx, 0)))
    dst = (slice(max(-dy, 0), 28 + min(-dy, 0)), slice(max(-dx, 0), 28 + min(-dx, 0)))
    out[(slice(None),) + dst] = image[(slice(None),) + src]
    return out.reshape(len(X), -1)


def test_test_time_augmentation_averages_the_image_and_four_moved_copies(files):
    nets, paths, out = files
    predict.predict(paths, out, batch_size=7, tta_shift=1.0)
    X = np.load(paths["test_x"])
    copies = [X] + [moved(X, dx, dy) for dx, dy in ((1, 0), (-1, 0), (0, 1), (0, -1))]
    np.testing.assert_array_equal(model.shifted_copies(X, 1.0)[1:], copies[1:])
    expected = np.mean([network.predict_proba(net, c) for net in nets for c in copies], axis=0)
    np.testing.assert_allclose(np.load(out["test_probs"]), expected, rtol=1e-5, atol=1e-7)
    np.testing.assert_array_equal(np.load(out["test_labels"]), expected.argmax(axis=1))
    assert not np.allclose(expected, (network.predict_proba(nets[0], X)
                                      + network.predict_proba(nets[1], X)) / 2)


def test_without_test_time_augmentation_nothing_is_moved(files):
    nets, paths, _ = files
    X = np.load(paths["test_x"])
    assert len(model.shifted_copies(X, 0.0)) == 1 and model.shifted_copies(X, 0.0)[0] is X
    assert [len(c) for c in model.shifted_copies(X[:0], 1.0)] == [0] * 5
    whole = model.ensemble_proba(nets, X, batch_size=4096)
    np.testing.assert_array_equal(model.ensemble_proba(nets, X, batch_size=7), whole)
    np.testing.assert_array_equal(whole, (network.predict_proba(nets[0], X)
                                          + network.predict_proba(nets[1], X)) / 2)


def test_metrics_json_scores_the_validation_probabilities(files):
    _, paths, out = files
    predict.predict(paths, out, batch_size=4096, tta_shift=0.0)
    scores = artifacts.load_json(out["metrics"])
    probs, y = np.load(out["val_probs"]), np.load(paths["val_y"])
    assert scores["val_accuracy"] == pytest.approx((probs.argmax(axis=1) == y).mean(), abs=1e-6)
    assert scores["val_loss"] == pytest.approx(network.cross_entropy(probs, y), abs=1e-6)
    assert scores["val_rows"] == 40 and scores["val_held_out"] is True
    # What train recorded for this model, whatever the params say today.
    artifacts.write_json(paths["train_metrics"], {"val_held_out": False})
    predict.predict(paths, out, batch_size=4096, tta_shift=0.0)
    assert artifacts.load_json(out["metrics"])["val_held_out"] is False
    # The headline alone in metrics.json; per-class scores and the matrix beside it.
    details = artifacts.load_json(out["scores"])
    assert sum(sum(row.values()) for row in details["confusion_matrix"].values()) == 40
    assert scores["val_f1"] == {c: s["f1"] for c, s in details["per_class"].items()}
    assert not {"confusion_matrix", "per_class"} & set(scores)


def test_labels_that_do_not_match_the_images_stop_with_both_paths(files):
    _, paths, out = files
    np.save(paths["val_y"], np.zeros(39, np.int64))
    with pytest.raises(PipelineError, match=r"val_y\.npy has 39 labels for 40 validation images"):
        predict.predict(paths, out, batch_size=4096, tta_shift=0.0)
    assert not out["metrics"].exists()


def test_a_model_with_non_finite_weights_is_refused_by_name(files):
    nets, paths, out = files
    model = artifacts.load_arrays(paths["model"])
    model["W2"][1, 3, 4] = np.nan
    artifacts.save_arrays(paths["model"], **model)
    with pytest.raises(PipelineError, match=r"model\.npz: the weights are not finite .* in W2"):
        predict.predict(paths, out, batch_size=4096, tta_shift=0.0)
    assert not any(p.exists() for p in out.values())


@pytest.mark.parametrize("change, found", [
    (lambda m: m.update(W2=m["W2"][:, :8]), "W2 (2, 8, 10)"),          # hidden sizes differ
    (lambda m: m.update(W1=m["W1"][0]), "W1 (784, 16)"),               # no member axis
    (lambda m: m.pop("b2"), "lacks b2"),
])
def test_a_model_whose_arrays_do_not_fit_is_refused_by_name(files, change, found):
    _, paths, out = files
    model = artifacts.load_arrays(paths["model"])
    change(model)
    artifacts.save_arrays(paths["model"], **model)
    with pytest.raises(PipelineError, match=r"model\.npz: .*" + re.escape(found)):
        predict.predict(paths, out, batch_size=4096, tta_shift=0.0)
    assert not any(p.exists() for p in out.values())

"""Validation metrics: confusion matrix and per-class scores against hand counts."""
import json

import numpy as np
import pytest

from pipeline.nn import metrics


def onehot_probs(pred, n_classes=10):
    probs = np.full((len(pred), n_classes), 0.01, np.float32)
    probs[np.arange(len(pred)), pred] = 1 - 0.01 * (n_classes - 1)
    return probs


def test_confusion_matrix_counts_true_rows_and_predicted_columns():
    y = np.array([0, 0, 1, 1, 1, 2])
    pred = np.array([0, 1, 1, 1, 2, 2])
    cm = metrics.confusion_matrix(y, pred, 3)
    np.testing.assert_array_equal(cm, [[1, 1, 0], [0, 2, 1], [0, 0, 1]])


def test_scores_match_hand_computed_values():
    cm = np.array([[1, 1, 0], [0, 2, 1], [0, 0, 1]])
    s = metrics.class_scores(cm)
    # class 1: predicted 3 times, 2 right; 3 true, 2 found.
    np.testing.assert_allclose(s["precision"], [1.0, 2 / 3, 1 / 2])
    np.testing.assert_allclose(s["recall"], [1 / 2, 2 / 3, 1.0])
    np.testing.assert_allclose(s["f1"], [2 / 3, 2 / 3, 2 / 3])
    np.testing.assert_array_equal(s["support"], [2, 3, 1])


def test_a_class_never_predicted_or_absent_scores_zero_not_nan():
    cm = metrics.confusion_matrix(np.array([0, 0, 1]), np.array([0, 0, 0]), 3)
    s = metrics.class_scores(cm)
    assert s["precision"][1] == 0 and s["recall"][1] == 0 and s["f1"][1] == 0
    assert s["precision"][2] == s["recall"][2] == s["f1"][2] == 0
    assert np.isfinite(s["f1"]).all()


def test_summary_is_dvc_shaped_and_consistent(rng):
    y = rng.integers(0, 10, 500)
    pred = np.where(rng.random(500) < 0.8, y, rng.integers(0, 10, 500))
    summary = metrics.summary(onehot_probs(pred), y)

    def leaves(d):
        for v in d.values():
            yield from leaves(v) if isinstance(v, dict) else [v]
    # `dvc metrics show` reads numbers in nested dicts and skips lists.
    assert all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in leaves(summary))
    json.dumps(summary)
    assert summary["val_accuracy"] == pytest.approx((pred == y).mean(), abs=1e-6)
    assert summary["val_rows"] == 500
    assert summary["val_loss"] == pytest.approx(-np.log(np.where(pred == y, 0.91, 0.01)).mean(),
                                                rel=1e-4)
    cm = metrics.matrix_from_summary(summary)
    np.testing.assert_array_equal(cm, metrics.confusion_matrix(y, pred))
    assert summary["confusion_matrix"]["true_3"]["pred_5"] == ((y == 3) & (pred == 5)).sum()
    f1 = [summary["per_class"][str(c)]["f1"] for c in range(10)]
    assert summary["macro_f1"] == pytest.approx(np.mean(f1), abs=1e-5)
    assert [summary["per_class"][str(c)]["support"] for c in range(10)] == \
        np.bincount(y, minlength=10).tolist()


def test_wilson_interval_by_hand():
    # 90 of 100, z = 1.959964, z^2 = 3.841459: centre (0.9 + 0.0192073) / 1.0384146 = 0.885202,
    # half 1.959964 / 1.0384146 * sqrt(0.0009 + 0.0000960) = 1.887457 * 0.0315600 = 0.059568.
    low, high = metrics.wilson_interval(90, 100)
    assert (low, high) == (pytest.approx(0.825634, abs=2e-6), pytest.approx(0.944771, abs=2e-6))
    assert metrics.wilson_interval(0, 10)[0] == 0 and metrics.wilson_interval(10, 10)[1] <= 1
    assert metrics.wilson_interval(10, 10)[0] == pytest.approx(0.722467, abs=2e-6)


def test_summary_gives_the_interval_and_the_error_count():
    y = np.arange(100) % 10
    probs = np.eye(10, dtype=np.float32)[y]
    probs[:10] = np.eye(10, dtype=np.float32)[(y[:10] + 1) % 10]      # 10 wrong
    s = metrics.summary(probs, y)
    assert s["val_errors"] == 10 and s["val_accuracy"] == 0.9
    assert s["val_accuracy_ci95"] == {"low": pytest.approx(0.825634, abs=1e-6),
                                      "high": pytest.approx(0.944771, abs=1e-6)}

"""The report stage: figures and index.html on tiny data, and the helpers behind them."""
import re

import numpy as np
import pytest
from helpers import ROOT, make_params
from PIL import Image

from pipeline import artifacts
from pipeline.engine import runner
from pipeline.errors import PipelineError
from pipeline.report import figures as report
from pipeline.steps.graph import STEPS, metrics_path


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """Every stage run once on 400 labelled and 60 test rows."""
    from helpers import sample_rows, write_lines
    tmp = tmp_path_factory.mktemp("report")
    train_csv = write_lines(tmp / "train.csv", sample_rows("train.csv.gz", 400))
    test_csv = write_lines(tmp / "test.csv", sample_rows("test.csv.gz", 60))
    params = make_params(tmp, train_csv, test_csv)
    ran = runner.run(params, list(STEPS))
    return params, ran, tmp / "outputs" / "report"


def test_report_runs_last_and_writes_every_figure_and_the_page(built):
    params, ran, folder = built
    assert ran[-1] == "report"
    for name in report.FIGURES:
        with Image.open(folder / f"{name}.png") as png:
            # The mistakes grid has one row per eight mistakes: a good tiny model may make few.
            assert png.format == "PNG" and png.width >= 500 and png.height >= 150
    page = (folder / "index.html").read_text()
    assert set(re.findall(r'<img src="([\w.]+)"', page)) == {f"{n}.png" for n in report.FIGURES}
    scores = artifacts.load_json(metrics_path(params))
    assert f"{100 * scores['val_accuracy']:.2f}%" in page
    assert page.count("<tr><td>") == 10                       # one row per class
    # The "Draw a digit" panel (tests/report/test_page.py tries it in a browser), with its code.
    assert page.count('id="digit-canvas"') == 1 and "window.digits = {" in page


def test_the_pages_files_are_the_steps_code_and_inlined_in_the_page(built):
    # A template or script missing from the step's code would change the page without
    # making the step stale; one linked rather than inlined would not work offline.
    folder = ROOT / "pipeline" / "report"
    files = {p.relative_to(ROOT).as_posix()
             for sub in ("templates", "static") for p in (folder / sub).iterdir()}
    assert files <= set(next(s for s in STEPS if s.name == "report").code)
    page = (built[2] / "index.html").read_text()
    for name in ("static/draw.js", "static/draw.css", "static/report.css"):
        assert (folder / name).read_text() in page
    assert "<script src" not in page and "<link" not in page


def test_a_second_run_skips_the_report(built):
    params, _, _ = built
    assert runner.run(params, list(STEPS)) == []


def test_history_without_a_column_names_it(tmp_path):
    path = tmp_path / "history.csv"
    path.write_text("epoch,loss,train_accuracy,val_accuracy\n1,0.5,0.8,0.8\n")
    with pytest.raises(PipelineError, match=r"history.csv, line 1: expected a column 'val_loss'"):
        report.read_history(path)
    path.write_text("epoch,loss,train_accuracy,val_loss,val_accuracy,member\n1,2,3,4,5,0\n")
    history = report.read_history(path)
    assert history["val_loss"].tolist() == [4.0] and history["member"].tolist() == [0.0]


def test_worst_mistakes_are_the_confidently_wrong_first():
    y = np.array([0, 1, 2, 3, 4])
    probs = np.full((5, 10), 0.01, np.float32)
    probs[0, 0] = 0.9                           # right
    probs[1, 7] = 0.6                           # wrong at 0.6
    probs[2, 5] = 0.95                          # wrong at 0.95
    probs[3, 3] = 0.99                          # right
    probs[4, 9] = 0.7                           # wrong at 0.7
    order, n_wrong = report.worst_mistakes(y, probs, limit=2)
    assert order.tolist() == [2, 4] and n_wrong == 3


def test_weight_tiles_keep_each_unit_and_leave_dead_units_blank(rng):
    W1 = rng.standard_normal((784, 6)).astype(np.float32)
    W1[:, 2] *= 1e-30                           # decayed to ~0, as a unit that never fires
    W1[:, 4] *= 5
    tiles, faint = report.weight_tiles(W1)
    assert tiles.shape == (6, 28, 28) and faint == 1
    np.testing.assert_allclose(np.abs(tiles).max(axis=(1, 2))[[0, 1, 3, 4, 5]], 1.0)
    assert np.abs(tiles[2]).max() < 1e-6
    # Unit j's tile is column j laid out row by row, like the input image.
    np.testing.assert_allclose(tiles[1].ravel() * np.abs(W1[:, 1]).max(), W1[:, 1], rtol=1e-6)


def test_mosaic_places_tiles_row_by_row_with_gaps():
    tiles = np.arange(5, dtype=np.float32)[:, None, None] * np.ones((5, 2, 3), np.float32)
    out = report.mosaic(tiles, cols=2, gap=1)
    assert out.shape == (3 * 3 - 1, 2 * 4 - 1)
    assert [out[0, 0], out[0, 4], out[3, 0], out[3, 4], out[6, 0]] == [0, 1, 2, 3, 4]
    assert np.isnan(out[6, 4]) and np.isnan(out[2, 0]) and np.isnan(out[0, 3])


def test_the_page_says_when_the_scores_are_not_held_out(rng):
    from pipeline.nn import metrics
    y = rng.integers(0, 10, 50)
    probs = rng.random((50, 10)).astype(np.float32)
    scores = metrics.summary(probs / probs.sum(axis=1, keepdims=True), y)
    history = {"epoch": np.array([1.0, 2.0])}
    figures = {"a.png": "A <figure>"}
    held = report.index_html(scores, history, figures)
    trained_on = report.index_html(scores, history, figures, held_out=False)
    assert "held out from training" in held and "Not held out" not in held
    assert "Not held out" in trained_on
    assert "A &lt;figure&gt;" in held and f"{100 * scores['val_accuracy']:.2f}%" in held


def test_the_page_gives_the_interval_marks_a_demo_and_lists_the_runs(rng):
    from pipeline.nn import metrics
    y = rng.integers(0, 10, 50)
    probs = rng.random((50, 10)).astype(np.float32)
    scores = metrics.summary(probs / probs.sum(axis=1, keepdims=True), y)
    history = {"epoch": np.array([1.0, 2.0])}
    ci = scores["val_accuracy_ci95"]
    plain = report.index_html(scores, history, {})
    assert (f"(95% interval {100 * ci['low']:.2f}-{100 * ci['high']:.2f}%; "
            f"{scores['val_errors']} of 50 wrong)") in plain
    assert "bundled sample" not in plain and "<h2>Runs</h2>" not in plain
    runs = (["run", "epochs"], [["1", "15"], ["2", "<20>"]])
    page = report.index_html(scores, history, {}, sample=True, runs=runs)
    assert "Made from the bundled sample</strong> (data/sample): a demo, not for upload" in page
    assert "<h2>Runs</h2>" in page and "<tr><th>run</th><th>epochs</th></tr>" in page
    assert "<tr><td>2</td><td>&lt;20&gt;</td></tr>" in page


def test_the_page_says_when_predict_used_test_time_augmentation(rng):
    from pipeline.nn import metrics
    y = rng.integers(0, 10, 20)
    probs = rng.random((20, 10)).astype(np.float32)
    scores = metrics.summary(probs / probs.sum(axis=1, keepdims=True), y)
    history = {"epoch": np.array([1.0])}
    assert "test-time augmentation" not in report.index_html({**scores, "tta_shift": 0.0},
                                                             history, {})
    page = report.index_html({**scores, "tta_shift": 1.0}, history, {})
    assert ("<th>test-time augmentation</th><td>each image and its copies moved 1 pixel(s) "
            "left, right, up and down, averaged</td>") in page

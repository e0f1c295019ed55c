"""The speed benchmark, on tiny generated data: it runs and reports every figure.
No timing is asserted: times on a busy machine prove nothing."""
import gzip
import re
import shutil
import zipfile

import numpy as np
import pytest

from pipeline.bench import ROOT, data, epochs
from pipeline.bench.cli import main
from pipeline.bench.torch_net import TorchNet
from pipeline.errors import PipelineError
from pipeline.nn import network
from pipeline.nn.optim import RMSprop
from pipeline.steps import ingest


def test_generated_csvs_read_back_exactly(tmp_path, rng):
    images = rng.integers(0, 256, (30, 784)).astype(np.uint8)
    images[0, :6] = [0, 9, 10, 99, 100, 255]            # every digit count
    labels = rng.integers(0, 10, 30)
    path = data.write_digits_csv(tmp_path / "train.csv", images, labels)
    back, back_labels = ingest.read_digits_csv(path, labelled=True)
    np.testing.assert_array_equal(back, images)
    np.testing.assert_array_equal(back_labels, labels)
    train_csv, test_csv = data.generate_csvs(tmp_path, 40, 15, rng)
    assert ingest.read_digits_csv(train_csv, labelled=True)[0].shape == (40, 784)
    test_images, _ = ingest.read_digits_csv(test_csv, labelled=False)
    assert test_images.shape == (15, 784) and 0.1 < (test_images > 0).mean() < 0.3



def test_bench_reads_the_pipelines_data_first(tmp_path, monkeypatch, tiny_csvs):
    """As `python run.py` does: the params' data paths, plain, gzipped or in Kaggle's
    zip; generated data, saying so, only when they are not found."""
    train_csv, test_csv = tiny_csvs
    monkeypatch.setattr(data, "pipeline_paths", lambda _: (str(train_csv), str(test_csv)))
    monkeypatch.setattr(data, "KAGGLE_ROWS", (30, 10))
    work = tmp_path / "work"
    work.mkdir()
    assert data.choose_csvs(None, None, work) == (
        tiny_csvs, f"{train_csv} and {test_csv} (the params' data.train and data.test)")
    gzipped = train_csv.with_name("train.csv.gz")
    gzipped.write_bytes(gzip.compress(train_csv.read_bytes()))
    train_csv.unlink()
    assert data.choose_csvs(None, None, work)[0] == (gzipped, test_csv)

    zipped = train_csv.with_name(ingest.KAGGLE_ZIP)
    with zipfile.ZipFile(zipped, "w") as archive:
        archive.writestr("train.csv", gzip.decompress(gzipped.read_bytes()))
        archive.write(test_csv, "test.csv")
    gzipped.unlink()
    test_csv.unlink()
    assert data.choose_csvs(None, None, work) == (
        (zipped, zipped), f"{zipped} (the params' data.train and data.test)")

    zipped.unlink()
    csvs, source = data.choose_csvs(None, None, work)
    assert csvs[0].parent == work and source.startswith("generated, 30 labelled + 10 test")
    assert f"; not found: {train_csv} and {test_csv} (the params' data.train" in source


def test_bench_data_paths_are_the_pipelines_params_local_included(tmp_path):
    shutil.copy(ROOT / "params.yaml", tmp_path / "params.yaml")
    assert data.pipeline_paths(tmp_path / "params.yaml") == ("data/train.csv", "data/test.csv")
    (tmp_path / "params.local.yaml").write_text("data:\n  train: /elsewhere/train.csv\n")
    assert data.pipeline_paths(tmp_path / "params.yaml") == ("/elsewhere/train.csv",
                                                             "data/test.csv")


def test_bench_data_folder_must_hold_both_files(tmp_path, tiny_csvs, capsys):
    folder = tiny_csvs[0].parent
    assert data.choose_csvs(folder, None, tmp_path) == (
        tiny_csvs, f"{tiny_csvs[0]} and {tiny_csvs[1]} (--data)")
    tiny_csvs[1].unlink()
    with pytest.raises(PipelineError, match=r"--data .*: expected train.csv and test.csv "
                       r"there \(plain, .gz or in digit-recognizer.zip\), found no test.csv"):
        data.choose_csvs(folder, None, tmp_path)
    assert main(["--data", str(tmp_path / "none"), "--no-torch", "--no-run"]) == 1
    assert "found no such folder" in capsys.readouterr().err

def test_epoch_gflop_counts_the_matrix_products():
    # One row: X @ W1 and X.T @ dh (784 x 256 each) and three 256 x 10 products, 2 FLOP a MAC.
    assert epochs.epoch_gflop(1, 0, 784, 256) == pytest.approx(2 * (2 * 784 * 256 + 3 * 2560) / 1e9)
    assert epochs.epoch_gflop(0, 1, 784, 256) == pytest.approx(2 * (784 * 256 + 2560) / 1e9)
    assert 34 < epochs.epoch_gflop(42000, 0, 784, 256) < 35      # the "about 35"


def test_bench_reports_every_figure(capsys):
    assert main(["--generate", "300", "100", "--repeats", "1", "--no-torch",
                 "--threads", "1", "--profile", "--drift-epochs", "2"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^profile: +[\d.]+ s +\d+%  network\.(forward|backward) ", out, re.M)
    assert "generated, 300 labelled + 100 test rows" in out
    rows = {m.group(1): m.group(2) for m in re.finditer(r"^\| (.+?) \| (.+?) \|", out, re.M)}
    number = r"[\d,]+(\.\d+)?"
    for figure, unit in [("ingest, train.csv + test.csv", " s"),
                         ("training, s/epoch (batch 128)", " s"), ("training, GFLOP/s", ""),
                         ("matmul-only epoch, same shapes", " s"),
                         ("training / matmul-only", "x"), ("prediction, images/s", ""),
                         # Made ahead on another thread: within noise of nothing, or less.
                         ("shifts (params.yaml's), s/epoch added", " s"),
                         ("distortions (params.yaml), s/epoch added", " s"),
                         ("distortions (params-best.yaml), s/epoch added", " s"),
                         ("distorted epochs, first / last of 2", " s / " + number + " s"),
                         ("`python run.py`, wall", " s"), ("`python run.py`, peak RSS", " MiB")]:
        sign = "-?" if figure.endswith("added") else ""
        assert re.fullmatch(sign + number + unit, rows.get(figure, "")), (figure, out)
    assert float(rows["`python run.py`, peak RSS"].split()[0]) > 10
    assert re.fullmatch(r"W1 \d+, b1 \d+, W2 \d+, b2 \d+", rows["training, subnormal values"])
    assert not any("PyTorch" in k for k in rows)


def test_bench_reports_the_pytorch_rows_when_installed(capsys):
    torch = pytest.importorskip("torch")
    assert main(["--generate", "300", "100", "--repeats", "1", "--threads", "1",
                 "--no-run", "--drift-epochs", "0"]) == 0
    out = capsys.readouterr().out
    assert f"PyTorch {torch.__version__} (" in out.splitlines()[0]
    rows = {m.group(1): m.group(2) for m in re.finditer(r"^\| (.+?) \| (.+?) \|", out, re.M)}
    for figure in ("training / PyTorch default", "training / PyTorch flush-denormal",
                   "matmul-only / PyTorch's best"):
        assert re.fullmatch(r"\d+\.\d\dx", rows.get(figure, "")), (figure, out)


def test_pytorch_contender_takes_the_same_step_as_ours(rng):
    """The comparison is only fair if PyTorch does the same work: from the same
    weights, two steps on the same batches must give the same weights (the second
    step's size depends on the gradients' magnitudes, not just their signs)."""
    torch = pytest.importorskip("torch")
    params = network.init_params(rng, 20, 8, 10)
    params["b1"] += rng.normal(0, 0.1, 8).astype(np.float32)
    theirs = TorchNet(torch, params, lr=0.01, rms_decay=0.9, eps=1e-8, l2=0.1)
    flat, params = network.pack(params)
    flat_grads, grads = network.pack(params)
    ours = RMSprop(flat, lr=0.01, decay=0.9, eps=1e-8)
    for _ in range(2):
        X = rng.random((16, 20), dtype=np.float32)
        y = rng.integers(0, 10, 16)
        loss, _ = theirs.step(torch.from_numpy(X), torch.from_numpy(y))
        probs, h = network.forward(params, X)
        assert loss == pytest.approx(network.cross_entropy(probs, y), rel=1e-5)
        network.backward(params, X, h, probs, y, 0.1, grads)
        ours.step(flat, flat_grads)
    for name, value in theirs.params().items():
        np.testing.assert_allclose(value, params[name], rtol=1e-4, atol=1e-6, err_msg=name)
    assert theirs.epoch(X, y, X[:4], y[:4], batch_size=5, rng=rng) > 0

"""`python run.py` as a newcomer runs it: on the bundled sample, end to end."""
import re

import numpy as np
import pytest
from helpers import ROOT, run_cli


@pytest.fixture(scope="module")
def sample_run(tmp_path_factory):
    """Default params, no data/train.csv: the bundled sample, whose outputs go to
    <outputs>/sample. Returns (result, that folder)."""
    tmp = tmp_path_factory.mktemp("e2e")
    result = run_cli(f"--set=data.train={tmp}/absent/train.csv",
                     f"--set=data.test={tmp}/absent/test.csv",
                     f"--set=data.sample={ROOT / 'data' / 'sample'}", f"--set=outputs={tmp / 'outputs'}")
    return result, tmp / "outputs" / "sample"


def test_runs_on_the_bundled_sample_and_says_so(sample_run):
    result, out = sample_run
    assert result.returncode == 0, result.stderr
    assert "using the bundled sample" in result.stdout
    accuracy = re.search(r"validation accuracy: ([\d.]+)%", result.stdout)
    assert accuracy and float(accuracy.group(1)) > 90     # 4500 real digits suffice for 90%+
    closing = result.stdout.splitlines()[-4:]
    assert re.fullmatch(r"validation accuracy: [\d.]+% \(95% interval [\d.]+-[\d.]+%, \d+ of 499 "
                        r"wrong\)", closing[0])
    assert closing[1:3] == [
        f"submission: {out / 'submission.csv'} (the bundled sample: a demo, not for upload)",
        f"report: {out / 'report' / 'index.html'} (open it in a browser)"]
    assert closing[3].startswith("next: put Kaggle's train.csv and test.csv, or ")
    page = (out / "report" / "index.html").read_text()
    assert "Made from the bundled sample" in page and "<h2>Runs</h2>" in page


def test_a_sample_run_never_touches_outputs_made_from_real_data(tmp_path):
    """The sample's outputs live in <outputs>/sample: a run that falls back to it
    (after `--set data.train=...` was left off) leaves the real submission alone,
    and `submit --kaggle` refuses to upload the demo."""
    real = tmp_path / "outputs" / "submission.csv"
    real.parent.mkdir()
    real.write_text("ImageId,Label\n1,7\n")
    args = [f"--set=data.train={tmp_path}/absent.csv", f"--set=data.test={tmp_path}/absent.csv",
            f"--set=outputs={tmp_path / 'outputs'}", "--set=train.epochs=1"]
    result = run_cli("submit", *args, "--kaggle", "demo")
    assert result.returncode == 1 and real.read_text() == "ImageId,Label\n1,7\n"
    assert result.stderr.startswith("error: not uploading: this submission was made from the "
                                    "bundled sample")
    assert (tmp_path / "outputs" / "sample" / "submission.csv").exists()


def test_submission_is_in_kaggles_format(sample_run):
    _, out = sample_run
    lines = (out / "submission.csv").read_text().splitlines()
    assert lines[0] == "ImageId,Label"
    assert len(lines) == 1 + 1000                          # one row per test image
    ids, labels = zip(*(line.split(",") for line in lines[1:]))
    assert [int(i) for i in ids] == list(range(1, 1001))
    assert set(labels) <= set("0123456789") and len(set(labels)) == 10
    predicted = np.load(out / "predict" / "test_labels.npy")
    assert [int(l) for l in labels] == predicted.tolist()


def test_same_seed_same_weights_and_submission(sample_run, tmp_path):
    result, out = sample_run
    again = tmp_path / "again"
    args = [f"--set=data.train={tmp_path}/absent.csv", f"--set=data.test={tmp_path}/absent.csv",
            f"--set=data.sample={ROOT / 'data' / 'sample'}", f"--set=outputs={again}"]
    assert run_cli(*args).returncode == 0
    again = again / "sample"
    assert (again / "train" / "model.npz").read_bytes() == (out / "train" / "model.npz").read_bytes()
    assert (again / "submission.csv").read_bytes() == (out / "submission.csv").read_bytes()


def test_help_lists_the_stages():
    result = run_cli("--help")
    assert result.returncode == 0 and "ingest -> preprocess -> train" in result.stdout

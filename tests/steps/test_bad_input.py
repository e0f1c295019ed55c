"""Issue 4 through the command line: each bad input gets a one-line error naming the
file (and line and column), a non-zero exit, no traceback, and leaves the outputs
folder of an earlier good run byte for byte as it was.

The corpus is made here, from a few rows of the bundled sample: one table, one test.
"""
import gzip
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
from helpers import run_cli, sample_rows, tree_state, write_lines

from pipeline import artifacts

TRAIN = sample_rows("train.csv.gz", 200)
TEST = sample_rows("test.csv.gz", 30)


def text(rows: list[str], end: str = "\n") -> bytes:
    return (end.join(rows) + end).encode()


def cell(rows: list[str], row: int, col: int, value: str) -> list[str]:
    """rows with one cell replaced; row 0 is the header, so row r is on line r + 1."""
    fields = rows[row].split(",")
    fields[col] = value
    return rows[:row] + [",".join(fields)] + rows[row + 1:]


def base_args(train: Path, test: Path, out: Path) -> list[str]:
    return [f"--set=data.train={train}", f"--set=data.test={test}", "--set=data.sample=null",
            f"--set=outputs={out}", "--set=train.epochs=1"]


@dataclass
class Case:
    """One bad input. `want` are substrings of the error line; in them (and in `args`)
    {file} is the bad file, {out} the outputs folder, {tmp} the test's folder."""

    want: tuple[str, ...]
    train: bytes | None = None              # replaces the good train file
    test: bytes | None = None               # replaces the good test file
    args: tuple[str, ...] = ()              # stage names and more options, first on the line
    filename: str = "bad.csv"
    before: Callable[[Path], None] | None = None   # changes the outputs copy before the run


def unversioned_model(out: Path) -> None:
    model = out / "train" / "model.npz"
    with np.load(model) as npz:
        arrays = {k: npz[k] for k in npz.files if k != "format_version"}
    np.savez(model, **arrays)


def model_of_version(version: int) -> Callable[[Path], None]:
    def rewrite(out: Path) -> None:
        model = out / "train" / "model.npz"
        with np.load(model) as npz:
            arrays = {k: npz[k] for k in npz.files}
        arrays["format_version"] = np.array(version)
        np.savez(model, **arrays)
    return rewrite


def garbled_model(out: Path) -> None:
    (out / "train" / "model.npz").write_bytes(b"not a zip file at all")


def nan_model(out: Path) -> None:
    model = out / "train" / "model.npz"
    with np.load(model) as npz:
        arrays = {k: npz[k] for k in npz.files}
    arrays["W2"][...] = np.nan
    np.savez(model, **arrays)


def vouched(change: Callable[[Path], None]) -> Callable[[Path], None]:
    """`change` the model, and train's record with it: a model the record does not vouch
    for is stale, and the runner retrains before predict reads it."""
    def apply(out: Path) -> None:
        change(out)
        record = out / ".records" / "train.json"
        entry = json.loads(record.read_text())
        entry["outs"]["model"].update(artifacts.file_state(out / "train" / "model.npz"))
        record.write_text(json.dumps(entry))
    return apply


def without_preprocess(out: Path) -> None:
    shutil.rmtree(out / "preprocess")


L = "expected an integer 0-255, found"
CASES = {
    # data files
    "missing train file": Case(("{tmp}/absent.csv: file not found", "Getting the data"),
                               args=("--set=data.train={tmp}/absent.csv",)),
    "missing test file": Case(("{tmp}/absent.csv: file not found", "Getting the data"),
                              args=("--set=data.test={tmp}/absent.csv",)),
    "data path is a directory": Case(("{tmp}/folder: expected a file, found a directory",),
                                     args=("--set=data.train={tmp}/folder",),
                                     before=lambda out: (out.parent / "folder").mkdir()),
    "empty file": Case(("{file}: expected a header row and data rows, found an empty file",),
                       train=b""),
    "header only": Case(("{file}: expected data rows after the header, found none",),
                        train=text(TRAIN[:1])),
    "train without label": Case(("{file}, line 1: expected a 'label' column first",
                                 "found 'pixel0' (is this the test file?)"), train=text(TEST)),
    "semicolons between columns": Case(("{file}, line 1: expected commas between the columns, "
                                        "found ';'",),
                                       train=text([r.replace(",", ";") for r in TRAIN])),
    "spaces between columns": Case(("{file}, line 1: expected commas between the columns, "
                                    "found ' '",),
                                   train=text([r.replace(",", " ") for r in TRAIN])),
    "long misnamed pixel column": Case(("{file}, line 1, column 6: expected 'pixel4', found "
                                        "'xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx...'",),
                                       train=text([TRAIN[0].replace("pixel4,", "x" * 200 + ",")]
                                                  + TRAIN[1:])),
    "one long unknown header name": Case(("{file}, line 1: expected a 'label' column first",
                                          "found 'abcdefghijabcdefghijabcdefghijabcdefg...'"),
                                         train=text(["abcdefghij" * 20] + TRAIN[1:])),
    "test with label": Case(("{file}, line 1: expected no 'label' column in a test file",
                             "swapped"), test=text(TRAIN)),
    "783 pixel columns": Case(("{file}, line 1: expected 784 pixel columns", "found 783"),
                              train=text([r.rsplit(",", 1)[0] for r in TRAIN])),
    "misnamed pixel column": Case(("{file}, line 1, column 12: expected 'pixel10', found 'pixel1O'",),
                                  train=text([TRAIN[0].replace("pixel10,", "pixel1O,")] + TRAIN[1:])),
    "ragged row": Case(("{file}, line 8: expected 785 fields, found 784 (a ragged row)",),
                       train=text(TRAIN[:7] + [TRAIN[7].rsplit(",", 1)[0]] + TRAIN[8:])),
    "ragged test row": Case(("{file}, line 32: expected 784 fields, found 785",),
                            test=text(TEST + [TEST[1] + ",0"])),
    "trailing comma": Case(("{file}, line 3: expected 785 fields, found 786 (a trailing comma?)",),
                           train=text(TRAIN[:2] + [TRAIN[2] + ","] + TRAIN[3:])),
    "non-numeric cell": Case(("{file}, line 5, column 300 ('pixel298'): " + L +
                              " 'abc' (not a number)",),
                             train=text(cell(TRAIN, 4, 299, "abc"))),
    "blank cell": Case(("{file}, line 200, column 2 ('pixel0'): " + L + " a blank cell",),
                       train=text(cell(TRAIN, 199, 1, ""))),
    "NaN cell": Case(("{file}, line 10, column 11 ('pixel9'): " + L + " 'NaN' (a missing value)",),
                     train=text(cell(TRAIN, 9, 10, "NaN"))),
    "pixel below 0": Case(("{file}, line 3, column 785 ('pixel783'): " + L + " '-1'",),
                          train=text(cell(TRAIN, 2, 784, "-1"))),
    "pixel above 255": Case(("{file}, line 21, column 400 ('pixel398'): " + L + " '256'",),
                            train=text(cell(TRAIN, 20, 399, "256"))),
    "test pixel above 255": Case(("{file}, line 4, column 1 ('pixel0'): " + L + " '1000'",),
                                 test=text(cell(TEST, 3, 0, "1000"))),
    "non-integer pixel": Case(("{file}, line 2, column 200 ('pixel198'): " + L +
                               " '0.5' (not a whole number)",), train=text(cell(TRAIN, 1, 199, "0.5"))),
    "float-formatted pixel": Case(("{file}, line 2, column 2 ('pixel0'): " + L + " '0.0' (a decimal",),
                                  train=text(cell(TRAIN, 1, 1, "0.0"))),
    "label above 9": Case(("{file}, line 150, column 1 ('label'): expected an integer 0-9, found '10'",),
                          train=text(cell(TRAIN, 149, 0, "10"))),
    "label below 0": Case(("{file}, line 6, column 1 ('label'): expected an integer 0-9, found '-2'",),
                          train=text(cell(TRAIN, 5, 0, "-2"))),
    "header repeated mid-file": Case(("{file}, line 101: the header row is repeated inside the data",),
                                     train=text(TRAIN[:100] + TRAIN[:1] + TRAIN[100:])),
    "bad cell in a gzip crlf file": Case(("{file}, line 7, column 5 ('pixel3'): " + L + " 'x'",),
                                         train=gzip.compress(text(cell(TRAIN, 6, 4, "x"), "\r\n")),
                                         filename="bad.csv.gz"),
    "damaged gzip": Case(("{file}: expected a gzip file, found a damaged one",),
                         train=gzip.compress(text(TRAIN))[:2000], filename="bad.csv.gz"),
    "damaged zip": Case(("{file}: expected a zip archive, found a damaged one",),
                        train=b"PK\x03\x04zz", filename="digit-recognizer.zip"),
    "bare CR line ends": Case(("{file}, line 1: expected lines ending in \\n or \\r\\n",),
                              train=text(TRAIN, "\r")),
    # params
    "invalid yaml": Case(("{tmp}/params.yaml, line 3, column 10: invalid YAML: mapping values",),
                         args=("--params={tmp}/params.yaml",)),
    "unknown key": Case(("--set train.epoch=3: unknown key 'train.epoch' "
                         "(did you mean 'train.epochs'?)",),
                        args=("--set=train.epoch=3",)),
    "wrong type": Case(("--set train.hidden=wide: train.hidden must be an integer, found 'wide' (str)",),
                       args=("--set=train.hidden=wide",)),
    "negative learning rate": Case(("--set train.lr=-0.01: train.lr must be a number > 0, found -0.01",),
                                   args=("--set=train.lr=-0.01",)),
    "validation fraction 1": Case(("--set preprocess.val_fraction=1: preprocess.val_fraction must be "
                                   "a number in (0, 1), found 1.0",),
                                  args=("--set=preprocess.val_fraction=1",)),
    "validation fraction 0": Case(("preprocess.val_fraction must be a number in (0, 1), found 0.0",),
                                  args=("--set=preprocess.val_fraction=0",)),
    "zero epochs": Case(("--set train.epochs=0: train.epochs must be an integer >= 1, found 0",),
                        args=("--set=train.epochs=0",)),
    "zero hidden units": Case(("--set train.hidden=0: train.hidden must be an integer >= 1, found 0",),
                              args=("--set=train.hidden=0",)),
    "set without =": Case(("--set train.lr: expected KEY=VALUE",), args=("--set=train.lr",)),
    "set with bad yaml": Case(("--set train.lr={{1: expected a YAML value after '='",),
                              args=("--set=train.lr={{1",)),
    # upstream artifacts
    "model without format version": Case(("{out}/train/model.npz was written by an "
                                          "incompatible version (no format version",),
                                         args=("predict",), before=vouched(unversioned_model)),
    "model of another format version": Case(("{out}/train/model.npz", "format 99, expected format 1"),
                                            args=("predict",),
                                            before=vouched(model_of_version(99))),
    "model that is not an npz": Case(("{out}/train/model.npz is not a readable .npz",),
                                     args=("predict",), before=vouched(garbled_model)),
    "outputs path is a file": Case(("{tmp}/occupied",), args=("--set=outputs={tmp}/occupied",),
                                   before=lambda out: (out.parent / "occupied").write_text("x")),
    "non-finite model": Case(("{out}/train/model.npz: the weights are not finite",),
                             args=("predict", "submit"),
                             before=vouched(nan_model)),
    "upstream artifacts missing": Case(("train is built on preprocess:train, which is stale: "
                                        "output {out}/preprocess/train_x.npy is missing",
                                        "Run `python run.py train` without --single"),
                                       args=("train", "--single"), before=without_preprocess),
    # training that goes wrong
    "diverging learning rate 100": Case(("training diverged", "train.lr="),
                                        args=("--set=train.lr=100",)),
    "diverging learning rate 1e30": Case(("training diverged", "train.lr="),
                                         args=("--set=train.lr=1e30",)),
    # both data files new, the test file bad: nothing may be written either
    "new train file, bad test file": Case(
        ("{file}, line 4, column 1 ('pixel0'): " + L + " '1000'",),
        test=text(cell(TEST, 3, 0, "1000")),
        args=("--set=data.train={tmp}/new_train.csv",),
        before=lambda out: write_lines(out.parent / "new_train.csv", TRAIN[:150])),
}

@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A good run on 200 labelled and 30 test rows: (train.csv, test.csv, outputs)."""
    root = tmp_path_factory.mktemp("finished")
    train = write_lines(root / "train.csv", TRAIN)
    test = write_lines(root / "test.csv", TEST)
    result = run_cli(*base_args(train, test, root / "outputs"))
    assert result.returncode == 0, result.stderr
    assert (root / "outputs" / "submission.csv").exists()
    return train, test, root / "outputs"


def run_case(case: Case, finished, tmp_path: Path):
    """Copy the good outputs, apply the case, run the CLI: (result, error line, states)."""
    train, test, good_out = finished
    out = tmp_path / "outputs"
    shutil.copytree(good_out, out)
    if case.before:
        case.before(out)
    bad = tmp_path / case.filename
    if case.train is not None:
        train = bad
        bad.write_bytes(case.train)
    if case.test is not None:
        test = bad
        bad.write_bytes(case.test)
    (tmp_path / "params.yaml").write_text("seed: 0\ntrain:\n  lr: 0.1: 3\n")
    fill = dict(file=bad, out=out, tmp=tmp_path)
    args = [a.format(**fill) for a in case.args]
    stages = [a for a in args if not a.startswith("--")]
    options = [a for a in args if a.startswith("--")]
    before = tree_state(out)
    result = run_cli(*stages, *base_args(train, test, out), *options)
    return result, [w.format(**fill) for w in case.want], before, tree_state(out)


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_gets_one_line_and_changes_nothing(name, finished, tmp_path):
    case = CASES[name]
    result, want, before, after = run_case(case, finished, tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for part in want:
        assert part in lines[0]
    assert after == before                       # byte for byte, temporary files included


def test_debug_shows_the_traceback(finished, tmp_path):
    result, want, before, after = run_case(CASES["pixel above 255"], finished, tmp_path)
    debug = run_cli(*base_args(tmp_path / "bad.csv", finished[1], tmp_path / "outputs"), "--debug")
    assert debug.returncode != 0
    assert "Traceback" in debug.stderr and want[0] in debug.stderr
    assert tree_state(tmp_path / "outputs") == before


def test_accepted_variants_run_and_the_index_column_warns(finished, tmp_path):
    """A pandas to_csv file with an index column, CRLF, a BOM and gzip: loads, with a warning."""
    rows = [",".join(["Unnamed: 0", TRAIN[0]])] + [f"{i},{r}" for i, r in enumerate(TRAIN[1:])]
    train = tmp_path / "train.csv.gz"
    train.write_bytes(gzip.compress(b"\xef\xbb\xbf" + text(rows, "\r\n")))
    result = run_cli("ingest", *base_args(train, finished[1], tmp_path / "outputs"))
    assert result.returncode == 0, result.stderr
    assert "warning: " in result.stdout and "dropped a leading index column ('Unnamed: 0')" \
        in result.stdout
    ingested = np.load(tmp_path / "outputs" / "ingest" / "train_images.npy")
    np.testing.assert_array_equal(ingested, np.load(finished[2] / "ingest" / "train_images.npy"))

"""Reading Kaggle's CSVs: the variants that must load, and exact messages for bad files.

Everything here is in-process on files made in the test; tests/steps/test_bad_input.py runs
the same kinds of bad files through the command line.
"""
import gzip
import logging
from pathlib import Path

import numpy as np
import pytest
from helpers import ROOT, sample_rows, write_lines

from pipeline.errors import PipelineError
from pipeline.steps import ingest

TRAIN = sample_rows("train.csv.gz", 40)
TEST = sample_rows("test.csv.gz", 12)


def expected(rows):
    """The arrays a clean file must give, computed without the module under test."""
    values = np.array([[int(v) for v in row.split(",")] for row in rows[1:]])
    return values[:, 1:].astype(np.uint8), values[:, 0]


def with_cell(rows, row, col, value):
    """A copy of rows with one cell replaced; row 0 is the header."""
    fields = rows[row].split(",")
    fields[col] = value
    return rows[:row] + [",".join(fields)] + rows[row + 1:]


def read(tmp_path, data, labelled=True, name="train.csv"):
    path = tmp_path / name
    path.write_bytes(data if isinstance(data, bytes) else data.encode())
    return ingest.read_digits_csv(path, labelled)


def error(tmp_path, data, labelled=True, name="train.csv"):
    with pytest.raises(PipelineError) as info:
        read(tmp_path, data, labelled, name)
    message = str(info.value)
    assert str(tmp_path / name) in message and "\n" not in message
    return message


def test_clean_train_and_test_files(tmp_path):
    images, labels = read(tmp_path, "\n".join(TRAIN) + "\n")
    want_images, want_labels = expected(TRAIN)
    assert images.dtype == np.uint8 and images.shape == (40, 784) and images.flags.c_contiguous
    assert labels.dtype == np.int64
    np.testing.assert_array_equal(images, want_images)
    np.testing.assert_array_equal(labels, want_labels)
    test_images, none = read(tmp_path, "\n".join(TEST) + "\n", labelled=False, name="test.csv")
    assert none is None and test_images.shape == (12, 784)
    np.testing.assert_array_equal(test_images, np.array(
        [[int(v) for v in row.split(",")] for row in TEST[1:]], np.uint8))


def pixel1_header(rows):
    names = rows[0].split(",")
    offset = 1 if names[0] == "label" else 0
    return [",".join(names[:offset] + [f"pixel{i + 1}" for i in range(784)])] + rows[1:]


def index_column(rows, name):
    return [f"{name}," + rows[0]] + [f"{i},{row}" for i, row in enumerate(rows[1:])]


ACCEPTED = {
    "crlf line ends": lambda rows: ("\r\n".join(rows) + "\r\n").encode(),
    "utf-8 bom": lambda rows: b"\xef\xbb\xbf" + "\n".join(rows).encode(),
    "no final newline": lambda rows: "\n".join(rows).encode(),
    "gzip": lambda rows: gzip.compress("\n".join(rows).encode()),
    "gzip crlf bom": lambda rows: gzip.compress(b"\xef\xbb\xbf" + "\r\n".join(rows).encode()),
    "pixel1..pixel784": lambda rows: "\n".join(pixel1_header(rows)).encode(),
    "blank lines between and after rows":
        lambda rows: "\n".join(rows[:5] + ["", "   ", "\t"] + rows[5:] + ["", " ", ""]).encode(),
    "blank crlf lines": lambda rows: "\r\n".join(rows[:5] + ["", " "] + rows[5:] + [""]).encode(),
    "spaces around values and at line ends":
        lambda rows: "\n".join([rows[0]] + [r.replace(",", " , ") + " \t" for r in rows[1:]]).encode(),
    "quoted header and values":
        lambda rows: "\n".join(",".join(f'"{v}"' for v in r.split(",")) for r in rows).encode(),
    "leading zeros": lambda rows: "\n".join(with_cell(rows, 3, 200, "0007")).encode(),
}


@pytest.mark.parametrize("case", ACCEPTED)
def test_accepted_variants_give_the_same_arrays(tmp_path, case):
    images, labels = read(tmp_path, ACCEPTED[case](TRAIN))
    want_images, want_labels = expected(TRAIN)
    if case == "leading zeros":
        want_images[2, 199] = 7
    np.testing.assert_array_equal(images, want_images)
    np.testing.assert_array_equal(labels, want_labels)


class Records(logging.Handler):
    def __init__(self):
        super().__init__()
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


@pytest.mark.parametrize("name", ["", "Unnamed: 0"])
@pytest.mark.parametrize("labelled", [True, False])
def test_pandas_index_column_is_dropped_with_a_warning(tmp_path, name, labelled):
    rows = TRAIN if labelled else TEST
    handler = Records()
    ingest.log.addHandler(handler)
    try:
        images, labels = read(tmp_path, "\n".join(index_column(rows, name)), labelled)
    finally:
        ingest.log.removeHandler(handler)
    if labelled:
        np.testing.assert_array_equal(images, expected(rows)[0])
        np.testing.assert_array_equal(labels, expected(rows)[1])
    else:
        assert images.shape == (12, 784) and labels is None
    assert len(handler.messages) == 1
    assert "dropped a leading index column" in handler.messages[0]


@pytest.mark.parametrize("lines, labelled, want", [
    ([], True, "expected a header row and data rows, found an empty file"),
    (["", "  ", ""], True, "found an empty file"),
    (TRAIN[:1], True, "expected data rows after the header, found none"),
    (TRAIN[:1] + ["", " "], True, "expected data rows after the header, found none"),
    (TEST, True, "line 1: expected a 'label' column first (label,pixel0..pixel783), "
                 "found 'pixel0' (is this the test file?)"),
    (TRAIN, False, "line 1: expected no 'label' column in a test file"),
    ([TRAIN[0].rsplit(",", 1)[0]] + TRAIN[1:], True,
     "line 1: expected 784 pixel columns (label,pixel0..pixel783), found 783"),
    ([TRAIN[0].replace("pixel5,", "pixel55,")] + TRAIN[1:], True,
     "line 1, column 7: expected 'pixel5', found 'pixel55'"),
    (TRAIN[1:], True, "line 1: expected a header row (label,pixel0..pixel783), found a row of numbers"),
    (TRAIN[:4] + [TRAIN[4].rsplit(",", 1)[0]] + TRAIN[5:], True,
     "line 5: expected 785 fields, found 784 (a ragged row)"),
    (TRAIN[:4] + [TRAIN[4] + ",0"] + TRAIN[5:], True, "line 5: expected 785 fields, found 786"),
    (TRAIN[:4] + [TRAIN[4] + ","] + TRAIN[5:], True,
     "line 5: expected 785 fields, found 786 (a trailing comma?)"),
    (with_cell(TRAIN, 3, 100, "x7"), True,
     "line 4, column 101 ('pixel99'): expected an integer 0-255, found 'x7' (not a number)"),
    (with_cell(TRAIN, 3, 100, ""), True,
     "line 4, column 101 ('pixel99'): expected an integer 0-255, found a blank cell"),
    (with_cell(TRAIN, 3, 100, "  "), True, "column 101 ('pixel99'): expected an integer 0-255, "
                                           "found a blank cell"),
    (with_cell(TRAIN, 3, 100, "NaN"), True, "found 'NaN' (a missing value)"),
    (with_cell(TRAIN, 3, 100, "-1"), True, "column 101 ('pixel99'): expected an integer 0-255, "
                                           "found '-1'"),
    (with_cell(TRAIN, 3, 100, "256"), True, "expected an integer 0-255, found '256'"),
    (with_cell(TRAIN, 3, 100, "12.5"), True, "found '12.5' (not a whole number)"),
    (with_cell(TRAIN, 3, 100, "3.0"), True, "found '3.0' (a decimal, as pandas writes a float column)"),
    (with_cell(TRAIN, 3, 100, "1e400"), True, "found '1e400' (not a finite number)"),
    (with_cell(TRAIN, 40, 0, "10"), True,
     "line 41, column 1 ('label'): expected an integer 0-9, found '10'"),
    (with_cell(TRAIN, 40, 0, "-1"), True, "line 41, column 1 ('label'): expected an integer 0-9, "
                                          "found '-1'"),
    (with_cell(TEST, 2, 783, "300"), False,
     "line 3, column 784 ('pixel783'): expected an integer 0-255, found '300'"),
    (TRAIN[:10] + TRAIN[:1] + TRAIN[10:], True, "line 11: the header row is repeated inside the data"),
    (with_cell(TRAIN, 3, 5, "3\r4"), True, r"column 6 ('pixel4'): expected an integer 0-255, "
                                           r"found '3\r4' (not a number)"),
])
def test_bad_files_name_line_column_expected_and_found(tmp_path, lines, labelled, want):
    assert want in error(tmp_path, "\n".join(lines) + "\n" if lines else "", labelled)


def test_a_bad_cell_in_an_index_column_file_counts_the_index_column(tmp_path):
    rows = with_cell(index_column(TRAIN, "Unnamed: 0"), 5, 301, "999")
    assert "line 6, column 302 ('pixel299'): expected an integer 0-255, found '999'" in \
        error(tmp_path, "\n".join(rows))


def test_bad_bytes(tmp_path):
    assert error(tmp_path, b"") .endswith("found an empty file")
    assert "expected a zip archive, found a damaged one" in error(tmp_path, b"PK\x03\x04rest")
    damaged = gzip.compress("\n".join(TRAIN).encode())[:300]
    assert "expected a gzip file, found a damaged one" in error(tmp_path, damaged)
    assert "line 1: expected a UTF-8 text header row" in error(tmp_path, b"\xff\xfe" + b"x" * 9)
    assert "bare \\r (old Mac line ends)" in error(tmp_path, "\r".join(TRAIN).encode())
    latin1 = "\n".join(with_cell(TRAIN, 2, 9, "\u00e9")).encode("latin-1")
    assert "line 3, column 10 ('pixel8'): expected an integer 0-255, found" in \
        error(tmp_path, latin1)


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(PipelineError, match="nope.csv: file not found"):
        ingest.read_digits_csv(tmp_path / "nope.csv", True)
    with pytest.raises(PipelineError, match="expected a CSV file, found a directory"):
        ingest.read_digits_csv(tmp_path, True)


def test_the_first_bad_line_is_reported_across_blocks(tmp_path):
    """Bad lines after the first block, behind blank lines, two of them: the first wins."""
    rows = sample_rows("train.csv.gz", 700)
    assert len(rows) > 2 * ingest.BLOCK_LINES
    rows = with_cell(rows, 650, 300, "oops")
    rows = with_cell(rows, 600, 20, "-4")
    rows = rows[:100] + ["  ", ""] + rows[100:]                 # shifts later lines by two
    message = error(tmp_path, "\n".join(rows))
    assert message.endswith("line 603, column 21 ('pixel19'): expected an integer 0-255, found '-4'")


def test_whitespace_lines_in_a_long_file_are_skipped(tmp_path):
    rows = sample_rows("train.csv.gz", 600)
    spaced = rows[:300] + ["   "] + rows[300:] + ["\t"]
    images, labels = read(tmp_path, "\n".join(spaced))
    want_images, want_labels = expected(rows)
    np.testing.assert_array_equal(images, want_images)
    np.testing.assert_array_equal(labels, want_labels)


def test_resolve_data_falls_back_to_the_sample_only_when_both_are_absent(tmp_path):
    present = write_lines(tmp_path / "train.csv", TRAIN)
    absent = tmp_path / "test.csv"
    folder = str(ROOT / "data" / "sample")
    assert ingest.resolve_data(str(present), str(absent), folder)[2] is False
    train, test, sample = ingest.resolve_data(str(absent), str(absent), folder)
    assert sample and train.name == "train.csv.gz" and test.name == "test.csv.gz"
    assert ingest.resolve_data(str(absent), str(absent), None)[2] is False
    # No sample there either (e.g. run from another folder): the missing files are named.
    assert ingest.resolve_data(str(absent), str(absent), str(tmp_path / "none"))[2] is False


def test_older_numpy_is_refused_before_it_can_wrap_values(monkeypatch):
    monkeypatch.setattr(np, "__version__", "2.2.6")
    with pytest.raises(PipelineError, match="NumPy 2.2.6 would read a pixel of 256 as 0"):
        ingest.parse_digits(Path("train.csv"), "\n".join(TRAIN).encode(), labelled=True)


def kaggle_zip(path: Path, members: dict[str, str]) -> Path:
    import zipfile
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, text in members.items():
            archive.writestr(name, text)
    return path


def test_the_competitions_zip_is_read_as_it_is(tmp_path):
    train, test = sample_rows("train.csv.gz", 30), sample_rows("test.csv.gz", 20)
    path = kaggle_zip(tmp_path / "digit-recognizer.zip", {
        "sample_submission.csv": "ImageId,Label\n1,0\n", "test.csv": "\n".join(test) + "\n",
        "train.csv": "\n".join(train) + "\n"})
    images, labels = ingest.read_digits_csv(path, labelled=True)
    assert images.shape == (30, 784) and labels[0] == int(train[1].split(",")[0])
    assert ingest.read_digits_csv(path, labelled=False)[0].shape == (20, 784)
    bad = kaggle_zip(tmp_path / "bad.zip", {"train.csv": "\n".join(train[:3] + ["1,2"]) + "\n"})
    with pytest.raises(PipelineError, match=r"^\S+bad.zip \(train.csv\), line 4: expected 785"):
        ingest.read_digits_csv(bad, labelled=True)
    other = kaggle_zip(tmp_path / "other.zip", {"a.txt": "x", "b.txt": "y"})
    with pytest.raises(PipelineError, match="expected a zip archive holding test.csv, found "
                                            "a.txt, b.txt"):
        ingest.read_digits_csv(other, labelled=False)


def test_data_is_found_plain_gzipped_or_in_the_kaggle_zip(tmp_path):
    data, sample = tmp_path / "data", str(ROOT / "data" / "sample")
    data.mkdir()
    train, test = str(data / "train.csv"), str(data / "test.csv")
    assert ingest.resolve_data(train, test, sample)[2] is True          # nothing: the sample
    kaggle_zip(data / "digit-recognizer.zip", {"train.csv": "", "test.csv": ""})
    assert ingest.resolve_data(train, test, sample) == (
        data / "digit-recognizer.zip", data / "digit-recognizer.zip", False)
    (data / "train.csv.gz").write_bytes(b"")
    assert ingest.resolve_data(train, test, sample)[0] == data / "train.csv.gz"
    (data / "train.csv").write_text("")
    assert ingest.resolve_data(train, test, sample)[:2] == (
        data / "train.csv", data / "digit-recognizer.zip")

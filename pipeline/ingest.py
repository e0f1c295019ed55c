"""Stage 1, ingest: Kaggle's CSVs -> uint8 image arrays and integer labels.

Accepts `label,pixel0..pixel783` (train) and `pixel0..pixel783` (test), the
`pixel1..pixel784` naming of other Kaggle MNIST sets, plain or gzipped files, CRLF
line ends, a UTF-8 BOM, and a leading index column written by pandas' `to_csv`
(dropped with a warning). Anything else stops with the file, line and column.

Parsing is pandas' C reader on the whole file; only when that fails, or a value is
out of range, is the file walked line by line to say exactly where and why.
"""
from __future__ import annotations

import gzip
import io
import logging
import re
import zlib
from pathlib import Path

import numpy as np

from pipeline import artifacts
from pipeline.errors import PipelineError

log = logging.getLogger(__name__)

N_PIXELS = 784
INDEX_NAMES = ("", "Unnamed: 0")          # what pandas' to_csv writes, and reads back
_INT_FIELD = re.compile(rb"[0-9]+")


def resolve_data(train: str, test: str, sample: str | None) -> tuple[Path, Path, bool]:
    """The CSVs to read: the configured ones, or the bundled sample when neither
    exists. Returns (train path, test path, whether the sample is used)."""
    train_p, test_p = Path(train), Path(test)
    if train_p.exists() or test_p.exists() or not sample:
        return train_p, test_p, False
    folder = Path(sample)
    return folder / "train.csv.gz", folder / "test.csv.gz", True


def _read_bytes(path: Path) -> bytes:
    """The file's text as bytes: gunzipped when it starts with gzip's magic number."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise PipelineError(f"{path}: file not found") from None
    except IsADirectoryError:
        raise PipelineError(f"{path}: expected a CSV file, found a directory") from None
    except OSError as exc:
        raise PipelineError(f"{path}: cannot read ({exc.strerror})") from None
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as exc:
            raise PipelineError(f"{path}: not a readable gzip file ({exc})") from None
    if raw.startswith(b"\xef\xbb\xbf"):          # UTF-8 byte order mark, as Excel writes
        raw = raw[3:]
    return raw


def _check_header(path: Path, names: list[str], labelled: bool) -> tuple[bool, bool]:
    """Check the header row; return (has an index column to drop, has a label column)."""
    expected = "label,pixel0..pixel783" if labelled else "pixel0..pixel783"
    has_index = len(names) > 1 and names[0] in INDEX_NAMES
    rest = names[1:] if has_index else names
    has_label = bool(rest) and rest[0] == "label"
    if rest and _INT_FIELD.fullmatch(rest[0].encode()):
        raise PipelineError(
            f"{path}, line 1: expected a header row ({expected}), found a row of numbers")
    if labelled and not has_label:
        hint = " (is this the test file?)" if "label" not in rest else ""
        raise PipelineError(
            f"{path}, line 1: expected a 'label' column first ({expected}), "
            f"found '{rest[0] if rest else ''}'{hint}")
    if not labelled and "label" in rest:
        raise PipelineError(
            f"{path}, line 1: a test file has no 'label' column, found one "
            f"(are the train and test files swapped?)")
    pixels = rest[1:] if has_label else rest
    if len(pixels) != N_PIXELS:
        raise PipelineError(
            f"{path}, line 1: expected {N_PIXELS} pixel columns ({expected}), "
            f"found {len(pixels)}")
    first = 1 if pixels[0] == "pixel1" else 0     # pixel1..pixel784 is the other convention
    for i, name in enumerate(pixels):
        if name != f"pixel{i + first}":
            col = i + 1 + has_label + has_index
            raise PipelineError(
                f"{path}, line 1, column {col}: expected 'pixel{i + first}', found '{name}'")
    return has_index, has_label


def _describe_field(field: bytes) -> str:
    text = field.decode("utf-8", "replace").strip()
    if not text:
        return "a blank cell"
    if text.lower() in ("nan", "na", "null", "none"):
        return f"'{text}' (a missing value)"
    try:
        value = float(text)
    except ValueError:
        return f"'{text}' (not a number)"
    return f"'{text}' (not an integer)" if value != int(value) else f"'{text}'"


def _diagnose(path: Path, raw: bytes, names: list[str], lo_hi: list[tuple[int, int]]) -> str:
    """Walk the data lines and describe the first bad one, or return ''."""
    header = raw.split(b"\n", 1)[0].rstrip(b"\r")
    for lineno, line in enumerate(raw.split(b"\n")[1:], start=2):
        line = line.rstrip(b"\r")
        if not line.strip():
            continue                               # blank lines are skipped, as pandas does
        if line == header:
            return f"{path}, line {lineno}: the header row is repeated inside the data"
        fields = line.split(b",")
        if len(fields) != len(names):
            return (f"{path}, line {lineno}: expected {len(names)} fields, "
                    f"found {len(fields)} (a ragged row)")
        for col, field in enumerate(fields):
            lo, hi = lo_hi[col]
            field = field.strip()
            if _INT_FIELD.fullmatch(field) and lo <= int(field) <= hi:
                continue
            if field.startswith(b"-") and _INT_FIELD.fullmatch(field[1:]):
                found = f"'{field.decode()}'"
            else:
                found = _describe_field(field)
            return (f"{path}, line {lineno}, column {col + 1} ('{names[col]}'): "
                    f"expected an integer {lo}-{hi}, found {found}")
    return ""


def read_digits_csv(path: str | Path, labelled: bool) -> tuple[np.ndarray, np.ndarray | None]:
    """Read a Kaggle digits CSV.

    Returns images of shape (n_samples, 784), uint8, and labels of shape
    (n_samples,), int64 (None when `labelled` is False).
    """
    import pandas as pd   # imported here: a run that skips ingest needn't pay for it

    path = Path(path)
    raw = _read_bytes(path)
    if not raw.strip():
        raise PipelineError(f"{path}: the file is empty (expected a header row and data rows)")
    header = raw.split(b"\n", 1)[0].rstrip(b"\r")
    try:
        names = [n.strip().strip('"') for n in header.decode("utf-8").split(",")]
    except UnicodeDecodeError:
        raise PipelineError(f"{path}, line 1: expected a UTF-8 text header row") from None
    has_index, has_label = _check_header(path, names, labelled)
    lo_hi = ([(0, 2**62)] if has_index else []) + ([(0, 9)] if has_label else []) \
        + [(0, 255)] * N_PIXELS

    try:
        table = pd.read_csv(io.BytesIO(raw), dtype=np.int32, header=0, engine="c")
    except (ValueError, OverflowError, pd.errors.ParserError) as exc:
        where = _diagnose(path, raw, names, lo_hi)
        raise PipelineError(where or f"{path}: cannot parse as CSV ({exc})") from None
    values = table.to_numpy()                                   # (N, n_columns) int32
    if len(values) == 0:
        raise PipelineError(f"{path}: found a header row but no data rows")
    lows = np.array([lo for lo, _ in lo_hi[has_index:]], np.int64)
    highs = np.array([hi for _, hi in lo_hi[has_index:]], np.int64)
    body = values[:, int(has_index):]
    if ((body < lows) | (body > highs)).any():
        raise PipelineError(_diagnose(path, raw, names, lo_hi) or f"{path}: value out of range")
    if has_index:
        log.warning("%s: dropped a leading index column ('%s'), as written by pandas' to_csv",
                    path, names[0])
    labels = body[:, 0].astype(np.int64) if has_label else None
    images = np.ascontiguousarray(body[:, int(has_label):], dtype=np.uint8)
    return images, labels


def run_train(csv_path: Path, images_out: Path, labels_out: Path) -> None:
    """Ingest the labelled CSV into images (N, 784) uint8 and labels (N,) int64."""
    images, labels = read_digits_csv(csv_path, labelled=True)
    artifacts.save_array(images_out, images)
    artifacts.save_array(labels_out, labels)
    log.info("ingest: %s -> %d labelled images", csv_path, len(images))


def run_test(csv_path: Path, images_out: Path) -> None:
    """Ingest the unlabelled CSV into images (M, 784) uint8."""
    images, _ = read_digits_csv(csv_path, labelled=False)
    artifacts.save_array(images_out, images)
    log.info("ingest: %s -> %d test images", csv_path, len(images))

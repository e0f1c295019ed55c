"""Stage 1, ingest: Kaggle's CSVs -> uint8 image arrays and integer labels.

Accepts `label,pixel0..pixel783` (train) and `pixel0..pixel783` (test), the
`pixel1..pixel784` naming of other Kaggle MNIST sets, plain or gzipped files, CRLF
line ends, a UTF-8 BOM, blank lines and spaces around values (both ignored), quoted
numbers, and a leading index column written by pandas' `to_csv` (dropped with a
warning). Anything else stops with the file, line and column.

The whole file is parsed by NumPy's C reader straight into uint8, which itself
rejects values outside 0-255; only when that fails is the file searched, block by
block and then line by line with the same reader, for the first bad line, which is
then described field by field.
"""
from __future__ import annotations

import io
import logging
import re
import zipfile
import zlib
from pathlib import Path

import numpy as np

from pipeline import artifacts, progress
from pipeline.errors import PipelineError, printable

log = logging.getLogger(__name__)

N_PIXELS = 784
INDEX_NAMES = ("", "Unnamed: 0")          # what pandas' to_csv writes, and reads back
BLOCK_LINES = 256                          # lines per block when looking for a bad line
# What a data file may hold once unzipped or gunzipped, so that a small hostile archive
# cannot expand to gigabytes in memory. Kaggle's train.csv is about 75 MB.
MAX_CSV_BYTES = 512 * 2**20
# A digits line is a few KB (785 values, even with spaces and quotes); a longer one is
# not one, and would make NumPy's reader use many times its size.
MAX_LINE_BYTES = 64 * 2**10
MAX_ZIP_ENTRIES = 1000                     # Kaggle's zip holds 3 files
READ_BYTES = 2**24                         # files are read and unpacked in slices this big
_NON_BLANK = re.compile(rb"\S")
_INT_TEXT = re.compile(r"\+?[0-9]+")        # what NumPy's reader takes as a non-negative int
_SIGNED_INT_TEXT = re.compile(r"[+-]?[0-9]+")
_MISSING = ("nan", "na", "n/a", "null", "none", "nat", "<na>")


KAGGLE_ZIP = "digit-recognizer.zip"       # what `kaggle competitions download` saves


def find_csv(path: Path) -> Path | None:
    """Where the file configured as `path` (such as data/train.csv) is: itself,
    gzipped beside it (data/train.csv.gz), or inside the competition's zip beside it
    (data/digit-recognizer.zip, read as it is); None when none of them exists."""
    for candidate in (path, path.with_name(path.name + ".gz"), path.with_name(KAGGLE_ZIP)):
        if candidate.exists():
            return candidate
    return None


def resolve_data(train: str, test: str, sample: str | None) -> tuple[Path, Path, bool]:
    """The files to read (see `find_csv`), or the bundled sample when neither is
    found. Returns (train path, test path, whether the sample is used)."""
    train_p, test_p = Path(train), Path(test)
    found_train, found_test = find_csv(train_p), find_csv(test_p)
    if found_train or found_test or not sample or not Path(sample).is_dir():
        return found_train or train_p, found_test or test_p, False
    folder = Path(sample)
    return folder / "train.csv.gz", folder / "test.csv.gz", True


def _too_large(name: str) -> PipelineError:
    return PipelineError(f"{name}: too large: expected a digits CSV of at most "
                         f"{MAX_CSV_BYTES // 2**20} MB once unpacked (MAX_CSV_BYTES in "
                         f"pipeline/steps/ingest.py), found more")


def _read_bytes(path: Path, member: str) -> tuple[bytes, str]:
    """The file's text as bytes, and how messages name it: gunzipped when it starts
    with gzip's magic number; from a zip archive, its file named `member` (train.csv
    or test.csv), or its only CSV file. At most MAX_CSV_BYTES, whatever it declares."""
    try:
        artifacts.regular_file(path, "a CSV file")
        with open(path, "rb") as f:
            raw = _read_capped(f, str(path))
    except FileNotFoundError:
        raise PipelineError(f"{path}: file not found (expected a CSV file there)") from None
    except OSError as exc:
        raise PipelineError(f"{path}: cannot read ({exc.strerror})") from None
    if raw[:2] == b"\x1f\x8b":
        raw = _gunzip(raw, str(path))
    elif raw[:4] == b"PK\x03\x04":
        raw, member = _zip_member(path, raw, member)
        path = f"{path} ({printable(member)})"
    if raw.startswith(b"\xef\xbb\xbf"):          # UTF-8 byte order mark, as Excel writes
        raw = raw[3:]
    return raw, str(path)


def _read_capped(f, name: str) -> bytes:
    """All of the file object `f`, read in slices: at most MAX_CSV_BYTES, or an error."""
    chunks, size = [], 0
    while chunk := f.read(READ_BYTES):
        chunks.append(chunk)
        size += len(chunk)
        if size > MAX_CSV_BYTES:
            raise _too_large(name)
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _gunzip(data: bytes, name: str) -> bytes:
    """The gzip file `data` unpacked (every member, as gzip does), stopping with an
    error once past MAX_CSV_BYTES instead of unpacking the rest."""
    chunks, size = [], 0
    while data:
        unpack = zlib.decompressobj(wbits=31)
        try:
            # One call, as gzip.decompress makes, but told where to stop.
            chunk = unpack.decompress(data, MAX_CSV_BYTES + 1 - size)
        except zlib.error as exc:
            raise PipelineError(f"{name}: expected a gzip file, found a damaged one ({exc})") \
                from None
        size += len(chunk)
        if size > MAX_CSV_BYTES:
            raise _too_large(name)
        if not unpack.eof:
            raise PipelineError(f"{name}: expected a gzip file, found a damaged one (it ends "
                                "before its last block: truncated?)")
        chunks.append(chunk)
        data = unpack.unused_data.lstrip(b"\0")       # padding after a member is allowed
        if data[:2] != b"\x1f\x8b":
            break                                      # trailing bytes, as gzip ignores
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _zip_member(path: Path, raw: bytes, member: str) -> tuple[bytes, str]:
    """The bytes of `member` in the zip archive `raw`, or of its only CSV file."""
    # zipfile keeps an object of a few hundred bytes per entry: a 512 MB archive of
    # empty entries would take gigabytes before one is read. Counted by their headers.
    entries = raw.count(b"PK\x01\x02")
    if entries > MAX_ZIP_ENTRIES:
        raise PipelineError(f"{path}: too many files: expected a zip archive of a few files "
                            f"(train.csv, test.csv), found about {entries:,}")
    try:
        with zipfile.ZipFile(io.BytesIO(raw)) as archive:
            names = [n for n in archive.namelist() if not n.endswith("/")]
            csvs = [n for n in names if n.lower().endswith((".csv", ".csv.gz"))]
            chosen = next((n for n in names if Path(n).name in (member, member + ".gz")),
                          csvs[0] if len(csvs) == 1 else None)
            if chosen is None:
                found = ", ".join(printable(n) for n in names[:6]) or "no files"
                raise PipelineError(f"{path}: expected a zip archive holding {member}, found "
                                    f"{found}")
            info = archive.getinfo(chosen)
            name = f"{path} ({printable(chosen)})"
            if info.flag_bits & 0x1:
                raise PipelineError(f"{name}: expected an unencrypted zip member, found an "
                                    "encrypted one (unzip it first)")
            if info.file_size > MAX_CSV_BYTES:         # as declared; the read is capped too
                raise _too_large(name)
            # Reads stop at the declared size (then the CRC check fails), and at the cap.
            with archive.open(info) as f:
                data = _read_capped(f, name)
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError) as exc:
        raise PipelineError(f"{path}: expected a zip archive, found a damaged one "
                            f"({printable(str(exc))})") from None
    except NotImplementedError as exc:                 # a compression method zipfile lacks
        raise PipelineError(f"{path}: expected a zip archive compressed as deflate, bzip2 or "
                            f"lzma, found another method ({printable(str(exc))})") from None
    except RuntimeError as exc:                        # encryption zipfile cannot tell early
        raise PipelineError(f"{path}: cannot read the zip archive ({printable(str(exc))})") \
            from None
    if data[:2] == b"\x1f\x8b":
        data = _gunzip(data, name)
    return data, chosen


def _check_line_lengths(name: str, raw: bytes) -> None:
    """Refuse a line longer than MAX_LINE_BYTES before NumPy's reader sees it. Such a
    line covers a whole slice of MAX_LINE_BYTES / 2 aligned bytes, so only slices
    without a line end are looked at closely: a few ms on a good file."""
    half = MAX_LINE_BYTES // 2
    for start in range(0, len(raw), half):
        if raw.find(b"\n", start, start + half) >= 0:
            continue
        # The line through this slice: its ends are at most a long line's length away,
        # or, when that line is too long, found once before stopping.
        begin = raw.rfind(b"\n", 0, start) + 1
        end = raw.find(b"\n", start)
        if (len(raw) if end < 0 else end) - begin > MAX_LINE_BYTES:
            lineno = raw.count(b"\n", 0, begin) + 1
            raise PipelineError(f"{name}, line {lineno}: too long: expected a line of at most "
                                f"{MAX_LINE_BYTES // 2**10} KB (a digits CSV line is a few "
                                "KB), found more")


def _short(name: str, limit: int = 40) -> str:
    """A header name as shown in a message: cut to `limit` characters, control
    characters escaped."""
    return printable(name if len(name) <= limit else name[:limit - 3] + "...")


def _check_header(path: Path, names: list[str], labelled: bool) -> tuple[bool, bool]:
    """Check the header row; return (has an index column to drop, has a label column)."""
    expected = "label,pixel0..pixel783" if labelled else "pixel0..pixel783"
    has_index = len(names) > 1 and names[0] in INDEX_NAMES
    rest = names[1:] if has_index else names
    has_label = bool(rest) and rest[0] == "label"
    if rest and _INT_TEXT.fullmatch(rest[0]):
        raise PipelineError(
            f"{path}, line 1: expected a header row ({expected}), found a row of numbers")
    if labelled and not has_label:
        hint = " (is this the test file?)" if "label" not in rest else ""
        raise PipelineError(
            f"{path}, line 1: expected a 'label' column first ({expected}), "
            f"found '{_short(rest[0] if rest else '')}'{hint}")
    if not labelled and "label" in rest:
        raise PipelineError(
            f"{path}, line 1: expected no 'label' column in a test file ({expected}), found "
            f"one (are the train and test files swapped?)")
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
                f"{path}, line 1, column {col}: expected 'pixel{i + first}', "
                f"found '{_short(name)}'")
    return has_index, has_label


def _parse_rows(data: bytes, skip: int, n_cols: int, has_index: bool,
                has_label: bool) -> np.ndarray:
    """Parse CSV lines (after the first `skip`) into an (N, n_cols) array, or raise
    ValueError. Values are checked: labels 0-9, pixels 0-255; an index column only
    has to hold integers. The data must hold at least one non-blank line."""
    # Parsing into uint8 rejects a pixel below 0 or above 255 by itself (NumPy >= 2.3;
    # older versions wrap it round, which is why requirements.txt asks for 2.3); an index
    # column needs a wider type, and then the pixels are range-checked afterwards.
    dtype = np.int64 if has_index else np.uint8
    values = np.loadtxt(io.BytesIO(data), dtype=dtype, delimiter=",", comments=None,
                        quotechar='"', skiprows=skip, ndmin=2)      # (N, n_cols)
    if values.shape[1] != n_cols:
        raise ValueError(f"expected {n_cols} fields, found {values.shape[1]}")
    body = values[:, int(has_index):]
    if has_index and (body.min() < 0 or body[:, int(has_label):].max() > 255):
        raise ValueError("a value is out of range")
    if has_label and body[:, 0].max() > 9:
        raise ValueError("a label is out of range")
    return values


def _parses(data: bytes, layout: tuple[int, bool, bool]) -> bool:
    try:
        _parse_rows(data, 0, *layout)
    except ValueError:
        return False
    return True


def _shown(text: str) -> str:
    """A cell's text as it goes in a message: quoted, with control characters escaped."""
    return f"'{text}'" if text.isprintable() else repr(text)


def _describe_field(text: str) -> str:
    """Why a cell is not a plain integer, in a few words."""
    if not text:
        return "a blank cell"
    if text.lower() in _MISSING:
        return f"{_shown(text)} (a missing value)"
    try:
        value = float(text)
    except ValueError:
        return f"{_shown(text)} (not a number)"
    if value != value or value in (float("inf"), float("-inf")):
        return f"{_shown(text)} (not a finite number)"
    if value != int(value):
        return f"{_shown(text)} (not a whole number)"
    if not _SIGNED_INT_TEXT.fullmatch(text):
        return f"{_shown(text)} (a decimal, as pandas writes a float column)"
    return _shown(text)


def _column_specs(has_index: bool, has_label: bool) -> list[tuple[int, int] | None]:
    """(low, high) bounds per column; None for the index column (any integer)."""
    return [None] * has_index + [(0, 9)] * has_label + [(0, 255)] * N_PIXELS


def _describe_line(path: Path, lineno: int, line: bytes, header: bytes, names: list[str],
                   specs: list[tuple], reason: str) -> str:
    """Say what is wrong with one data line that the reader refused."""
    if line == header:
        return f"{path}, line {lineno}: the header row is repeated inside the data"
    fields = line.split(b",")
    if len(fields) != len(names):
        hint = " (a trailing comma?)" if len(fields) == len(names) + 1 and \
            not fields[-1].strip() else " (a ragged row)"
        return f"{path}, line {lineno}: expected {len(names)} fields, found {len(fields)}{hint}"
    for col, field in enumerate(fields):
        text = field.decode("utf-8", "replace").strip(" \t")
        if len(text) >= 2 and text[0] == text[-1] == '"':
            text = text[1:-1]
        bounds = specs[col]
        if bounds is None and _SIGNED_INT_TEXT.fullmatch(text):
            continue
        if bounds and len(text) < 20 and _INT_TEXT.fullmatch(text) and \
                bounds[0] <= int(text) <= bounds[1]:
            continue
        expected = "an integer" if bounds is None else f"an integer {bounds[0]}-{bounds[1]}"
        return (f"{path}, line {lineno}, column {col + 1} ('{names[col]}'): "
                f"expected {expected}, found {_describe_field(text)}")
    return f"{path}, line {lineno}: cannot read this line ({reason})"


def _first_bad_line(path: Path, raw: bytes, names: list[str], has_index: bool,
                    has_label: bool) -> str:
    """Describe the first data line the reader refuses, or return '' when every
    line reads on its own (so only blank lines were in the way)."""
    layout = (len(names), has_index, has_label)
    specs = _column_specs(has_index, has_label)
    lines = raw.split(b"\n")
    header = lines[0].rstrip(b"\r")
    for start in range(1, len(lines), BLOCK_LINES):
        block = lines[start:start + BLOCK_LINES]
        kept = [line for line in block if line.strip()]
        if not kept or _parses(b"\n".join(kept), layout):
            continue
        for lineno, line in enumerate(block, start=start + 1):
            if not line.strip():
                continue                       # blank lines are skipped, as pandas does
            try:
                _parse_rows(line, 0, *layout)
            except ValueError as exc:
                return _describe_line(path, lineno, line.rstrip(b"\r"), header, names,
                                      specs, str(exc))
    return ""


def parse_digits(path: Path, raw: bytes, labelled: bool) -> tuple[np.ndarray, np.ndarray | None]:
    """Parse the text of a Kaggle digits CSV read from `path` (named in messages).

    Returns images of shape (n_samples, 784), uint8, and labels of shape
    (n_samples,), int64 (None when `labelled` is False).
    """
    if np.lib.NumpyVersion(np.__version__) < "2.3.0":     # see _parse_rows
        raise PipelineError(f"NumPy {np.__version__} would read a pixel of 256 as 0: this "
                            "pipeline needs NumPy 2.3 or newer (pip install -r requirements.txt)")
    if not _NON_BLANK.search(raw):
        raise PipelineError(f"{path}: expected a header row and data rows, found an empty file")
    if b"\r" in raw[:MAX_LINE_BYTES + 2].split(b"\n", 1)[0].rstrip(b"\r"):
        raise PipelineError(f"{path}, line 1: expected lines ending in \\n or \\r\\n, found "
                            "lines ending in a bare \\r (old Mac line ends)")
    _check_line_lengths(path, raw)
    end = raw.find(b"\n")
    header = (raw if end < 0 else raw[:end]).rstrip(b"\r")
    try:
        names = [n.strip().strip('"') for n in header.decode("utf-8").split(",")]
    except UnicodeDecodeError:
        raise PipelineError(f"{path}, line 1: expected a UTF-8 text header row") from None
    if len(names) == 1:              # e.g. Excel in a comma-decimal locale writes ';'
        other = next((d for d in (";", "\t", "|", " ") if d in names[0]), None)
        if other:
            raise PipelineError(f"{path}, line 1: expected commas between the columns, "
                                f"found {other!r}")
    has_index, has_label = _check_header(path, names, labelled)
    if end < 0 or not _NON_BLANK.search(raw, end + 1):
        raise PipelineError(f"{path}: expected data rows after the header, found none")

    layout = (len(names), has_index, has_label)
    try:
        values = _parse_rows(raw, 1, *layout)                  # (N, n_columns)
    except ValueError as exc:
        where = _first_bad_line(path, raw, names, has_index, has_label)
        if where:
            raise PipelineError(where) from None
        # Every line reads on its own: the reader only tripped on whitespace-only lines.
        kept = b"\n".join(line for line in raw.split(b"\n")[1:] if line.strip())
        try:
            values = _parse_rows(kept, 0, *layout)
        except ValueError:
            raise PipelineError(f"{path}: cannot read as CSV ({exc})") from None
    if has_index:
        log.warning("%s: dropped a leading index column ('%s'), as written by pandas' to_csv",
                    path, names[0])
    body = values[:, int(has_index):]
    labels = body[:, 0].astype(np.int64) if has_label else None       # (N,)
    images = np.ascontiguousarray(body[:, int(has_label):], dtype=np.uint8)  # (N, 784)
    return images, labels


def read_digits_csv(path: str | Path, labelled: bool) -> tuple[np.ndarray, np.ndarray | None]:
    """Read a Kaggle digits CSV: plain, gzipped, or inside a zip archive.

    Returns images of shape (n_samples, 784), uint8, and labels of shape
    (n_samples,), int64 (None when `labelled` is False).
    """
    raw, name = _read_bytes(Path(path), "train.csv" if labelled else "test.csv")
    return parse_digits(name, raw, labelled)


def run_train(params: dict, deps: dict[str, Path], outs: dict[str, Path]) -> None:
    """Ingest the labelled CSV deps["csv"] into outs["train_images"] (N, 784) uint8 and
    outs["train_labels"] (N,) int64."""
    csv_path = deps["csv"]
    with progress.activity(f"ingest {csv_path.name}"):
        images, labels = read_digits_csv(csv_path, labelled=True)
        artifacts.save_array(outs["train_images"], images)
        artifacts.save_array(outs["train_labels"], labels)
    log.info("ingest: %s -> %d labelled images", csv_path, len(images))


def run_test(params: dict, deps: dict[str, Path], outs: dict[str, Path]) -> None:
    """Ingest the unlabelled CSV deps["csv"] into outs["test_images"] (M, 784) uint8."""
    csv_path = deps["csv"]
    with progress.activity(f"ingest {csv_path.name}"):
        images, _ = read_digits_csv(csv_path, labelled=False)
        artifacts.save_array(outs["test_images"], images)
    log.info("ingest: %s -> %d test images", csv_path, len(images))

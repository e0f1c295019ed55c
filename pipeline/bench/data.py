"""The benchmark's data: Kaggle's CSVs where they are, else generated ones of the
same shape, and the timed ingest of them."""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from pipeline.bench import ROOT
from pipeline.bench.table import row
from pipeline.steps import ingest, preprocess

KAGGLE = ROOT.parent / "shared" / "data" / "digit-recognizer"
KAGGLE_ROWS = (42000, 28000)        # labelled, test
LIT_FRACTION = 0.19                 # share of non-zero pixels in an MNIST image


def find_csvs(folder: Path) -> tuple[Path, Path] | None:
    """(train, test) in `folder`, plain or gzipped, or None when either is missing."""
    found = []
    for name in ("train", "test"):
        paths = [folder / f"{name}.csv", folder / f"{name}.csv.gz"]
        found.append(next((p for p in paths if p.is_file()), None))
    return None if None in found else (found[0], found[1])


def csv_bytes(table: np.ndarray) -> bytes:
    """The rows of an integer table (R, C) with values 0-255 as CSV lines, built
    with array operations (a Python loop over 55 million cells takes minutes)."""
    v = table.ravel().astype(np.int64)
    digits = 1 + (v >= 10) + (v >= 100)                  # characters in each value
    ends = np.cumsum(digits + 1)                          # one past each value's separator
    start = ends - digits - 1
    out = np.full(int(ends[-1]), ord(","), np.uint8)
    out[ends[table.shape[1] - 1::table.shape[1]] - 1] = ord("\n")
    out[start + digits - 1] = ord("0") + v % 10
    two, three = digits >= 2, digits == 3
    out[(start + digits - 2)[two]] = ord("0") + v[two] // 10 % 10
    out[start[three]] = ord("0") + v[three] // 100
    return out.tobytes()


def write_digits_csv(path: Path, images: np.ndarray, labels: np.ndarray | None) -> Path:
    """Write images (N, 784) uint8, and labels (N,) when given, in Kaggle's format."""
    header = (["label"] if labels is not None else []) + [f"pixel{i}" for i in range(784)]
    with open(path, "wb") as f:
        f.write((",".join(header) + "\n").encode())
        for start in range(0, len(images), 4096):            # bounded memory
            rows = images[start:start + 4096]
            if labels is not None:
                rows = np.column_stack([labels[start:start + 4096], rows])
            f.write(csv_bytes(rows))
    return path


def generate_csvs(folder: Path, n_train: int, n_test: int,
                  rng: np.random.Generator) -> tuple[Path, Path]:
    """Kaggle-format train.csv and test.csv of random images, as sparse as MNIST's.
    Their labels are random: the timings are real, an accuracy on them means nothing."""
    def images(n):
        lit = rng.random((n, 784)) < LIT_FRACTION
        return (lit * rng.integers(1, 256, (n, 784))).astype(np.uint8)   # (n, 784)

    return (write_digits_csv(folder / "train.csv", images(n_train), rng.integers(0, 10, n_train)),
            write_digits_csv(folder / "test.csv", images(n_test), None))


def time_ingest(train_csv: Path, test_csv: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Parse both CSVs as ingest does, report the seconds; return (train images,
    labels, test images)."""
    started = time.perf_counter()
    images, labels = ingest.read_digits_csv(train_csv, labelled=True)
    train_s = time.perf_counter() - started
    test_images, _ = ingest.read_digits_csv(test_csv, labelled=False)
    total = time.perf_counter() - started
    row("ingest, train.csv + test.csv", f"{total:.2f} s",
        f"{len(images)} + {len(test_images)} rows; train {train_s:.2f} s, "
        f"test {total - train_s:.2f} s")
    return images, labels, test_images


def load_arrays(train_csv: Path, test_csv: Path, p: dict) -> tuple[np.ndarray, ...]:
    """Ingest both CSVs (timed), then split and scale as the preprocess stage does, in
    memory, with the params `p`. Returns (X, y, X_val, y_val, X_test): float32 images
    of shape (n, 784) and int64 labels of shape (n,)."""
    images, labels, test_images = time_ingest(train_csv, test_csv)
    train_idx, val_idx = preprocess.stratified_split(
        labels, p["preprocess.val_fraction"], np.random.default_rng([p["seed"], 1]))
    X, y = preprocess.scale(images[train_idx]), labels[train_idx]          # (N, 784)
    X_val, y_val = preprocess.scale(images[val_idx]), labels[val_idx]
    return X, y, X_val, y_val, preprocess.scale(test_images)

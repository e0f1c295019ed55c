"""The benchmark's data: the CSVs the pipeline reads, or those of a folder, else
generated ones of Kaggle's shape; and the timed ingest of them."""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from pipeline.bench import ROOT
from pipeline.bench.table import row
from pipeline.config import params as params_mod
from pipeline.errors import PipelineError
from pipeline.images.pixels import scale
from pipeline.steps import ingest, preprocess

KAGGLE_ROWS = (42000, 28000)        # labelled, test
LIT_FRACTION = 0.19                 # share of non-zero pixels in an MNIST image


def find_pair(train: Path, test: Path) -> tuple[Path, Path] | None:
    """The files to read for `train` and `test` (each itself, gzipped beside it or in
    Kaggle's zip beside it: `ingest.find_csv`), or None when either is missing."""
    found = ingest.find_csv(train), ingest.find_csv(test)
    return None if None in found else found


def pipeline_paths(params_file: Path) -> tuple[str, str]:
    """data.train and data.test as `python run.py` in the project folder reads them:
    from `params_file`, then params.local.yaml beside it when that exists."""
    p = params_mod.load(params_file, local=params_file.with_name(params_mod.LOCAL))
    return p["data.train"], p["data.test"]


def csv_bytes(table: np.ndarray) -> bytes:
    """The rows of an integer table (R, C) with values 0-255 as CSV lines, built
    with array operations rather than a Python loop over the cells (docs/speed.md)."""
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


def named(csvs: tuple[Path, Path]) -> str:
    """The files of `csvs`, once when both are one archive."""
    return str(csvs[0]) if csvs[0] == csvs[1] else f"{csvs[0]} and {csvs[1]}"


def generate_kaggle_like(workdir: Path, n_train: int, n_test: int
                         ) -> tuple[tuple[Path, Path], str]:
    """`generate_csvs` in `workdir`, seeded; returns (the CSVs, what they are)."""
    csvs = generate_csvs(workdir, n_train, n_test, np.random.default_rng(0))
    return csvs, f"generated, {n_train} labelled + {n_test} test rows, random labels"


def choose_csvs(folder: Path | None, generate: tuple[int, int] | None,
                workdir: Path) -> tuple[tuple[Path, Path], str]:
    """The (train, test) CSVs to time, and what they are for the `data:` line:
    generated ones of `generate` rows in `workdir` when given; else those in `folder`,
    raising PipelineError when it lacks one; else the pipeline's (`pipeline_paths`,
    relative paths from the project folder); else generated ones of Kaggle's shape."""
    if generate:
        return generate_kaggle_like(workdir, *generate)
    if folder is not None:
        csvs = find_pair(folder / "train.csv", folder / "test.csv")
        if csvs is None:
            lacking = [n for n in ("train.csv", "test.csv")
                       if ingest.find_csv(folder / n) is None]
            found = "no such folder" if not folder.is_dir() else "no " + " and no ".join(lacking)
            raise PipelineError(f"--data {folder}: expected train.csv and test.csv there "
                                f"(plain, .gz or in {ingest.KAGGLE_ZIP}), found {found}")
        return csvs, f"{named(csvs)} (--data)"
    train, test = pipeline_paths(ROOT / "params.yaml")
    csvs = find_pair(ROOT / train, ROOT / test)
    if csvs is not None:
        return csvs, f"{named(csvs)} (the params' data.train and data.test)"
    csvs, what = generate_kaggle_like(workdir, *KAGGLE_ROWS)
    lacking = " and ".join(p for p in (train, test) if ingest.find_csv(ROOT / p) is None)
    return csvs, (f"{what}; not found: {lacking} (the params' data.train and data.test, "
                  f"plain, .gz or in {ingest.KAGGLE_ZIP} beside them); --data FOLDER "
                  f"names another folder")


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
    X, y = scale(images[train_idx]), labels[train_idx]          # (N, 784)
    X_val, y_val = scale(images[val_idx]), labels[val_idx]
    return X, y, X_val, y_val, scale(test_images)

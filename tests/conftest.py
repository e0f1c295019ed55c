"""Fixtures every test folder can use; the helpers behind them are in helpers.py."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from helpers import sample_rows, write_lines


@pytest.fixture
def tiny_csvs(tmp_path) -> tuple[Path, Path]:
    """(train.csv, test.csv): 400 labelled and 60 test rows of real digits."""
    return (write_lines(tmp_path / "data" / "train.csv", sample_rows("train.csv.gz", 400)),
            write_lines(tmp_path / "data" / "test.csv", sample_rows("test.csv.gz", 60)))


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)

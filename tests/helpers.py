"""Helpers the tests share: tiny CSVs cut from the bundled sample, params, the CLI."""
from __future__ import annotations

import dataclasses
import gzip
import os
import subprocess
import sys
from functools import lru_cache
from pathlib import Path

from pipeline.config import params as params_mod
from pipeline.config import sections as settings

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "data" / "sample"


def sample_rows(name: str, n: int) -> list[str]:
    """The header and first `n` data lines of a bundled sample file."""
    with gzip.open(SAMPLE / name, "rt", newline="") as f:
        return [next(f).rstrip("\r\n") for _ in range(n + 1)]


def write_lines(path: Path, lines: list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path


def make_params(tmp_path: Path, train_csv: Path, test_csv: Path, *overrides: str) -> dict:
    """Default params.yaml with data and outputs under tmp_path, plus overrides."""
    base = [f"data.train={train_csv}", f"data.test={test_csv}", "data.sample=null",
            f"outputs={tmp_path / 'outputs'}", "train.epochs=2"]
    return params_mod.load(ROOT / "params.yaml", base + list(overrides))


@lru_cache(maxsize=None)
def _default_train() -> settings.Train:
    return settings.Train.of(params_mod.load(ROOT / "params.yaml"))


def train_settings(**changes) -> settings.Train:
    """params.yaml's train section with `changes`. They are not checked, so that a
    test can also pass what params.load refuses, as a direct caller of fit could."""
    return dataclasses.replace(_default_train(), **changes)


def plain_settings(**changes) -> settings.Train:
    """`train_settings` with every option of the training loop off (`Train.plain`),
    then `changes`: tests of one option stay apart from params.yaml's choice of others."""
    return dataclasses.replace(train_settings().plain(), **changes)


def run_cli(*args: str, cwd: Path = ROOT, env: dict | None = None,
            timeout: float = 120) -> subprocess.CompletedProcess:
    """`python run.py ARGS` in a subprocess; returns the completed process."""
    return subprocess.run([sys.executable, str(ROOT / "run.py"), *args], cwd=cwd,
                          capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})}, stdin=subprocess.DEVNULL)


def tree_state(folder: Path) -> dict[str, bytes]:
    """Every file under `folder` with its bytes, to check that nothing changed."""
    return {str(p.relative_to(folder)): p.read_bytes()
            for p in sorted(folder.rglob("*")) if p.is_file()}

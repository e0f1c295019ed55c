"""Stage 5, submit: Kaggle's submission.csv (`ImageId,Label`, ImageId from 1)."""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from pipeline import artifacts
from pipeline.errors import PipelineError

log = logging.getLogger(__name__)

HEADER = "ImageId,Label"


def submission_text(labels: np.ndarray) -> str:
    """One row per test image, in input order."""
    rows = [HEADER] + [f"{i},{label}" for i, label in enumerate(labels.tolist(), start=1)]
    return "\n".join(rows) + "\n"


def check_submission(path: Path, n_rows: int) -> None:
    """Raise unless `path` is a well-formed submission for `n_rows` test images."""
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    if not lines or lines[0] != HEADER:
        raise PipelineError(f"{path}, line 1: expected the header {HEADER!r}")
    if len(lines) - 1 != n_rows:
        raise PipelineError(f"{path}: expected {n_rows} rows, found {len(lines) - 1}")
    for lineno, line in enumerate(lines[1:], start=2):
        image_id, _, label = line.partition(",")
        if image_id != str(lineno - 1) or label not in tuple("0123456789"):
            raise PipelineError(f"{path}, line {lineno}: expected '{lineno - 1},<digit>', "
                                f"found {line!r}")


def run(params: dict, deps: dict[str, Path], outs: dict[str, Path]) -> None:
    """The stage's entry, as every step's: deps test_labels -> outs submission."""
    write_submission(deps["test_labels"], outs["submission"])


def write_submission(labels_in: Path, submission_out: Path) -> None:
    """Write and check the submission; it is renamed into place only once checked."""
    labels = artifacts.load_array(labels_in, "predict")
    with artifacts.atomic_path(submission_out) as tmp:
        tmp.write_text(submission_text(labels), encoding="utf-8")
        check_submission(tmp, len(labels))
    log.info("submit: wrote %s (%d rows)", submission_out, len(labels))

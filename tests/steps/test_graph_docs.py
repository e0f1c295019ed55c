"""docs/pipeline.md's table of stages says what the graph says: the stages in order,
and every file each one writes."""
import fnmatch
import itertools
import re
from pathlib import Path

import pytest
from helpers import ROOT

from pipeline.config import params as params_mod
from pipeline.steps.graph import STAGES, STEPS


def table() -> dict[str, str]:
    """Stage -> its 'writes' cell, in the table's order."""
    text = (ROOT / "docs" / "pipeline.md").read_text(encoding="utf-8")
    rows = re.findall(r"^\| (\w+) \| .*? \| (.*) \|$", text, flags=re.M)
    return {stage: writes for stage, writes in rows if stage in STAGES}


def patterns(cell: str) -> list[str]:
    """The file patterns a cell names in backticks, braces expanded:
    `preprocess/{train,val}_x.npy` -> preprocess/train_x.npy, preprocess/val_x.npy."""
    found = []
    for name in re.findall(r"`([^`]+)`", cell):
        parts = re.split(r"\{([^}]*)\}", name)
        choices = [p.split(",") if i % 2 else [p] for i, p in enumerate(parts)]
        found += ["".join(c) for c in itertools.product(*choices)]
    return found


def test_the_table_lists_the_stages_in_order():
    assert list(table()) == list(STAGES)


@pytest.mark.parametrize("stage", STAGES)
def test_the_table_names_every_file_a_stage_writes(stage):
    params = params_mod.load(ROOT / "params.yaml", ["outputs=outputs"])
    named = patterns(table()[stage])
    for step in (s for s in STEPS if s.stage == stage):
        for path in step.outs(params).values():
            relative = Path(path).relative_to("outputs").as_posix()
            assert any(fnmatch.fnmatch(relative, p) for p in named), (
                f"docs/pipeline.md's row for {stage} does not name {relative}")

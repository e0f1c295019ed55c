"""dvc.yaml declares exactly the pipeline's own stages, deps, params and outputs."""
import re
from pathlib import Path

import pytest
import yaml
from helpers import ROOT

from pipeline.config import params as params_mod
from pipeline.steps.graph import STAGES, STEPS


@pytest.fixture(scope="module")
def dvc():
    return yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]


@pytest.fixture(scope="module")
def params():
    # No sample fallback: DVC sees the configured data paths.
    return params_mod.load(ROOT / "params.yaml", ["data.sample=null"])


def paths(entries, params):
    """Resolve ${key} from params.yaml in a list of paths or {path: options} entries."""
    names = [next(iter(e)) if isinstance(e, dict) else e for e in entries or []]
    return {Path(re.sub(r"\$\{([\w.]+)\}", lambda m: str(params[m.group(1)]), n)) for n in names}


def test_same_stages_in_the_same_order(dvc):
    assert list(dvc) == list(STAGES)


@pytest.mark.parametrize("stage", STAGES)
def test_stage_matches_the_pipeline(dvc, params, stage):
    entry, steps = dvc[stage], [s for s in STEPS if s.stage == stage]
    assert entry["cmd"] == f"python run.py {stage}"
    outs = set().union(*(set(s.outs(params).values()) for s in steps))
    assert paths(entry.get("outs"), params) | paths(entry.get("metrics"), params) \
        | paths(entry.get("plots"), params) == outs
    deps = set().union(*(set(s.deps(params).values()) for s in steps)) - outs
    code = {Path(m) for s in steps for m in s.code}
    assert paths(entry.get("deps"), params) == deps | code
    declared = set(entry.get("params", []))
    wanted = set().union(*(s.params for s in steps))
    # A whole section name ("train") stands for every key in it.
    covered = {k for k in wanted if k in declared or k.split(".")[0] in declared}
    assert covered == wanted and all(
        d in wanted or any(k.startswith(d + ".") for k in wanted) for d in declared)

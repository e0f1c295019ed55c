"""dvc.yaml is made from the stage graph, and real DVC (requirements-dev.txt) runs it on a
copy of the project: DVC and `python run.py status` give one verdict."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from helpers import ROOT

from pipeline.engine import dvc
from pipeline.steps.graph import STAGES

BIN = Path(sys.executable).parent              # this Python's `python`, and dvc beside it
DVC = shutil.which("dvc", path=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")
GIT = shutil.which("git")


def test_the_committed_dvc_yaml_is_the_one_the_graph_makes():
    assert (ROOT / "dvc.yaml").read_text() == dvc.render(), \
        "dvc.yaml is behind pipeline/steps/graph.py: run `python -m pipeline.engine.dvc`"


def test_each_stage_runs_alone_and_keeps_its_records_but_not_its_clock():
    stages = yaml.safe_load(dvc.render())["stages"]
    assert list(stages) == list(STAGES)
    for name, stage in stages.items():
        assert stage["cmd"] == f"python run.py {name} --single"
    assert "${outputs}/.records/train.json" in stages["train"]["outs"]
    assert not any("timing" in path for s in stages.values() for path in s["outs"] + s["deps"])
    assert stages["predict"]["metrics"] == [{"${outputs}/metrics.json": {"cache": False}}]


# --- real DVC on a copy of the project, with the bundled sample and a tiny network ---

def sh(*args: str, cwd: Path, ok: bool = True) -> subprocess.CompletedProcess:
    """Run a command in the copy, with this Python first on PATH and no analytics."""
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
           "DVC_NO_ANALYTICS": "1", "DVC_SITE_CACHE_DIR": str(cwd.parent / "dvc-site"),
           "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.com"}
    done = subprocess.run(list(args), cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=300, stdin=subprocess.DEVNULL)
    if ok:
        assert done.returncode == 0, f"{' '.join(args)}:\n{done.stdout}\n{done.stderr}"
    return done


def runner_status(repo: Path) -> dict[str, str]:
    """`python run.py status` of the copy, as {step: what it says}."""
    lines = sh(sys.executable, "run.py", "status", cwd=repo).stdout.splitlines()
    return dict(line.split(None, 1) for line in lines if not line.startswith("data:"))


def agree(repo: Path) -> None:
    """Both tools call everything up to date."""
    assert sh(DVC, "status", cwd=repo).stdout.strip() == "Data and pipelines are up to date."
    assert set(runner_status(repo).values()) == {"up to date"}


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    """A git repository of the project, DVC initialised, `dvc repro` run once: the
    params name the bundled sample's files (DVC reads the files named), 16 hidden
    units, one epoch."""
    if DVC is None:
        pytest.skip("dvc is not installed: pip install -r requirements-dev.txt")
    if GIT is None:
        pytest.skip("git is not installed: DVC needs a git repository")
    repo = tmp_path_factory.mktemp("dvc") / "project"
    ignore = shutil.ignore_patterns("__pycache__")
    shutil.copytree(ROOT / "pipeline", repo / "pipeline", ignore=ignore)
    shutil.copytree(ROOT / "data" / "sample", repo / "data" / "sample")
    for name in ("run.py", "dvc.yaml", ".gitignore"):
        shutil.copy2(ROOT / name, repo / name)
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["data"].update(train="data/sample/train.csv.gz", test="data/sample/test.csv.gz")
    params["train"].update(hidden=16, epochs=1)
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    sh(GIT, "init", "-q", cwd=repo)
    sh(DVC, "init", "-q", cwd=repo)
    sh(GIT, "add", "-A", cwd=repo)
    sh(GIT, "commit", "-qm", "the project", cwd=repo)
    repro = sh(DVC, "repro", cwd=repo)
    return repo, repro


def test_dvc_repro_runs_each_stage_once_and_run_py_agrees(repo):
    repo, repro = repo
    for stage in STAGES:
        assert f"> python run.py {stage} --single" in repro.stdout
        assert f"{stage}: running (never run)" in repro.stdout or \
            f"{stage}:train: running (never run)" in repro.stdout
    assert (repo / "outputs" / "submission.csv").read_text().count("\n") == 1001
    assert (repo / "outputs" / "report" / "index.html").exists()
    agree(repo)
    # git sees the headline metrics, and nothing else of the outputs.
    untracked = sh(GIT, "status", "--porcelain", "--untracked-files=all", cwd=repo).stdout
    assert sorted(untracked.splitlines()) == ["?? dvc.lock", "?? outputs/metrics.json"]


def test_dvc_shows_the_headline_metrics_and_plots_the_history(repo):
    repo, _ = repo
    shown = json.loads(sh(DVC, "metrics", "show", "--json", cwd=repo).stdout)
    metrics = next(iter(shown.values()))["data"]["outputs/metrics.json"]["data"]
    assert set(metrics["val_f1"]) == set("0123456789")
    assert {"val_accuracy", "val_accuracy_ci95", "val_loss", "macro_f1"} <= set(metrics)
    assert "confusion_matrix" not in metrics and "per_class" not in metrics
    assert len(sh(DVC, "metrics", "show", cwd=repo).stdout.splitlines()[0]) < 400
    sh(DVC, "plots", "show", "-o", "dvc_plots", cwd=repo)
    page = (repo / "dvc_plots" / "index.html").read_text()
    assert '"step": "1"' in page and "val_accuracy" in page
    assert "dvc_plots" not in sh(GIT, "status", "--porcelain", cwd=repo).stdout


def test_an_experiment_and_reruns_from_either_side_keep_one_verdict(repo):
    repo, _ = repo
    sh(GIT, "add", "dvc.lock", "outputs/metrics.json", cwd=repo)
    sh(GIT, "commit", "-qm", "one epoch", cwd=repo)
    done = sh(DVC, "exp", "run", "-S", "train.epochs=2", cwd=repo)
    assert "Stage 'preprocess' didn't change, skipping" in done.stdout
    assert "> python run.py train --single" in done.stdout
    agree(repo)
    # The experiment and the commit, side by side: each with its params and metrics.
    table = json.loads(sh(DVC, "exp", "show", "--json", cwd=repo).stdout)
    epochs = {}
    for commit in table:
        for run in [commit, *[e for x in commit.get("experiments") or [] for e in x["revs"]]]:
            data = run["data"]
            epochs[data["params"]["params.yaml"]["data"]["train"]["epochs"]] = \
                data["metrics"]["outputs/metrics.json"]["data"]["val_accuracy"]
    assert set(epochs) == {1, 2} and epochs[1] != epochs[2]
    diff = json.loads(sh(DVC, "metrics", "diff", "--json", cwd=repo).stdout)
    assert "val_accuracy" in diff["outputs/metrics.json"]
    # A retrain by the runner: a new clock in timing.json, the same record, and DVC agrees.
    timing = (repo / "outputs" / "train" / "timing.json").read_bytes()
    sh(sys.executable, "run.py", "train", "--force", cwd=repo)
    assert (repo / "outputs" / "train" / "timing.json").read_bytes() != timing
    agree(repo)
    # Back to one epoch: DVC puts train's outputs back from its run cache, records too.
    sh(GIT, "checkout", "params.yaml", cwd=repo)
    again = sh(DVC, "repro", cwd=repo)
    assert "Stage 'train' is cached - skipping run, checking out outputs" in again.stdout
    agree(repo)
    assert sh(sys.executable, "run.py", cwd=repo).stdout.count(": up to date, skipped") == 8

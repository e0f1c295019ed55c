"""dvc.yaml, made from the stage graph: `python -m pipeline.engine.dvc` rewrites it, and
tests/test_dvc.py checks that the committed file is what `render` makes.

One DVC stage per stage of the graph, whose command runs that stage alone (`python
run.py STAGE --single`): DVC decides what to run, and the runner refuses to build on
a step DVC left stale. Paths keep ${outputs}, ${data.train} and ${data.test}, which
DVC fills in from params.yaml. Each stage's outputs include its steps' records
(<outputs>/.records/): outputs that DVC puts back from its cache (its run cache,
`dvc checkout`, `dvc exp apply`) come with the record that vouches for them, so that
`python run.py status` and `dvc status` agree. Outputs that change from run to run
(`Step.volatile`: train's timing.json) are left out, as the runner leaves them out of
its records.

The headline metrics (graph.metrics_path) are DVC metrics kept by git (`cache:
false`), so that `dvc metrics diff` and `dvc exp show` compare them across commits;
.gitignore lets them through. train's history is plotted by step (one x per row,
whatever the number of members).
"""
from __future__ import annotations

import contextlib
import tempfile
from pathlib import Path

import yaml

from pipeline import artifacts, sources
from pipeline.config.params import SCHEMA
from pipeline.engine.runner import record_path
from pipeline.steps.graph import STAGES, STEPS, artifact, metrics_path

PATH = sources.ROOT / "dvc.yaml"
# The params a path depends on, as DVC writes them; no sample: DVC reads the files named.
TEMPLATE = {"outputs": "${outputs}", "data.train": "${data.train}",
            "data.test": "${data.test}", "data.sample": None}
HEADER = """\
# Made from the stage graph (pipeline/steps/graph.py) by `python -m pipeline.engine.dvc`:
# edit the graph, not this file. README.md, "With DVC", says how to use it.
"""
# history.csv's columns drawn by `dvc plots show`, against its `step` column.
PLOTS = {"loss": ("loss", "val_loss"), "accuracy": ("train_accuracy", "val_accuracy")}


def _params(keys: list[str]) -> list[str]:
    """Dotted param keys, a whole section written as its name (DVC then tracks
    every key in it, which params.yaml must all hold)."""
    sections: dict[str, list[str]] = {}
    for key in SCHEMA:
        sections.setdefault(key.split(".")[0], []).append(key)
    names = []
    for key in keys:
        section = key.split(".")[0]
        name = section if "." in key and set(sections[section]) <= set(keys) else key
        if name not in names:
            names.append(name)
    return names


def stage(name: str, params: dict) -> dict:
    """The DVC stage of graph stage `name`, paths made with `params`."""
    steps = [s for s in STEPS if s.stage == name]
    outs = [p for s in steps for n, p in s.outs(params).items() if n not in s.volatile]
    outs += [record_path(params, s) for s in steps]
    deps = [p for s in steps for p in s.deps(params).values() if p not in outs]
    deps += [Path(module) for s in steps for module in s.code]
    entry: dict = {"cmd": f"python run.py {name} --single",
                   "deps": [str(p) for p in dict.fromkeys(deps)]}
    keys = list(dict.fromkeys(k for s in steps for k in s.params))
    if keys:
        entry["params"] = _params(keys)
    metrics = metrics_path(params)
    entry["outs"] = [str(p) for p in outs if p != metrics]
    if metrics in outs:
        entry["metrics"] = [{str(metrics): {"cache": False}}]
    return entry


def render() -> str:
    """dvc.yaml's text."""
    # Made in an empty folder, so that no file here changes a path: ingest looks for
    # the data's .gz and Kaggle's zip beside it.
    with tempfile.TemporaryDirectory() as empty, contextlib.chdir(empty):
        stages = {name: stage(name, TEMPLATE) for name in STAGES}
    history = str(artifact(TEMPLATE, "train", "history.csv"))
    plots = [{name: {"x": "step", "y": {history: list(columns)}, "y_label": name}}
             for name, columns in PLOTS.items()]
    body = yaml.safe_dump({"stages": stages, "plots": plots}, sort_keys=False, width=100)
    return HEADER + body


def main() -> None:
    """Rewrite dvc.yaml, atomically."""
    artifacts.write_text(PATH, render())
    print(f"wrote {PATH}")


if __name__ == "__main__":
    main()

"""Stage 6, report: figures of what the network learned and the page around them
(pipeline/report/), from the artifacts of train and predict."""
from __future__ import annotations

from pathlib import Path

from pipeline.report import figures
from pipeline.steps.ingest import resolve_data


def run(params: dict, deps: dict[str, Path], outs: dict[str, Path]) -> None:
    """The stage's entry, as every step's: the figures and index.html, the page
    marked as a demo when the run is on the bundled sample."""
    sample = resolve_data(params["data.train"], params["data.test"], params["data.sample"])[2]
    figures.run(deps, outs, sample=sample, outputs=params["outputs"])

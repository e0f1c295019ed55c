"""The whole default `python run.py`, timed in a child process."""
from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from pipeline.bench import ROOT
from pipeline.bench.table import row


def time_run(train_csv: Path, test_csv: Path, workdir: Path,
             env: dict) -> tuple[float, int, float | None, str]:
    """Run the default `python run.py` on the CSVs with a fresh outputs folder.

    Returns (wall seconds, its peak resident bytes (0 where /proc is missing), the
    validation accuracy it reports or None, the last lines of its output when it
    failed, else '')."""
    outputs, log = workdir / "outputs", workdir / "run.log"
    cmd = [sys.executable, str(ROOT / "run.py"), "--quiet", "--set", f"data.train={train_csv}",
           "--set", f"data.test={test_csv}", "--set", f"outputs={outputs}"]
    started = time.perf_counter()
    peak = 0
    with open(log, "w") as out:
        child = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
                                 stdin=subprocess.DEVNULL)
        # The kernel's peak of the run's own memory (VmHWM), read until it exits. Not
        # ru_maxrss: Linux carries the forking process's size over the exec into it,
        # and this one holds the benchmark's arrays (docs/speed.md).
        status_file = Path(f"/proc/{child.pid}/status")
        while child.poll() is None:
            with contextlib.suppress(OSError):          # no /proc, or the child just ended
                kib = [int(line.split()[1]) for line in status_file.read_text().splitlines()
                       if line.startswith("VmHWM:")]    # none once it has exited
                peak = max([peak] + [1024 * k for k in kib])
            time.sleep(0.02)
    wall = time.perf_counter() - started
    if child.returncode != 0:
        return wall, peak, None, "\n".join(log.read_text().splitlines()[-5:])
    accuracy = None
    for metrics in (outputs / "metrics.json", outputs / "train" / "metrics.json"):
        if metrics.is_file():
            accuracy = json.loads(metrics.read_text()).get("val_accuracy")
            break
    return wall, peak, accuracy, ""


def report_run(train_csv: Path, test_csv: Path, workdir: Path, threads: int) -> int:
    """Time the default `python run.py` with `threads` BLAS threads (`time_run`) and
    print its rows. Returns 0, or 1 when the run failed."""
    env = {**os.environ, **{v: str(threads) for v in (
        "OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")}}
    wall, peak, accuracy, failure = time_run(train_csv, test_csv, workdir, env)
    if failure:
        row("`python run.py`", "failed", failure.replace("\n", " / "))
        return 1
    shown = f"validation accuracy {100 * accuracy:.2f}%" if accuracy is not None else ""
    row("`python run.py`, wall", f"{wall:.1f} s", "default params.yaml; " + shown)
    row("`python run.py`, peak RSS", f"{peak / 2**20:.0f} MiB" if peak else "n/a",
        "VmHWM, read while it runs" if peak else "no /proc on this system")
    return 0

"""The whole default `python run.py`, timed in a child process."""
from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import time
from pathlib import Path

from pipeline.bench import ROOT


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
        # and this one holds the benchmark's arrays (it read 912 MiB for a 586 MiB run).
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

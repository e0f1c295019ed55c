"""The machine the benchmark runs on: the line that names it, and its threads."""
from __future__ import annotations

import contextlib
import os
import platform
from pathlib import Path

import numpy as np

PAUSE = 0.25                        # s; for OpenBLAS's workers to stop spinning (docs/speed.md)


def machine(threads: int, torch) -> str:
    """One line naming the CPU, the core count and the libraries."""
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        # A VM's model name can be bare ("AMD EPYC"); family and model tell the generation.
        fields = dict(line.split(":", 1) for line in
                      Path("/proc/cpuinfo").read_text().split("\n\n")[0].splitlines()
                      if ":" in line)
        fields = {k.strip(): v.strip() for k, v in fields.items()}
        if "model name" in fields:
            cpu = f"{fields['model name']} (family {fields.get('cpu family', '?')}, " \
                  f"model {fields.get('model', '?')})"
    blas = ""
    with contextlib.suppress(ImportError):
        from threadpoolctl import threadpool_info
        info = next((i for i in threadpool_info() if i["user_api"] == "blas"), None)
        if info:
            blas = f" ({info['internal_api']} {info['version']}, {info.get('architecture', '')})"
    if os.environ.get("OPENBLAS_CORETYPE"):      # overrides OpenBLAS's choice of kernels
        blas += f", OPENBLAS_CORETYPE={os.environ['OPENBLAS_CORETYPE']}"
    return (f"{cpu}, {os.cpu_count()} cores, {threads} threads; Python "
            f"{platform.python_version()}, NumPy {np.__version__}{blas}"
            + (f", PyTorch {torch.__version__} ({torch.backends.cpu.get_cpu_capability()})"
               if torch else ", no PyTorch"))


def limit_threads(threads: int) -> contextlib.AbstractContextManager:
    """Cap the BLAS and OpenMP pools of this process at `threads` (threadpoolctl,
    an optional extra; without it only the run.py child is capped, through its
    environment)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        print("note: threadpoolctl is not installed, so NumPy in this process uses its "
              "default thread count (pip install -r requirements.txt)", flush=True)
        return contextlib.nullcontext()
    return threadpool_limits(threads)

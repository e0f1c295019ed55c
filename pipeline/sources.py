"""The pipeline's source files as this process loaded them.

A step's record must name the code that made its outputs. Modules are imported once,
when the process starts, so hashing the files when a step ends would pair an edit made
during a long run with outputs of the code before it, and hide the edit for good.
`pipeline/__init__.py` imports this module first, so the bytes are read before any
other module of the package: an edit that lands while the modules load shows up as a
change on the next run (a needless rerun at worst, never a hidden edit).
"""
from __future__ import annotations

from pathlib import Path

PACKAGE = Path(__file__).resolve().parent

# Module name -> source bytes, e.g. "pipeline.network" -> the bytes of network.py.
LOADED: dict[str, bytes] = {f"{PACKAGE.name}.{p.stem}": p.read_bytes()
                            for p in sorted(PACKAGE.glob("*.py"))}

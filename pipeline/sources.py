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
ROOT = PACKAGE.parent
# Besides modules, the files the report's page is made of count as code.
SUFFIXES = (".py", ".html", ".js", ".css")

# Path from the project's folder -> bytes, e.g. "pipeline/nn/network.py" -> its source.
LOADED: dict[str, bytes] = {p.relative_to(ROOT).as_posix(): p.read_bytes()
                            for p in sorted(PACKAGE.rglob("*"))
                            if p.suffix in SUFFIXES and "__pycache__" not in p.parts}

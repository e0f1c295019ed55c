"""The run cache: a step's outputs kept under its fingerprint, so that a run with the
same inputs, params and code puts them back instead of computing them again (DVC's
run cache, without a server). Going back to earlier params then takes a copy, not a
retraining.

An entry is a folder <outputs>/.cache/<step>/<key>/ holding a copy of each output and
manifest.json with their hashes; `key` hashes the fingerprint the step's record holds
(params, code, input hashes). An entry appears whole (a temporary folder renamed into
place) and is checked before use: one whose files do not match their hashes is deleted
and the step runs. Beyond `cache.max_mb`, the least recently used entries go first.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
from pathlib import Path

from pipeline import artifacts

log = logging.getLogger(__name__)

FOLDER = ".cache"
MANIFEST = "manifest.json"
MB = 10 ** 6
# The one step worth keeping: it takes minutes; the steps after it take seconds.
STEPS = ("train",)


def key(record: dict) -> str:
    """SHA-256 of a step's fingerprint: its record without the outputs (format, step,
    params, code, and the hashes of its inputs; not their paths or times)."""
    fingerprint = {k: v for k, v in record.items() if k not in ("deps", "outs")}
    fingerprint["deps"] = {name: e["hash"] for name, e in record["deps"].items()}
    return hashlib.sha256(json.dumps(fingerprint, sort_keys=True).encode()).hexdigest()


def folder(outputs: str | Path) -> Path:
    """<outputs>/.cache."""
    return Path(outputs) / FOLDER


def entry_path(outputs: str | Path, step: str, key_: str) -> Path:
    """Where the entry of `step` with fingerprint `key_` is kept."""
    return folder(outputs) / step.replace(":", "-") / key_


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def load(outputs: str | Path, step: str, key_: str,
         outs: dict[str, Path]) -> dict[str, bytes] | None:
    """The cached bytes of each of `outs` (name -> path), checked against the manifest;
    None when there is no entry. A damaged entry is deleted, with a warning."""
    if not re.fullmatch(r"[0-9a-f]{64}", key_):          # not a key: a hand-edited log
        return None
    entry = entry_path(outputs, step, key_)
    if not entry.is_dir():
        return None
    try:
        manifest = json.loads((entry / MANIFEST).read_text(encoding="utf-8"))
        files = {}
        for name, path in outs.items():
            data = (entry / path.name).read_bytes()
            if _sha256(data) != manifest["files"][name]["hash"]:
                raise ValueError(f"{path.name} does not match its hash")
            files[name] = data
    except (OSError, ValueError, KeyError, TypeError) as exc:
        log.warning("%s: the run cache entry %s is damaged (%s): deleted it", step, entry, exc)
        shutil.rmtree(entry, ignore_errors=True)
        return None
    os.utime(entry)                     # used now: evicted last
    return files


def restore(outputs: str | Path, step: str, key_: str, outs: dict[str, Path]) -> bool:
    """Put the entry's copies in place of `outs`, each written atomically (and inside
    `artifacts.renames_together`, with the other steps' outputs); False when there is
    no usable entry."""
    files = load(outputs, step, key_, outs)
    if files is None:
        return False
    for name, path in outs.items():
        artifacts.write_bytes(path, files[name])
    return True


def store(outputs: str | Path, step: str, key_: str, outs: dict[str, Path],
          max_mb: float) -> None:
    """Copy `outs` into the entry for `key_` (replacing one a forced rerun made
    before), then evict entries beyond `max_mb`."""
    if max_mb <= 0:
        return
    entry = entry_path(outputs, step, key_)
    entry.parent.mkdir(parents=True, exist_ok=True)
    for leftover in entry.parent.glob(f".*{artifacts.TMP_SUFFIX}"):     # a killed store's
        shutil.rmtree(leftover, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{key_}.", suffix=artifacts.TMP_SUFFIX,
                                dir=entry.parent))
    try:
        files = {}
        for name, path in outs.items():
            data = path.read_bytes()
            (tmp / path.name).write_bytes(data)
            files[name] = {"file": path.name, "hash": _sha256(data), "size": len(data)}
        (tmp / MANIFEST).write_text(json.dumps({"step": step, "key": key_, "files": files},
                                               indent=2, sort_keys=True) + "\n")
        shutil.rmtree(entry, ignore_errors=True)
        os.rename(tmp, entry)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    evict(outputs, max_mb)


def entries(outputs: str | Path) -> list[Path]:
    """Every entry, least recently stored or restored first."""
    found = [p for p in folder(outputs).glob("*/*") if p.is_dir() and not p.name.startswith(".")]
    return sorted(found, key=lambda p: p.stat().st_mtime_ns)


def size(entry: Path) -> int:
    """Bytes held by an entry's files."""
    return sum(f.stat().st_size for f in entry.iterdir() if f.is_file())


def evict(outputs: str | Path, max_mb: float) -> None:
    """Delete the least recently used entries until the cache holds at most `max_mb`
    megabytes."""
    found = entries(outputs)
    total = sum(size(e) for e in found)
    for entry in found:
        if total <= max_mb * MB:
            break
        total -= size(entry)
        shutil.rmtree(entry, ignore_errors=True)
        log.info("cache: removed the least recently used entry %s (cache.max_mb=%g)",
                 entry.name[:12], max_mb)


def clear(outputs: str | Path) -> tuple[int, int]:
    """Delete the whole cache; returns the number of entries and bytes it held."""
    found = entries(outputs)
    held = len(found), sum(size(e) for e in found)
    with contextlib.suppress(FileNotFoundError):
        shutil.rmtree(folder(outputs))
    return held

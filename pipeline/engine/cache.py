"""The run cache: a step's outputs kept under its fingerprint, so that a run with the
same inputs, params and code puts them back instead of computing them again (DVC's
run cache, without a server). Going back to earlier params then takes a copy, not a
retraining.

An entry is a folder <outputs>/.digit-recognizer-cache/<step>/<key>/ holding a copy of
each output and manifest.json with their hashes; `key` hashes the fingerprint the step's
record holds (params, code, input hashes). An entry appears whole (a temporary folder
renamed into place) and is checked before use: one whose files do not match their hashes
is deleted and the step runs. Beyond `cache.max_mb`, the least recently used entries go
first.

The outputs folder may be any folder, a home folder with other programs' caches in it
included, so only entries this module can prove it wrote are ever counted or deleted
(`owned`): a folder named by a 64-digit key, under a step's folder, holding a manifest
that names that step and key, with no symbolic link on the way.
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

# A name no other program uses: `outputs` may hold a `.cache` of pip, torch, ...
FOLDER = ".digit-recognizer-cache"
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


KEY = re.compile(r"[0-9a-f]{64}")
# A store's temporary folder: `.<key>.<random>` + artifacts.TMP_SUFFIX.
STORING = re.compile(r"\.[0-9a-f]{64}\.[A-Za-z0-9_]+" + re.escape(artifacts.TMP_SUFFIX))


def folder(outputs: str | Path) -> Path:
    """<outputs>/.digit-recognizer-cache."""
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
    if not KEY.fullmatch(key_):                     # not a key: a hand-edited log
        return None
    entry = entry_path(outputs, step, key_)
    if not all(_real_dir(p) for p in (folder(outputs), entry.parent, entry)):
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
    if not (_real_dir(folder(outputs)) and _real_dir(entry.parent)):
        log.warning("cache: not storing %s: %s or %s is a link or not a folder", step,
                    folder(outputs), entry.parent)
        return
    for leftover in entry.parent.iterdir():                     # a killed store's
        if STORING.fullmatch(leftover.name) and _real_dir(leftover):
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
        if _real_dir(entry):                    # a forced rerun's: replaced
            shutil.rmtree(entry, ignore_errors=True)
        os.rename(tmp, entry)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    evict(outputs, max_mb)


def _real_dir(path: Path) -> bool:
    """A folder, and not through a symbolic link at its own name."""
    return not path.is_symlink() and path.is_dir()


def owned(entry: Path, step: str) -> bool:
    """Whether `entry` is one this module wrote for `step`: named by a key, a real
    folder, with a manifest naming that step and key."""
    if not (KEY.fullmatch(entry.name) and _real_dir(entry)):
        return False
    manifest = entry / MANIFEST
    try:
        if manifest.is_symlink() or not manifest.is_file():
            return False
        found = json.loads(manifest.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(found, dict) and found.get("step") == step and found.get("key") == entry.name


def entries(outputs: str | Path) -> list[Path]:
    """Every entry this module can prove it wrote, least recently stored or restored
    first. Anything else in the cache folder is never counted or deleted."""
    root = folder(outputs)
    if not _real_dir(root):
        return []
    found = []
    for step in STEPS:
        where = entry_path(outputs, step, "")
        if _real_dir(where):
            found += [p for p in where.iterdir() if owned(p, step)]
    return sorted(found, key=lambda p: p.stat().st_mtime_ns)


def size(entry: Path) -> int:
    """Bytes held by an entry's files (links not followed)."""
    return sum(f.lstat().st_size for f in entry.iterdir() if not f.is_symlink() and f.is_file())


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
    """Delete every entry (and the folders they leave empty); returns the number of
    entries and bytes it held."""
    found = entries(outputs)
    held = len(found), sum(size(e) for e in found)
    for entry in found:
        shutil.rmtree(entry, ignore_errors=True)
    for step in STEPS:                  # rmdir: a folder that still holds anything stays
        with contextlib.suppress(OSError):
            entry_path(outputs, step, "").rmdir()
    with contextlib.suppress(OSError):
        folder(outputs).rmdir()
    return held

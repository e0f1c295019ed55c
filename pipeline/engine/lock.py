"""One run at a time per outputs folder.

A run holds an advisory lock (flock) on <outputs>/.digit-recognizer.lock for as long as
it writes there; the file says which run holds it. A second run started meanwhile
stops at once and names the first. The kernel drops the lock of a process that dies,
so a killed run's lock is taken over by the next run, which says so. Commands that
only read (status, runs) take no lock.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Iterator

from pipeline.errors import PipelineError

log = logging.getLogger(__name__)

NAME = ".digit-recognizer.lock"        # a name no other program uses: outputs may be any folder


def _holder(fd: int) -> dict:
    """What the lock file says of the run that holds (or held) it; {} if unreadable."""
    try:
        found = json.loads(os.pread(fd, 4096, 0).decode("utf-8", "replace") or "{}")
    except ValueError:
        return {}
    return found if isinstance(found, dict) else {}


def _alive(pid) -> bool:
    try:
        os.kill(int(pid), 0)
    except (OSError, ValueError, TypeError):
        return False
    return True


@contextlib.contextmanager
def held(outputs: str | Path, command: list[str] | None = None) -> Iterator[None]:
    """Hold `outputs`' lock inside the block; raise PipelineError at once, naming the
    run that holds it (pid, command, since when), when another run does."""
    folder = Path(outputs)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / NAME
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o666)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            other = _holder(fd)
            raise PipelineError(
                f"{folder} is in use by another run (pid {other.get('pid', '?')}, "
                f"`{other.get('command', '?')}`, since {other.get('since', '?')}): wait for "
                "it to end, or give this run another outputs folder") from None
        before = _holder(fd)
        if before.get("pid") and not _alive(before["pid"]):
            log.info("%s: the run that held it (pid %s, since %s) was stopped; taking over",
                     path, before["pid"], before.get("since", "?"))
        words = command if command is not None else ["python", *sys.argv]
        mine = {"pid": os.getpid(), "command": " ".join(words),
                "since": time.strftime("%Y-%m-%d %H:%M:%S %Z")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(mine) + "\n").encode("utf-8"), 0)
        try:
            yield
        finally:
            os.ftruncate(fd, 0)             # ended well or not: nobody holds it now
    finally:
        os.close(fd)                        # releases the lock

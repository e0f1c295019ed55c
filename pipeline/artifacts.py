"""Reading and writing artifacts, atomically, and hashing them.

Every file is written under a temporary name in its own folder and renamed into
place, so a crash (even SIGKILL) leaves either the old complete file or the new
complete file, never half of one. Renames are atomic on POSIX; there is no fsync,
so the guarantee covers a killed process, not a lost power supply.
"""
from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import json
import os
import shutil
import stat
import tempfile
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from pipeline.errors import PipelineError

# Bumped when an artifact's layout changes, so older outputs are refused
# (and rebuilt by a full run) instead of being misread.
FORMAT_VERSION = 1
# Temporaries are `.<name>.<random>` + this: a name no other program makes, so that
# cleaning up after a killed run never deletes another tool's `.something.tmp`.
TMP_SUFFIX = ".digit-recognizer-tmp"
_UMASK = os.umask(0)
os.umask(_UMASK)


# While a `renames_together` block is open: finished temporaries, (tmp, final), in order.
_pending: list[tuple[str, Path]] | None = None


@contextlib.contextmanager
def atomic_path(path: Path, together: bool = True) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it onto `path` on success
    (or, inside `renames_together` and unless `together` is False, when that block
    ends well)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TMP_SUFFIX, dir=path.parent)
    os.fchmod(fd, 0o666 & ~_UMASK)     # mkstemp makes 0600; artifacts are ordinary files
    os.close(fd)
    try:
        yield Path(tmp)
    except BaseException as exc:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(exc, OSError) and _disk_full(exc, path.parent):
            raise DiskFull(path) from None
        raise
    if _pending is None or not together:
        os.replace(tmp, path)
    else:
        _pending.append((tmp, path))


class DiskFull(PipelineError):
    """A file could not be written for want of room; what was there before is intact."""

    def __init__(self, path: Path):
        super().__init__(f"disk full writing {path}: free some space, or set outputs to a "
                         "folder on another disk; the outputs already there are intact")


def _disk_full(exc: OSError, folder: Path) -> bool:
    """Whether `exc` means the disk is full: ENOSPC, or a short write with no error
    number (NumPy's "N requested and M written") on a disk with under 1 MB free."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    if exc.errno is None:
        with contextlib.suppress(OSError):
            return shutil.disk_usage(folder).free < 2 ** 20
    return False


@contextlib.contextmanager
def renames_together() -> Iterator[None]:
    """Hold back every rename made inside the block until it ends without error;
    on error, delete the temporaries. Steps that read nothing of each other's
    (ingest's train and test parts) run in one block, so a bad test.csv found
    after a good train.csv leaves the outputs folder as it was."""
    global _pending
    outer, _pending = _pending, []
    try:
        yield
        for tmp, path in _pending:
            os.replace(tmp, path)
    except BaseException:
        for tmp, _ in _pending:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        raise
    finally:
        _pending = outer


def remove_temporaries(folder: Path) -> None:
    """Delete temporary files a killed run left behind in `folder` (regular files
    with a temporary's name; links and folders are left alone)."""
    if folder.is_dir():
        for leftover in folder.glob(f".*{TMP_SUFFIX}"):
            if leftover.is_file() and not leftover.is_symlink():
                with contextlib.suppress(FileNotFoundError):
                    leftover.unlink()


def write_bytes(path: Path, data: bytes, together: bool = True) -> None:
    """Write `data` to `path` atomically (see `atomic_path` for `together`)."""
    with atomic_path(path, together) as tmp:
        tmp.write_bytes(data)


def write_text(path: Path, text: str) -> None:
    """Write `text` as UTF-8 to `path` atomically."""
    write_bytes(path, text.encode("utf-8"))


def write_json(path: Path, obj: Any) -> None:
    """Write `obj` as indented JSON with sorted keys, atomically."""
    write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def save_array(path: Path, array: np.ndarray) -> None:
    """Save one array as .npy, atomically."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.save(f, array, allow_pickle=False)


def save_arrays(path: Path, **arrays: np.ndarray) -> None:
    """Save named arrays as an uncompressed .npz, with the format version inside."""
    buf = io.BytesIO()
    np.savez(buf, format_version=np.array(FORMAT_VERSION), **arrays)
    write_bytes(path, buf.getvalue())


def _missing(path: Path, producer: str | None) -> PipelineError:
    hint = f": run `python run.py {producer}` first" if producer else ""
    return PipelineError(f"{path} is missing{hint}")


def load_array(path: Path, producer: str | None = None) -> np.ndarray:
    """Load a .npy artifact; a missing or unreadable one names the stage to run."""
    try:
        return np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise _missing(path, producer) from None
    except (ValueError, OSError, EOFError) as exc:
        raise PipelineError(
            f"{path} is not a readable array ({exc}): run `python run.py {producer}` again"
        ) from None


def load_arrays(path: Path, producer: str | None = None) -> dict[str, np.ndarray]:
    """Load a .npz written by save_arrays, checking its format version."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except FileNotFoundError:
        raise _missing(path, producer) from None
    except (ValueError, OSError, EOFError) as exc:
        raise PipelineError(f"{path} is not a readable .npz ({exc})") from None
    version = arrays.pop("format_version", None)
    if version is None or int(version) != FORMAT_VERSION:
        found = "no format version" if version is None else f"format {int(version)}"
        raise PipelineError(
            f"{path} was written by an incompatible version ({found}, expected format "
            f"{FORMAT_VERSION}): run `python run.py {producer or ''} --force`")
    return arrays


def load_json(path: Path, producer: str | None = None) -> Any:
    """Load a JSON artifact; a missing one names the stage to run."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise _missing(path, producer) from None
    except (ValueError, OSError) as exc:
        raise PipelineError(f"{path} is not readable JSON ({exc})") from None


def file_hash(path: Path) -> str:
    """SHA-256 of a file's bytes, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def file_kind(mode: int) -> str:
    """What a file that is not a regular one is (from its st_mode), for messages."""
    for test, word in ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a named pipe (FIFO)"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return word
    return "a special file"


def regular_file(path: Path, expected: str) -> os.stat_result:
    """The stat of `path` (a symlink followed), or PipelineError when it is not a
    regular file, saying it expected `expected` ("a CSV file"). Checked before a
    file is opened: opening a FIFO waits for a writer, and /dev/zero never ends."""
    st = os.stat(path)
    if not stat.S_ISREG(st.st_mode):
        raise PipelineError(f"{path}: expected {expected}, found {file_kind(st.st_mode)}")
    return st


def file_state(path: Path, known: dict | None = None) -> dict:
    """{"hash", "size", "mtime_ns"} of a file.

    `known` is an earlier state of the same path; when size and mtime still match,
    its hash is reused instead of reading the file again (as DVC and make do), which
    is what keeps a run with nothing to do under a second. Only a regular file is
    hashed: a FIFO or a device as a data path gets PipelineError, not a hang.
    """
    st = regular_file(path, "a regular file")
    if known and known.get("size") == st.st_size and known.get("mtime_ns") == st.st_mtime_ns:
        return known
    return {"hash": file_hash(path), "size": st.st_size, "mtime_ns": st.st_mtime_ns}

"""Atomic writes, renames held back until a block succeeds, hashes reused by stat."""
import numpy as np
import pytest

from pipeline import artifacts
from pipeline.errors import PipelineError


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "a.npy"
    artifacts.save_array(path, np.arange(3))
    with pytest.raises(RuntimeError):
        with artifacts.atomic_path(path) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("crash")
    assert np.load(path).tolist() == [0, 1, 2]
    assert [p.name for p in tmp_path.iterdir()] == ["a.npy"]


def test_renames_together_all_or_nothing(tmp_path):
    a, b = tmp_path / "a.txt", tmp_path / "b.txt"
    artifacts.write_text(a, "old a")
    with pytest.raises(PipelineError):
        with artifacts.renames_together():
            artifacts.write_text(a, "new a")
            assert a.read_text() == "old a"           # held back until the block ends
            raise PipelineError("bad b")
    assert a.read_text() == "old a" and not b.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt"]
    with artifacts.renames_together():
        artifacts.write_text(a, "new a")
        artifacts.write_text(b, "new b")
    assert a.read_text() == "new a" and b.read_text() == "new b"


def test_remove_temporaries_cleans_what_a_kill_left(tmp_path):
    (tmp_path / (".model.npz.abc" + artifacts.TMP_SUFFIX)).write_bytes(b"x")
    (tmp_path / "model.npz").write_bytes(b"y")
    artifacts.remove_temporaries(tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["model.npz"]


def test_file_state_reuses_the_hash_only_while_size_and_mtime_match(tmp_path):
    path = tmp_path / "f"
    path.write_bytes(b"one")
    first = artifacts.file_state(path)
    assert first["hash"] == artifacts.file_hash(path)
    fake = {**first, "hash": "remembered"}
    assert artifacts.file_state(path, fake)["hash"] == "remembered"
    path.write_bytes(b"other")
    assert artifacts.file_state(path, fake)["hash"] == artifacts.file_hash(path)


def test_npz_of_another_format_version_is_refused(tmp_path):
    path = tmp_path / "m.npz"
    np.savez(path, W1=np.zeros(2), format_version=np.array(artifacts.FORMAT_VERSION + 1))
    with pytest.raises(PipelineError, match="incompatible version"):
        artifacts.load_arrays(path, "train")


def test_written_files_follow_the_umask_not_mkstemps_0600(tmp_path):
    path = tmp_path / "index.html"
    artifacts.write_text(path, "<html></html>")
    assert path.stat().st_mode & 0o777 == 0o666 & ~artifacts._UMASK

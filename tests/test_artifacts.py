"""Atomic writes, renames held back until a block succeeds, hashes reused by stat."""
import errno
from pathlib import Path

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


# --- a full disk ---

def test_a_full_disk_names_the_file_and_leaves_the_old_one(tmp_path, monkeypatch):
    path = tmp_path / "metrics.json"
    path.write_text("old")
    real = Path.write_bytes

    def full(self, data):
        if artifacts.TMP_SUFFIX in self.name:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(self, data)
    monkeypatch.setattr(Path, "write_bytes", full)
    with pytest.raises(artifacts.DiskFull, match=f"^disk full writing {path}: free some space"):
        artifacts.write_text(path, "new")
    assert path.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == [path.name]


def test_numpys_short_write_on_a_full_disk_is_a_full_disk(tmp_path, monkeypatch):
    def short(*args, **kwargs):
        raise OSError("3527216 requested and 1955808 written")
    monkeypatch.setattr(np, "save", short)
    monkeypatch.setattr(artifacts.shutil, "disk_usage", lambda folder: shutil_usage(0))
    with pytest.raises(artifacts.DiskFull, match="disk full writing .*x.npy"):
        artifacts.save_array(tmp_path / "x.npy", np.zeros(3))
    monkeypatch.setattr(artifacts.shutil, "disk_usage", lambda folder: shutil_usage(10 ** 9))
    with pytest.raises(OSError, match="requested and"):     # room enough: not a full disk
        artifacts.save_array(tmp_path / "x.npy", np.zeros(3))


def shutil_usage(free: int):
    import shutil
    return shutil._ntuple_diskusage(10 ** 10, 10 ** 10 - free, free)


def test_a_run_on_a_full_disk_says_so_in_one_line_and_keeps_what_was_there(
        tmp_path, tiny_csvs, monkeypatch, capsys):
    from pipeline import cli
    args = [f"--set=data.train={tiny_csvs[0]}", f"--set=data.test={tiny_csvs[1]}",
            f"--set=outputs={tmp_path / 'out'}", "--set=train.hidden=8", "--set=train.epochs=1",
            "--quiet"]
    assert cli.main(args) == 0
    before = {p: p.read_bytes() for p in (tmp_path / "out").rglob("*.npy")}
    real = np.save

    def full(file, arr, *a, **k):
        if "train_x" in str(getattr(file, "name", "")):
            raise OSError("3527216 requested and 1955808 written")
        return real(file, arr, *a, **k)
    monkeypatch.setattr(np, "save", full)
    monkeypatch.setattr(artifacts.shutil, "disk_usage", lambda folder: shutil_usage(0))
    assert cli.main([*args, "--set=preprocess.val_fraction=0.2"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: disk full writing ") and "train_x.npy" in err
    assert err.count("\n") == 1
    assert {p: p.read_bytes() for p in (tmp_path / "out").rglob("*.npy")} == before


def test_a_cache_that_cannot_store_is_skipped_and_the_run_succeeds(tmp_path, tiny_csvs,
                                                                   monkeypatch, caplog):
    from helpers import make_params

    from pipeline.engine import cache, runner
    from pipeline.steps.graph import STEPS

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(cache, "store", full)
    params = make_params(tmp_path, *tiny_csvs, "train.hidden=8", "train.epochs=1")
    with caplog.at_level("WARNING"):
        ran = runner.run(params, [s for s in STEPS if s.stage != "report"])
    assert "train" in ran and "entry not stored (No space left on device)" in caplog.text
    assert (tmp_path / "outputs" / "submission.csv").exists()

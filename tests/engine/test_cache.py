"""The run cache touches only what it wrote: an outputs folder may be a home folder."""
import hashlib
import os
from pathlib import Path

import pytest
from helpers import make_params

from pipeline import artifacts
from pipeline.commands import runs
from pipeline.engine import cache, runner
from pipeline.engine.journal import Journal
from pipeline.errors import PipelineError
from pipeline.steps.graph import STEPS

UNTIL_SUBMIT = [s for s in STEPS if s.stage != "report"]


def key_of(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def store_one(outputs: Path, text: str, max_mb: float = 100) -> Path:
    """Store an entry holding one file of 1000 bytes; returns the entry's folder."""
    made = outputs / "made" / "model.npz"
    made.parent.mkdir(parents=True, exist_ok=True)
    made.write_bytes(text.encode().ljust(1000, b"."))
    cache.store(outputs, "train", key_of(text), {"model": made}, max_mb)
    return cache.entry_path(outputs, "train", key_of(text))


def foreign(root: Path) -> dict[str, bytes]:
    """Another program's files, as a home folder's ~/.cache holds them."""
    files = {"pip/wheels/a.whl": b"w" * 5000, "torch/checkpoints/m.pt": b"t" * 5000,
             "train/notes.txt": b"mine", f"train/{key_of('x')}/weights.bin": b"b" * 5000,
             "manifest.json": b"{}"}
    for name, data in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    return files


def still_there(root: Path, files: dict[str, bytes]) -> bool:
    return all((root / name).read_bytes() == data for name, data in files.items())


def test_the_cache_folder_is_not_dot_cache(tmp_path):
    entry = store_one(tmp_path, "a")
    assert entry.is_dir() and not (tmp_path / ".cache").exists()
    assert cache.folder(tmp_path).name not in (".cache", "cache")


@pytest.mark.parametrize("inside", [".cache", cache.FOLDER])
def test_eviction_and_clear_leave_other_programs_files(tmp_path, inside):
    # Even in a folder of the cache's own name, what it did not write stays.
    files = foreign(tmp_path / inside)
    entries = [store_one(tmp_path, "one"), store_one(tmp_path, "two")]
    assert cache.entries(tmp_path) == entries
    store_one(tmp_path, "three", max_mb=0.0015)         # room for one entry of 1000 bytes
    assert [e.name for e in cache.entries(tmp_path)] == [key_of("three")]
    assert still_there(tmp_path / inside, files)
    assert cache.clear(tmp_path)[0] == 1
    assert still_there(tmp_path / inside, files) and cache.entries(tmp_path) == []


def test_clear_removes_the_folders_it_emptied(tmp_path):
    held = cache.size(store_one(tmp_path, "one"))
    assert cache.clear(tmp_path) == (1, held)
    assert not cache.folder(tmp_path).exists()


def test_an_entry_without_its_own_manifest_is_not_ours(tmp_path):
    entry = store_one(tmp_path, "one")
    other = entry.with_name(key_of("other"))
    other.mkdir()
    (other / cache.MANIFEST).write_text('{"step": "train", "key": "%s"}' % key_of("one"))
    (other / "data").write_bytes(b"d" * 5000)
    assert cache.entries(tmp_path) == [entry]
    cache.clear(tmp_path)
    assert (other / "data").exists() and not entry.exists()


@pytest.mark.parametrize("link", ["cache folder", "step folder", "entry", "file"])
def test_links_are_never_followed(tmp_path, link):
    outputs, elsewhere = tmp_path / "outputs", tmp_path / "elsewhere"
    outputs.mkdir()
    # Elsewhere: what a cache entry looks like, but not reached by a real path.
    key = key_of("far")
    target = {"cache folder": elsewhere, "step folder": elsewhere / "train",
              "entry": elsewhere / "train" / key, "file": None}[link]
    far = elsewhere / "train" / key
    far.mkdir(parents=True)
    (far / cache.MANIFEST).write_text('{"step": "train", "key": "%s", "files": {}}' % key)
    (far / "model.npz").write_bytes(b"m" * 5000)
    if link == "file":
        entry = store_one(outputs, "near")
        (entry / "model.npz").unlink()
        (entry / "model.npz").symlink_to(far / "model.npz")
    else:
        real = cache.entry_path(outputs, "train", key)
        place = {"cache folder": cache.folder(outputs), "step folder": real.parent,
                 "entry": real}[link]
        place.parent.mkdir(parents=True, exist_ok=True)
        place.symlink_to(target, target_is_directory=True)
    store_one(outputs, "new", max_mb=0.000001)              # evicts everything it owns
    cache.clear(outputs)
    assert (far / "model.npz").read_bytes() == b"m" * 5000


def test_leftover_temporaries_of_other_programs_stay(tmp_path):
    (tmp_path / ".notes.tmp").write_text("another tool's")
    (tmp_path / (".model.npz.abc12345" + artifacts.TMP_SUFFIX)).write_text("ours")
    artifacts.remove_temporaries(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".notes.tmp"]


def test_a_run_in_a_home_folder_with_a_cache_deletes_nothing_of_it(tmp_path, tiny_csvs,
                                                                    capsys):
    home = tmp_path / "home"
    files = foreign(home / ".cache")
    params = make_params(tmp_path, *tiny_csvs, "train.hidden=8", "train.epochs=1",
                         f"outputs={home}", "cache.max_mb=0.000001")
    # A folder holding other files is refused as outputs before anything is written...
    with pytest.raises(PipelineError, match="expected an outputs folder this pipeline made"):
        runner.run(params, UNTIL_SUBMIT, journal=Journal("params.yaml", {}))
    assert still_there(home / ".cache", files)
    # ...and even one marked as the pipeline's (say, by hand) keeps its other caches.
    (home / runner.RECORDS).mkdir()
    runner.run(params, UNTIL_SUBMIT, journal=Journal("params.yaml", {}))
    params["train.epochs"] = 2
    runner.run(params, UNTIL_SUBMIT, journal=Journal("params.yaml", {}))
    assert still_there(home / ".cache", files)
    runs.cache_command(params, ["clear"])
    assert still_there(home / ".cache", files)
    assert os.listdir(home / ".cache") != []

"""The Kaggle round trip through the `kaggle` command: download the competition's
files, upload a submission. Never a network call of its own: without the command
(or its credentials) it says which command to run instead.
"""
from __future__ import annotations

import logging
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Callable

from pipeline import artifacts
from pipeline.errors import PipelineError
from pipeline.steps import ingest, submit

log = logging.getLogger(__name__)

COMPETITION = "digit-recognizer"
TEST_ROWS = 28000              # rows of the competition's test.csv: a submission has as many
TOKEN_HELP = ("create an API token on kaggle.com (Settings > API) and save it as "
              "~/.kaggle/kaggle.json or ~/.kaggle/access_token")


def command() -> str | None:
    """The `kaggle` executable on PATH, or None."""
    return shutil.which("kaggle")


def has_credentials(env: dict | None = None, home: Path | None = None) -> bool:
    """Whether the places the Kaggle CLI reads its token from hold one: the
    KAGGLE_USERNAME/KAGGLE_KEY or KAGGLE_API_TOKEN variables, kaggle.json in
    $KAGGLE_CONFIG_DIR or ~/.kaggle (or ~/.config/kaggle), or ~/.kaggle/access_token."""
    env = os.environ if env is None else env
    if env.get("KAGGLE_API_TOKEN") or (env.get("KAGGLE_USERNAME") and env.get("KAGGLE_KEY")):
        return True
    home = Path.home() if home is None else home
    folders = [Path(env["KAGGLE_CONFIG_DIR"])] if env.get("KAGGLE_CONFIG_DIR") else []
    folders += [home / ".kaggle", home / ".config" / "kaggle"]
    names = ("kaggle.json", "access_token", "access_token.txt")
    return any((folder / name).is_file() for folder in folders for name in names)


def shell(args: list[str]) -> str:
    """`args` as one line to paste into a POSIX shell."""
    return " ".join(shlex.quote(a) for a in args)


def download_command(folder: Path) -> list[str]:
    """The CLI call that saves the competition's zip into `folder`."""
    return ["kaggle", "competitions", "download", "-c", COMPETITION, "-p", str(folder)]


def submit_command(path: Path, message: str) -> list[str]:
    """The CLI call that uploads the submission at `path` with `message`."""
    return ["kaggle", "competitions", "submit", "-c", COMPETITION, "-f", str(path),
            "-m", message]


def _run(args: list[str], what: str) -> None:
    """Run the kaggle CLI with its output shown; a failure becomes a PipelineError."""
    try:
        done = subprocess.run([command() or args[0], *args[1:]], stdin=subprocess.DEVNULL)
    except OSError as exc:
        raise PipelineError(f"cannot run `{shell(args)}` ({exc.strerror})") from None
    if done.returncode != 0:
        raise PipelineError(
            f"`{shell(args)}` failed (exit status {done.returncode}) while {what}; its "
            "message is above. A 403 means the competition's rules are not yet accepted "
            f"on kaggle.com/competitions/{COMPETITION}; a 401, that the token is wrong")


def extract(archive: Path, train_out: Path, test_out: Path) -> None:
    """Copy train.csv and test.csv out of the competition's zip, each atomically;
    a file already at its destination is left alone."""
    try:
        with zipfile.ZipFile(archive) as zf:
            names = {Path(n).name: n for n in zf.namelist()}
            for member, dest in (("train.csv", train_out), ("test.csv", test_out)):
                if member not in names:
                    raise PipelineError(f"{archive}: expected {member} inside, found "
                                        f"{', '.join(sorted(names)) or 'nothing'}")
                if dest.exists():
                    continue
                with artifacts.atomic_path(dest) as tmp, zf.open(names[member]) as src, \
                        open(tmp, "wb") as dst:
                    shutil.copyfileobj(src, dst, 1 << 20)
    except zipfile.BadZipFile:
        raise PipelineError(f"{archive}: not a zip file (expected the competition's "
                            f"{COMPETITION}.zip)") from None


def download(train_out: Path, test_out: Path) -> None:
    """Download the competition's files with the kaggle CLI and extract train.csv
    and test.csv to the given paths."""
    train_out, test_out = Path(train_out), Path(test_out)
    train_out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=train_out.parent, prefix=".kaggle-") as tmp:
        _run(download_command(Path(tmp)), "downloading the competition's files")
        archives = sorted(Path(tmp).glob("*.zip"))
        if archives:
            extract(archives[0], train_out, test_out)
        else:            # older CLIs saved the CSVs themselves
            for name, dest in (("train.csv", train_out), ("test.csv", test_out)):
                src = Path(tmp) / name
                if not src.exists():
                    raise PipelineError(f"the download in {tmp} holds no {name} and no zip")
                if not dest.exists():
                    os.replace(src, dest)
    log.info("downloaded %s and %s from Kaggle", train_out, test_out)


def download_hint(train: Path) -> str:
    """How to get the competition's files into train's folder, given what is
    installed: the kaggle command, its token, or neither."""
    folder = Path(train).parent
    get = shell(download_command(folder))         # the zip it saves is read as it is
    if command() is None:
        return (f"to get the competition's files: `pip install kaggle`, {TOKEN_HELP}, accept "
                f"the rules on kaggle.com/competitions/{COMPETITION}, then run `python run.py` "
                f"in a terminal to be offered the download (or run: {get})")
    if not has_credentials():
        return (f"the kaggle command finds no API token: {TOKEN_HELP}, then run `python "
                f"run.py` in a terminal to be offered the download (or run: {get})")
    return (f"to use the competition's files, run `python run.py` in a terminal to be "
            f"offered the download, or run: {get}")


def offer_download(train: Path, test: Path, ask: Callable[[str], str] | None = None,
                   interactive: bool | None = None) -> bool:
    """When the training file is missing and the kaggle command has a token, ask
    whether to download the competition's files, and do it. Returns whether they
    were downloaded. Only a terminal on stdin is asked, so CI and scripts never
    block; `interactive` overrides that check and `ask` replaces input()."""
    train, test = Path(train), Path(test)
    if ingest.find_csv(train) or command() is None or not has_credentials():
        return False
    if not (sys.stdin.isatty() if interactive is None else interactive):
        return False
    answer = (ask or input)(f"{train} is missing. Download the competition's files from "
                            f"Kaggle into {train.parent}/ now? [y/N] ")
    if answer.strip().lower() not in ("y", "yes"):
        return False
    download(train, test)
    return True


def upload(path: Path, message: str) -> None:
    """Check `path` as a complete submission, then upload it with the kaggle CLI;
    without the command, raise with the exact command to run."""
    path = Path(path)
    if not path.exists():
        raise PipelineError(f"{path} is missing: run `python run.py` first")
    rows = len(path.read_text(encoding="utf-8").splitlines()) - 1
    if rows != TEST_ROWS:
        raise PipelineError(
            f"{path}: expected {TEST_ROWS} rows, one per image of the competition's "
            f"test.csv, found {rows}: Kaggle scores only a prediction for its own test.csv "
            "(not the bundled sample; see README.md, Getting the data)")
    submit.check_submission(path, TEST_ROWS)
    args = submit_command(path, message)
    if command() is None:
        raise PipelineError(f"the kaggle command is not installed (`pip install kaggle`, "
                            f"then {TOKEN_HELP}); to upload, run: {shell(args)}")
    log.info("uploading %s to Kaggle: %s", path, shell(args))
    _run(args, "uploading the submission")

"""The Kaggle round trip through the `kaggle` command: download the competition's
files, upload a submission. Never a network call of its own: without the command
(or its credentials) it says which command to run instead.

Written against the kaggle package 2.x (tested with 2.2.5): the competition is given as
a positional argument, and credentials are looked for where that CLI looks (see
`credentials`). The CLI's own messages are read to say in one line what went wrong:
no credentials, no network, credentials refused (401), access refused (403), or the
competition's rules not accepted.
"""
from __future__ import annotations

import json
import logging
import os
import re
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
RULES = f"https://www.kaggle.com/competitions/{COMPETITION}/rules"
TEST_ROWS = 28000              # rows of the competition's test.csv: a submission has as many
TOKEN_HELP = ("run `kaggle auth login`, or save an API token from kaggle.com/settings/api as "
              "~/.kaggle/access_token")
# What the CLI prints when it cannot reach Kaggle (requests' and urllib3's words).
NO_NETWORK = re.compile(r"NameResolutionError|Failed to resolve|Name or service not known|"
                        r"Temporary failure in name resolution|Max retries exceeded|"
                        r"Connection refused|Network is unreachable|ProxyError|timed out",
                        re.IGNORECASE)


def command() -> str | None:
    """The `kaggle` executable on PATH, or None."""
    return shutil.which("kaggle")


def _text(path: Path) -> str:
    """A file's text, stripped; "" when it cannot be read."""
    try:
        return path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError):
        return ""


def config_dir(env: dict, home: Path) -> Path:
    """Where the CLI reads kaggle.json: $KAGGLE_CONFIG_DIR, else ~/.kaggle, else (on
    Linux, when ~/.kaggle does not exist) $XDG_CONFIG_HOME/kaggle or ~/.config/kaggle."""
    if env.get("KAGGLE_CONFIG_DIR"):
        return Path(env["KAGGLE_CONFIG_DIR"])
    folder = home / ".kaggle"
    if sys.platform.startswith("linux") and not folder.exists():
        return Path(env.get("XDG_CONFIG_HOME") or home / ".config") / "kaggle"
    return folder


def _json_object(path: Path) -> dict | None:
    """The JSON object in the file at `path`; None when missing, unreadable or not one."""
    try:
        found = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    return found if isinstance(found, dict) else None


def credentials(env: dict | None = None, home: Path | None = None) -> tuple[str | None, str]:
    """Where the kaggle CLI will find credentials, looking where it looks, in its order:
    a Kaggle notebook's token; KAGGLE_API_TOKEN (a token, or a file holding one);
    ~/.kaggle/access_token (or .txt); a username and key, from the KAGGLE_USERNAME and
    KAGGLE_KEY variables or else kaggle.json (see `config_dir`); ~/.kaggle/credentials.json,
    saved by `kaggle auth login`. Returns (that place, "") or, when there is none,
    (None, one line saying what is missing and how to fix it)."""
    env = os.environ if env is None else env
    home = Path.home() if home is None else home
    notebook = env.get("KAGGLE_API_V1_TOKEN")
    if (env.get("KAGGLE_KERNEL_RUN_TYPE") and env.get("KAGGLE_DATA_PROXY_URL") and notebook
            and _text(Path(notebook))):
        return "the Kaggle notebook's token", ""
    token = env.get("KAGGLE_API_TOKEN")
    if token and (_text(Path(token)) or not Path(token).exists()):
        return "KAGGLE_API_TOKEN", ""
    for name in ("access_token", "access_token.txt"):
        if _text(home / ".kaggle" / name):
            return str(home / ".kaggle" / name), ""
    legacy = config_dir(env, home) / "kaggle.json"
    saved = _json_object(legacy)
    pair = {k: env.get(f"KAGGLE_{k.upper()}") or (saved or {}).get(k) for k in ("username", "key")}
    if all(pair.values()):
        return str(legacy) if saved else "KAGGLE_USERNAME and KAGGLE_KEY", ""
    problems = []
    if legacy.exists() and saved is None:
        problems.append(f"{legacy} is not a JSON object")
    elif any(pair.values()):
        where = legacy if legacy.exists() else "KAGGLE_USERNAME and KAGGLE_KEY"
        problems.append(f"{where} has no {'key' if pair['username'] else 'username'}")
    oauth = home / ".kaggle" / "credentials.json"
    if (_json_object(oauth) or {}).get("refresh_token"):
        return f"{oauth} (kaggle auth login)", ""
    if oauth.exists():
        problems.append(f"{oauth} holds no login")
    problem = problems[0] if problems else "in none of the places the kaggle command reads"
    return None, f"no Kaggle credentials ({problem}): {TOKEN_HELP}"


def has_credentials(env: dict | None = None, home: Path | None = None) -> bool:
    """Whether the kaggle CLI will find credentials (`credentials`)."""
    return credentials(env, home)[0] is not None


def shell(args: list[str]) -> str:
    """`args` as one line to paste into a POSIX shell."""
    return " ".join(shlex.quote(a) for a in args)


def download_command(folder: Path) -> list[str]:
    """The CLI call that saves the competition's zip into `folder`."""
    return ["kaggle", "competitions", "download", COMPETITION, "-p", str(folder)]


def submit_command(path: Path, message: str) -> list[str]:
    """The CLI call that uploads the submission at `path` with `message`."""
    return ["kaggle", "competitions", "submit", COMPETITION, "-f", str(path), "-m", message]


def failure(output: str, status: int, args: list[str], what: str) -> str:
    """One line saying why the kaggle CLI failed, read from what it printed (`output`),
    and what to do about it."""
    source, missing = credentials()
    again = f"then run again (or run it yourself: {shell(args)})"
    if NO_NETWORK.search(output):
        return (f"cannot reach Kaggle while {what} (no network, or a proxy in the way): "
                f"check the connection, {again}")
    if "Authentication required" in output or re.search(r"\b401\b|Unauthori[sz]ed", output):
        # The CLI says "Authentication required" both when it finds no credentials
        # and when Kaggle refuses them (401).
        if source is None:
            return missing
        return (f"Kaggle refused the credentials from {source} (401: wrong, expired or "
                f"revoked) while {what}: {TOKEN_HELP}, {again}")
    if re.search(r"must accept .*rules", output, re.IGNORECASE):
        return (f"Kaggle refused (403): the competition's rules are not accepted for this "
                f"account: accept them on {RULES}, {again}")
    if re.search(r"\b403\b|Forbidden|don't have access", output):
        return (f"Kaggle refused access (403) while {what}: accept the competition's rules on "
                f"{RULES} with the account of {source or 'your credentials'}; if they are, "
                f"the account may need phone verification (kaggle.com/settings), {again}")
    said = " / ".join(output.strip().splitlines()[-3:]) or "no message"
    return f"`{shell(args)}` failed (exit status {status}) while {what}: {said}"


def _run(args: list[str], what: str) -> None:
    """Run the kaggle CLI; show what it printed on stdout when it succeeds, and turn a
    failure into a PipelineError of one line (`failure`)."""
    try:
        done = subprocess.run([command() or args[0], *args[1:]], stdin=subprocess.DEVNULL,
                              capture_output=True, text=True, errors="replace")
    except OSError as exc:
        raise PipelineError(f"cannot run `{shell(args)}` ({exc.strerror})") from None
    if done.returncode != 0:
        raise PipelineError(failure(done.stdout + "\n" + done.stderr, done.returncode, args,
                                    what))
    for line in done.stdout.splitlines():
        if line.strip():
            log.info("kaggle: %s", line.strip())


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
        log.info("downloading the competition's files: %s", shell(download_command(Path(tmp))))
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
                f"the rules on {RULES}, then run `python run.py` in a terminal to be offered "
                f"the download (or run: {get})")
    source, missing = credentials()
    if source is None:
        return (f"{missing}, then run `python run.py` in a terminal to be offered the "
                f"download (or run: {get})")
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
    source, missing = credentials()
    if source is None:
        raise PipelineError(f"not uploading: {missing}; then run again, or run: {shell(args)}")
    log.info("uploading %s to Kaggle with the credentials from %s: %s", path, source,
             shell(args))
    _run(args, "uploading the submission")

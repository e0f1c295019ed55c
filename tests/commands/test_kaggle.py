"""The Kaggle round trip against a stand-in `kaggle` executable that records its arguments,
and against the kaggle package's own CLI, which never reaches Kaggle here."""
import contextlib
import http.server
import importlib.util
import json
import os
import select
import shutil
import socket
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from helpers import ROOT, run_cli, sample_rows, write_lines

from pipeline import artifacts, cli
from pipeline.commands import kaggle
from pipeline.config import params as params_mod
from pipeline.engine import runner
from pipeline.errors import PipelineError
from pipeline.report import runs_table
from pipeline.steps import submit

STAND_IN = """#!{python}
import json, os, sys, zipfile
with open(os.environ["KAGGLE_LOG"], "a") as log:
    log.write(json.dumps(sys.argv[1:]) + "\\n")
args = sys.argv[1:]
if os.environ.get("KAGGLE_FAIL"):
    print("401 - Unauthorized", file=sys.stderr)
    sys.exit(1)
if args[:2] == ["competitions", "download"]:
    folder = args[args.index("-p") + 1]
    with zipfile.ZipFile(os.path.join(folder, "digit-recognizer.zip"), "w") as zf:
        for name in ("train.csv", "test.csv", "sample_submission.csv"):
            zf.write(os.path.join(os.environ["KAGGLE_FILES"], name), name)
"""


@pytest.fixture
def kaggle_env(tmp_path, monkeypatch):
    """A PATH with only the stand-in kaggle, a HOME with a token, and the call log.
    Returns (env for subprocesses, log path, files the download serves)."""
    bin_dir, home, files = tmp_path / "bin", tmp_path / "home", tmp_path / "kaggle-files"
    for d in (bin_dir, home / ".kaggle", files):
        d.mkdir(parents=True)
    exe = bin_dir / "kaggle"
    exe.write_text(STAND_IN.format(python=sys.executable))
    exe.chmod(0o755)
    (home / ".kaggle" / "kaggle.json").write_text('{"username": "u", "key": "k"}')
    (files / "train.csv").write_text("\n".join(sample_rows("train.csv.gz", 300)) + "\n")
    (files / "test.csv").write_text("\n".join(sample_rows("test.csv.gz", 40)) + "\n")
    (files / "sample_submission.csv").write_text("ImageId,Label\n1,0\n")
    log = tmp_path / "kaggle-calls.jsonl"
    env = {"PATH": str(bin_dir), "HOME": str(home), "KAGGLE_LOG": str(log),
           "KAGGLE_FILES": str(files), "KAGGLE_CONFIG_DIR": "", "KAGGLE_USERNAME": "",
           "KAGGLE_KEY": "", "KAGGLE_API_TOKEN": ""}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return env, log, files


def calls(log: Path) -> list[list[str]]:
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def labels_for_kaggle(tmp_path: Path, n=kaggle.TEST_ROWS) -> list[str]:
    """A tiny run up to predict in tmp_path/out, whose test labels are then replaced by
    what predict leaves for a full test set, one label per image, and vouched for by its
    record (else the runner would predict again first). Returns that run's --set args."""
    train = write_lines(tmp_path / "csv" / "train.csv", sample_rows("train.csv.gz", 200))
    test = write_lines(tmp_path / "csv" / "test.csv", sample_rows("test.csv.gz", 30))
    sets = [f"data.train={train}", f"data.test={test}", "data.sample=null",
            f"outputs={tmp_path / 'out'}", "train.epochs=1"]
    params = params_mod.load(ROOT / "params.yaml", sets)
    runner.run(params, runner.select(["predict"], None))
    labels = tmp_path / "out" / "predict" / "test_labels.npy"
    np.save(labels, np.arange(n, dtype=np.int64) % 10)
    record = runner.record_path(params, next(s for s in runner.STEPS if s.name == "predict"))
    entry = json.loads(record.read_text())
    entry["outs"]["test_labels"].update(artifacts.file_state(labels))
    record.write_text(json.dumps(entry))
    return [f"--set={s}" for s in sets]


def test_submit_checks_then_uploads_with_the_message(tmp_path, kaggle_env):
    env, log, _ = kaggle_env
    sets = labels_for_kaggle(tmp_path)
    done = run_cli(*sets, "submit", "--kaggle", "first try: 98%", env=env)
    assert done.returncode == 0, done.stderr
    submission = tmp_path / "out" / "submission.csv"
    assert calls(log) == [["competitions", "submit", "digit-recognizer",
                           "-f", str(submission), "-m", "first try: 98%"]]
    submit.check_submission(submission, kaggle.TEST_ROWS)


def test_a_sample_sized_submission_is_refused_before_any_upload(tmp_path, kaggle_env):
    env, log, _ = kaggle_env
    sets = labels_for_kaggle(tmp_path, n=1000)
    done = run_cli(*sets, "submit", "--kaggle", "m", env=env)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert "submission.csv: expected 28000 rows" in done.stderr and "found 1000" in done.stderr
    assert calls(log) == []


def test_a_malformed_submission_is_refused(tmp_path, kaggle_env):
    path = tmp_path / "submission.csv"
    path.write_text(submit.submission_text(np.zeros(kaggle.TEST_ROWS, np.int64))
                    .replace("\n17,0\n", "\n17,x\n"))
    with pytest.raises(PipelineError, match=r"line 18: expected '17,<digit>'"):
        kaggle.upload(path, "m")
    assert calls(kaggle_env[1]) == []


def test_without_the_kaggle_command_it_prints_the_command(tmp_path, kaggle_env):
    env, _, _ = kaggle_env
    sets = labels_for_kaggle(tmp_path)
    done = run_cli(*sets, "submit", "--kaggle", "it's mine",
                   env={**env, "PATH": str(tmp_path / "nothing-here")})
    assert done.returncode == 1 and "Traceback" not in done.stderr
    submission = tmp_path / "out" / "submission.csv"
    assert (f"kaggle competitions submit digit-recognizer -f {submission} "
            "-m 'it'\"'\"'s mine'") in done.stderr
    assert submission.exists()                     # the submission itself is kept


def test_a_failing_upload_says_so(tmp_path, kaggle_env):
    env, log, _ = kaggle_env
    sets = labels_for_kaggle(tmp_path)
    done = run_cli(*sets, "submit", "--kaggle", "m", env={**env, "KAGGLE_FAIL": "1"})
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert done.stderr.startswith(
        f"error: Kaggle refused the credentials from {env['HOME']}/.kaggle/kaggle.json (401: "
        "wrong, expired or revoked) while uploading the submission: run `kaggle auth login`")
    assert len(calls(log)) == 1


KEY = '{"username": "u", "key": "k"}'
LINUX = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="XDG folders: Linux only")
LOGIN = '{"refresh_token": "r", "access_token": "", "username": "u"}'     # kaggle auth login


@pytest.mark.parametrize("files, env, found", [
    ({}, {}, "(in none of the places the kaggle command reads)"),
    ({}, {"KAGGLE_USERNAME": "u", "KAGGLE_KEY": "k"}, "KAGGLE_USERNAME and KAGGLE_KEY"),
    ({}, {"KAGGLE_USERNAME": "u"}, "(KAGGLE_USERNAME and KAGGLE_KEY has no key)"),
    ({}, {"KAGGLE_API_TOKEN": "t"}, "KAGGLE_API_TOKEN"),
    ({"token": "t"}, {"KAGGLE_API_TOKEN": "{home}/token"}, "KAGGLE_API_TOKEN"),
    ({"token": ""}, {"KAGGLE_API_TOKEN": "{home}/token"}, "(in none of"),
    ({".kaggle/kaggle.json": KEY}, {}, "{home}/.kaggle/kaggle.json"),
    ({".kaggle/kaggle.json": '{"username": "u"}'}, {}, "({home}/.kaggle/kaggle.json has no key)"),
    ({".kaggle/kaggle.json": '{"username": "u"}'}, {"KAGGLE_KEY": "k"},
     "{home}/.kaggle/kaggle.json"),
    ({".kaggle/kaggle.json": "{not json"}, {}, "({home}/.kaggle/kaggle.json is not a JSON object)"),
    ({".kaggle/access_token": "t\n"}, {}, "{home}/.kaggle/access_token"),
    ({".kaggle/access_token.txt": "t"}, {}, "{home}/.kaggle/access_token.txt"),
    ({".kaggle/access_token": "\n"}, {}, "(in none of"),
    ({".kaggle/credentials.json": LOGIN}, {},
     "{home}/.kaggle/credentials.json (kaggle auth login)"),
    ({".kaggle/credentials.json": "{}"}, {}, "({home}/.kaggle/credentials.json holds no login)"),
    # Without ~/.kaggle, on Linux: the XDG folder.
    pytest.param({".config/kaggle/kaggle.json": KEY}, {}, "{home}/.config/kaggle/kaggle.json",
                 marks=LINUX),
    pytest.param({"xdg/kaggle/kaggle.json": KEY}, {"XDG_CONFIG_HOME": "{home}/xdg"},
                 "{home}/xdg/kaggle/kaggle.json", marks=LINUX),
    ({"elsewhere/kaggle.json": KEY}, {"KAGGLE_CONFIG_DIR": "{home}/elsewhere"},
     "{home}/elsewhere/kaggle.json"),
    ({"notebook-token": "t"}, {"KAGGLE_KERNEL_RUN_TYPE": "Interactive", "KAGGLE_API_V1_TOKEN":
                               "{home}/notebook-token", "KAGGLE_DATA_PROXY_URL": "http://p"},
     "the Kaggle notebook's token"),
])
def test_credentials_are_found_where_the_cli_looks(tmp_path, files, env, found):
    """As kaggle 2.2.5 looks (kagglesdk's kaggle_env.py and kaggle_creds.py, and
    KaggleApi's config_dir): a place that holds no credentials is named."""
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    env = {k: v.format(home=tmp_path) for k, v in env.items()}
    source, missing = kaggle.credentials(env, home=tmp_path)
    if found.startswith("("):
        assert source is None and missing.startswith(
            "no Kaggle credentials " + found.format(home=tmp_path))
        assert missing.endswith(": run `kaggle auth login`, or save an API token from "
                                "kaggle.com/settings/api as ~/.kaggle/access_token")
    else:
        assert (source, missing) == (found.format(home=tmp_path), "")
    assert kaggle.has_credentials(env, home=tmp_path) is (source is not None)


def test_accepted_offer_downloads_and_extracts_train_and_test(tmp_path, kaggle_env):
    _, log, files = kaggle_env
    train, test = tmp_path / "data" / "train.csv", tmp_path / "data" / "test.csv"
    asked = []
    assert kaggle.offer_download(train, test, ask=lambda q: asked.append(q) or "y",
                                 interactive=True)
    assert "Download the competition's files" in asked[0]
    assert train.read_bytes() == (files / "train.csv").read_bytes()
    assert test.read_bytes() == (files / "test.csv").read_bytes()
    assert calls(log)[0][:4] == ["competitions", "download", "digit-recognizer", "-p"]
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == ["test.csv", "train.csv"]


def test_declined_or_unanswerable_offer_downloads_nothing(tmp_path, kaggle_env):
    _, log, _ = kaggle_env
    train, test = tmp_path / "data" / "train.csv", tmp_path / "data" / "test.csv"
    assert not kaggle.offer_download(train, test, ask=lambda q: "n", interactive=True)

    def never(q):
        raise AssertionError("asked without a terminal")
    assert not kaggle.offer_download(train, test, ask=never, interactive=False)
    assert calls(log) == [] and not train.exists()


def test_hint_says_how_for_each_situation(tmp_path, kaggle_env, monkeypatch):
    train = tmp_path / "data" / "train.csv"
    hint = kaggle.download_hint(train)
    assert f"kaggle competitions download digit-recognizer -p {train.parent}" in hint
    assert "offered the download" in hint
    (tmp_path / "home" / ".kaggle" / "kaggle.json").unlink()
    assert kaggle.download_hint(train).startswith("no Kaggle credentials (in none of the places")
    monkeypatch.setenv("PATH", str(tmp_path / "nothing-here"))
    assert "pip install kaggle" in kaggle.download_hint(train)


def test_without_stdin_the_cli_never_asks_and_prints_the_command(tmp_path, kaggle_env):
    env, log, _ = kaggle_env
    (tmp_path / "data").mkdir()
    done = run_cli(f"--set=data.train={tmp_path / 'data' / 'train.csv'}",
                   f"--set=data.test={tmp_path / 'data' / 'test.csv'}",
                   f"--set=outputs={tmp_path / 'out'}", "ingest", env=env, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "using the bundled sample" in done.stdout
    assert f"kaggle competitions download digit-recognizer -p {tmp_path / 'data'}" \
        in done.stdout
    assert calls(log) == []
    again = run_cli(f"--set=data.train={tmp_path / 'data' / 'train.csv'}",
                    f"--set=data.test={tmp_path / 'data' / 'test.csv'}",
                    f"--set=outputs={tmp_path / 'out'}", "ingest", env=env, timeout=60)
    assert again.returncode == 0, again.stderr
    assert "using the bundled sample" in again.stdout     # still the sample's results
    assert "kaggle competitions download" not in again.stdout   # the long hint once


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="pseudo-terminals as on Linux")
def test_on_a_terminal_the_cli_offers_the_download_and_uses_it(tmp_path, kaggle_env):
    import pty
    env, log, _ = kaggle_env
    data = tmp_path / "data"
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "run.py"), f"--set=data.train={data / 'train.csv'}",
         f"--set=data.test={data / 'test.csv'}", f"--set=outputs={tmp_path / 'out'}",
         "ingest"], cwd=ROOT, stdin=slave, stdout=slave, stderr=slave,
        env={**os.environ, **env})
    os.close(slave)
    seen = b""
    while b"[y/N]" not in seen:
        ready, _, _ = select.select([master], [], [], 60)
        assert ready, seen
        seen += os.read(master, 4096)
    os.write(master, b"y\n")
    try:
        while True:
            ready, _, _ = select.select([master], [], [], 60)
            assert ready, seen
            chunk = os.read(master, 4096)
            if not chunk:
                break
            seen += chunk
    except OSError:
        pass
    assert proc.wait(60) == 0, seen
    os.close(master)
    text = seen.decode()
    assert "bundled sample" not in text and "300 labelled images" in text
    assert (data / "train.csv").exists() and calls(log)[0][1] == "download"


def test_a_submission_behind_changed_params_is_not_uploaded(tmp_path, kaggle_env, tiny_csvs):
    env, log, _ = kaggle_env
    sets = [f"--set=data.train={tiny_csvs[0]}", f"--set=data.test={tiny_csvs[1]}",
            f"--set=outputs={tmp_path / 'out'}", "--set=train.epochs=1"]
    assert run_cli(*sets, env=env).returncode == 0
    # `submit --kaggle` uploads the last run's submission, not another one's; after
    # `ingest`, the upload check refuses the stale model.
    alone = run_cli(*sets, "--set=train.epochs=2", "submit", "--single", "--kaggle", "m", env=env)
    assert alone.returncode == 1 and alone.stderr.startswith(
        "error: not uploading: `submit --kaggle` uploads the submission the last run left, "
        "run 1's, and this command line asks for other params: train.epochs=2 (run 1: 1)")
    done = run_cli(*sets, "--set=train.epochs=2", "ingest", "--kaggle", "m", env=env)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert "not uploading" in done.stderr and "param train.epochs changed (1 -> 2)" in done.stderr
    assert calls(log) == []


# --- the kaggle package's own CLI (requirements-dev.txt), which never reaches Kaggle here ---

def real_kaggle() -> str:
    """The kaggle package's executable, or skip the test."""
    found = shutil.which("kaggle", path=f"{Path(sys.executable).parent}{os.pathsep}"
                                        f"{os.environ.get('PATH', '')}")
    if importlib.util.find_spec("kaggle") is None or found is None:
        pytest.skip("the kaggle package is not installed: pip install -r requirements-dev.txt")
    return found


def unused_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def offline(tmp_path, monkeypatch):
    """The real kaggle CLI first on PATH, a HOME holding a made-up kaggle.json, no KAGGLE_*
    variables, and every request sent to a proxy that is not there. Returns HOME."""
    exe = real_kaggle()
    home = tmp_path / "home"
    (home / ".kaggle").mkdir(parents=True)
    token = home / ".kaggle" / "kaggle.json"
    token.write_text('{"username": "someone", "key": "0123456789abcdef0123456789abcdef"}')
    token.chmod(0o600)
    for key in [k for k in os.environ if k.startswith("KAGGLE_") or k.lower() in (
            "http_proxy", "https_proxy", "all_proxy", "no_proxy")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("PATH", f"{Path(exe).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    nowhere = f"http://127.0.0.1:{unused_port()}"
    monkeypatch.setenv("HTTP_PROXY", nowhere)
    monkeypatch.setenv("HTTPS_PROXY", nowhere)
    return home


@contextlib.contextmanager
def kaggle_refusing(code: int, message: str):
    """A local server that answers every request as Kaggle's API answers a refusal:
    status `code`, {"code", "message"} as JSON. Yields its port and the paths asked for."""
    asked = []

    class Refuse(http.server.BaseHTTPRequestHandler):
        def answer(self):
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            asked.append(self.path)
            body = json.dumps({"code": code, "message": message}).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        do_GET = do_POST = answer

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Refuse)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server.server_address[1], asked
    finally:
        server.shutdown()
        server.server_close()


def test_real_cli_without_a_network_the_user_reads_one_line_saying_so(tmp_path, offline):
    sets = labels_for_kaggle(tmp_path)
    done = run_cli(*sets, "submit", "--kaggle", "m")
    submission = tmp_path / "out" / "submission.csv"
    assert done.returncode == 1
    assert f"with the credentials from {offline}/.kaggle/kaggle.json" in done.stdout
    assert done.stderr == (
        "error: cannot reach Kaggle while uploading the submission (no network, or a proxy in "
        "the way): check the connection, then run again (or run it yourself: kaggle "
        f"competitions submit digit-recognizer -f {submission} -m m)\n")
    data = tmp_path / "data"
    with pytest.raises(PipelineError, match=r"^cannot reach Kaggle while downloading the "
                                            r"competition's files \(no network"):
        kaggle.download(data / "train.csv", data / "test.csv")
    assert list(data.iterdir()) == []                       # no half download left behind


def test_real_cli_is_not_run_without_credentials(tmp_path, offline):
    (offline / ".kaggle" / "kaggle.json").unlink()
    sets = labels_for_kaggle(tmp_path)
    done = run_cli(*sets, "submit", "--kaggle", "m")
    assert done.returncode == 1 and "Authentication required" not in done.stdout + done.stderr
    assert done.stderr == (
        "error: not uploading: no Kaggle credentials (in none of the places the kaggle command "
        "reads): run `kaggle auth login`, or save an API token from kaggle.com/settings/api as "
        "~/.kaggle/access_token; then run again, or run: kaggle competitions submit "
        f"digit-recognizer -f {tmp_path / 'out' / 'submission.csv'} -m m\n")


@pytest.mark.parametrize("code, said, expected", [
    (401, "Unauthenticated", r"Kaggle refused the credentials from \S+/\.kaggle/kaggle\.json "
                             r"\(401: wrong, expired or revoked\) while uploading"),
    (403, "You must accept this competition's rules before you'll be able to submit.",
     r"Kaggle refused \(403\): the competition's rules are not accepted for this account: "
     r"accept them on https://www\.kaggle\.com/competitions/digit-recognizer/rules"),
    (403, "Permission denied", r"Kaggle refused access \(403\) while uploading the submission: "
                               r"accept the competition's rules .* phone verification"),
])
def test_real_cli_refusals_are_told_apart(tmp_path, offline, monkeypatch, code, said, expected):
    path = tmp_path / "submission.csv"
    path.write_text(submit.submission_text(np.zeros(kaggle.TEST_ROWS, np.int64)))
    with kaggle_refusing(code, said) as (port, asked):
        # The CLI's own switch to plain HTTP on localhost, sent through the proxy: this server.
        monkeypatch.setenv("KAGGLE_API_ENVIRONMENT", "LOCALHOST")
        monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{port}")
        with pytest.raises(PipelineError, match=expected) as caught:
            kaggle.upload(path, "m")
    assert asked and "\n" not in str(caught.value)


def test_submit_uploads_the_submission_the_last_run_left_and_logs_it(tmp_path, kaggle_env,
                                                                   tiny_csvs, monkeypatch,
                                                                   capsys):
    _, log, _ = kaggle_env
    monkeypatch.setattr(kaggle, "TEST_ROWS", 60)          # the tiny test.csv's rows
    out = tmp_path / "out"
    sets = [f"--set=data.train={tiny_csvs[0]}", f"--set=data.test={tiny_csvs[1]}",
            f"--set=outputs={out}", "--set=train.hidden=8"]
    assert cli.main([*sets, "--set=train.epochs=1"]) == 0
    assert cli.main([*sets, "--set=train.epochs=2"]) == 0
    left = {p: (out / p).read_bytes() for p in ("submission.csv", "train/model.npz")}
    capsys.readouterr()
    # params.yaml says 15 epochs: the upload is still run 2's, nothing rebuilt.
    assert cli.main([*sets, "submit", "--kaggle", "first try"]) == 0
    said = capsys.readouterr().out
    assert "restoring" not in said and "running" not in said
    assert "uploading run 2's submission (" in said and "train.epochs=2" in said
    assert {p: (out / p).read_bytes() for p in left} == left
    assert calls(log) == [["competitions", "submit", "digit-recognizer",
                           "-f", str(out / "submission.csv"), "-m", "first try"]]
    found = runs_table.runs(runs_table.read(runs_table.log_path(out)))
    assert len(found) == 2 and "uploads" not in found[0]
    [upload] = found[1]["uploads"]
    assert upload["message"] == "first try" and upload["time"]
    assert upload["submission"] == artifacts.file_hash(out / "submission.csv")
    rows = runs_table.rows(found)
    assert rows[1]["uploaded"].endswith(" first try") and rows[0]["uploaded"] is None
    assert "first try" in runs_table.format_table(rows).splitlines()[2]
    # Another setting on the command line is refused, not quietly rebuilt.
    assert cli.main([*sets, "--set=train.epochs=1", "submit", "--kaggle", "m"]) == 1
    assert "asks for other params: train.epochs=1 (run 2: 2)" in capsys.readouterr().err
    assert len(calls(log)) == 1
    # A blend is uploaded at once with --kaggle, or by submit --kaggle as the last run.
    assert cli.main(["blend", "1", "2", *sets, "--kaggle", "blend try"]) == 0
    assert cli.main([*sets, "submit", "--kaggle", "again"]) == 0
    blended = out / "blend" / "submission.csv"
    assert [c[4] for c in calls(log)[1:]] == [str(blended)] * 2
    found = runs_table.runs(runs_table.read(runs_table.log_path(out)))
    assert [u["message"] for u in found[2]["uploads"]] == ["blend try", "again"]
    assert "a blend of runs 1, 2" in capsys.readouterr().out

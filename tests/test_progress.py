"""Progress: log lines without a terminal, a tqdm bar on one, nothing with --quiet."""
import io
import logging
import os
import select
import subprocess
import sys

import pytest
from helpers import ROOT

from pipeline import progress

ROW = {"epoch": 1, "loss": 0.5, "train_accuracy": 0.8, "val_accuracy": 0.85, "seconds": 0.2,
       "lr": 0.001}


class Terminal(io.StringIO):
    def isatty(self):
        return True


@pytest.fixture
def pipeline_log():
    """The "pipeline" logger at INFO with its lines captured; restored afterwards."""
    log = logging.getLogger("pipeline")
    saved = log.handlers[:], log.level, log.propagate
    lines = io.StringIO()
    log.handlers[:] = [logging.StreamHandler(lines)]
    log.setLevel(logging.INFO)
    log.propagate = False
    yield log, lines
    log.handlers[:], log.level, log.propagate = saved[0], saved[1], saved[2]


def test_without_a_terminal_each_epoch_is_a_log_line_with_time_left(pipeline_log):
    _, lines = pipeline_log
    shown = progress.Epochs(3, stream=io.StringIO())
    for epoch in (1, 2, 3):
        shown({**ROW, "epoch": epoch})
    shown.close()
    text = lines.getvalue().splitlines()
    assert len(text) == 3
    assert text[0].startswith("train: epoch 1/3  loss 0.5000  train acc 0.8000  val acc 0.8500")
    assert all(" left)" in line for line in text)
    assert text[2].endswith("0 s left)")


def test_the_time_left_goes_at_the_last_epochs_pace(pipeline_log, monkeypatch):
    """20 epochs of 1 s, then 10 of 3 s (a slower student): 10 left take 30 s, not
    the 17 s that the pace of the whole run so far would say."""
    _, lines = pipeline_log
    clock = [100.0]
    monkeypatch.setattr(progress.time, "perf_counter", lambda: clock[0])
    shown = progress.Epochs(40, stream=io.StringIO())
    for epoch in range(1, 31):
        clock[0] += 1.0 if epoch <= 20 else 3.0
        shown({**ROW, "epoch": epoch})
    text = lines.getvalue().splitlines()
    assert text[19].endswith("(0.2 s, 20 s left)")       # 1 s an epoch, 20 to go
    assert text[29].endswith("(0.2 s, 30 s left)")


def test_members_are_counted_in_the_lines(pipeline_log):
    _, lines = pipeline_log
    shown = progress.Epochs(2, members=3, stream=io.StringIO())
    shown({**ROW, "member": 1, "epoch": 2})
    assert lines.getvalue().startswith("train: member 2/3  epoch 2/2")


def test_a_student_that_trains_longer_shows_its_own_epochs(pipeline_log):
    _, lines = pipeline_log
    shown = progress.Epochs(2, members=2, stream=io.StringIO(), total=2 + 4)
    shown({**ROW, "member": 1, "epoch": 1, "of": 4})
    first = lines.getvalue().splitlines()[0]
    assert first.startswith("train: member 2/2  epoch 1/4") and shown.total == 6


def test_on_a_terminal_a_bar_replaces_the_lines(pipeline_log):
    _, lines = pipeline_log
    term = Terminal()
    shown = progress.Epochs(4, stream=term)
    for epoch in (1, 2, 3, 4):
        shown({**ROW, "epoch": epoch})
    shown.close()
    drawn = term.getvalue()
    assert "4/4" in drawn and "val acc 0.8500" in drawn and "epoch" in drawn
    assert lines.getvalue() == ""


def test_a_log_line_during_a_bar_still_reaches_the_log(pipeline_log):
    log, lines = pipeline_log
    term = Terminal()
    with progress.Epochs(2, stream=term) as shown:
        shown(ROW)
        log.warning("something odd")
    assert "something odd" in lines.getvalue()
    assert log.handlers[0].stream is lines          # the logger's own handler is back


def test_quiet_draws_nothing(pipeline_log):
    log, lines = pipeline_log
    log.setLevel(logging.WARNING)
    term = Terminal()
    shown = progress.Epochs(2, stream=term)
    shown(ROW)
    shown.close()
    with progress.activity("ingest x.csv", stream=term):
        pass
    assert term.getvalue() == "" and lines.getvalue() == ""


def test_activity_shows_its_name_on_a_terminal_only(pipeline_log):
    term, plain = Terminal(), io.StringIO()
    with progress.activity("ingest train.csv", stream=term):
        pass
    with progress.activity("ingest train.csv", stream=plain):
        pass
    assert "ingest train.csv" in term.getvalue() and plain.getvalue() == ""


def sized_pty(columns):
    """(master, slave) file descriptors of a pseudo-terminal `columns` wide."""
    import fcntl
    import pty
    import struct
    import termios
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 30, columns, 0, 0))
    return master, slave


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="pseudo-terminals as on Linux")
def test_a_terminal_without_width_gets_lines_not_an_invisible_bar(pipeline_log):
    master, slave = sized_pty(0)
    with os.fdopen(slave, "w") as zero_wide:
        assert not progress.bars_wanted(zero_wide)
    os.close(master)
    master, slave = sized_pty(80)
    with os.fdopen(slave, "w") as wide:
        assert progress.bars_wanted(wide)
    os.close(master)


def run_on_terminal(args, timeout=120):
    """Run `python run.py ARGS` with stdout on a pseudo-terminal; return its output."""
    master, slave = sized_pty(120)
    proc = subprocess.Popen([sys.executable, str(ROOT / "run.py"), *args], cwd=ROOT,
                            stdin=subprocess.DEVNULL, stdout=slave, stderr=slave)
    os.close(slave)
    chunks = []
    while True:
        ready, _, _ = select.select([master], [], [], timeout)
        if not ready:
            proc.kill()
            raise AssertionError("no output for %s s" % timeout)
        try:
            data = os.read(master, 65536)
        except OSError:                      # the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    proc.wait(timeout)
    os.close(master)
    return proc.returncode, b"".join(chunks).decode("utf-8", "replace")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="pseudo-terminals as on Linux")
def test_cli_draws_bars_on_a_terminal_and_lines_elsewhere(tmp_path, tiny_csvs):
    train_csv, test_csv = tiny_csvs
    common = [f"--set=data.train={train_csv}", f"--set=data.test={test_csv}",
              "--set=data.sample=null", "--set=train.epochs=3", "ingest", "preprocess", "train"]
    code, out = run_on_terminal(common + [f"--set=outputs={tmp_path / 'a'}"])
    assert code == 0, out
    assert "3/3" in out and ("epoch/s" in out or "s/epoch" in out)
    assert "train: epoch 1/3" not in out                     # the bar, not the lines
    assert "ingest train.csv" in out                         # ingest's bar, then its line
    code, out = run_on_terminal(common + [f"--set=outputs={tmp_path / 'b'}", "--quiet"])
    assert code == 0 and out.strip() == "", out
    plain = subprocess.run([sys.executable, str(ROOT / "run.py"), *common,
                            f"--set=outputs={tmp_path / 'c'}"], cwd=ROOT, capture_output=True,
                           text=True, stdin=subprocess.DEVNULL, timeout=120)
    assert "train: epoch 3/3" in plain.stdout and "left)" in plain.stdout
    assert "\r" not in plain.stdout


def test_a_resumed_run_counts_the_epochs_done_before(pipeline_log):
    _, lines = pipeline_log
    shown = progress.Epochs(4, stream=io.StringIO(), done=2)
    shown({**ROW, "epoch": 3, "seconds": 1.0})
    assert shown.done == 3 and lines.getvalue().splitlines()[0].startswith("train: epoch 3/4")

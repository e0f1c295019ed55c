"""One run at a time per outputs folder: a second run is refused at once, naming the
first; a killed run's lock is taken over; reading commands need none."""
import signal
import subprocess
import sys
import time

import pytest
from helpers import ROOT

from pipeline import cli
from pipeline.engine import lock
from pipeline.errors import PipelineError

HOLDER = """
import sys, time
from pipeline.engine import lock
with lock.held(sys.argv[1], ["python", "run.py", "train"]):
    print("holding", flush=True)
    time.sleep(60)
"""


@pytest.fixture
def holder(tmp_path):
    """A process that holds the lock of tmp_path/outputs until killed."""
    outputs = tmp_path / "outputs"
    child = subprocess.Popen([sys.executable, "-c", HOLDER, str(outputs)], cwd=ROOT,
                             stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline() == "holding\n"
    yield child, outputs
    child.kill()
    child.wait()


def test_a_second_run_is_refused_and_names_the_first(holder):
    child, outputs = holder
    started = time.monotonic()
    with pytest.raises(PipelineError, match=rf"is in use by another run \(pid {child.pid}, "
                                            r"`python run.py train`, since "):
        with lock.held(outputs):
            pass
    assert time.monotonic() - started < 5                   # at once, not after a wait


def test_the_command_line_exits_1_and_reading_commands_still_work(holder, tiny_csvs, capsys):
    child, outputs = holder
    args = [f"--set=data.train={tiny_csvs[0]}", f"--set=data.test={tiny_csvs[1]}",
            f"--set=outputs={outputs}", "--set=train.hidden=8", "--set=train.epochs=1"]
    assert cli.main(args) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and f"pid {child.pid}" in err and err.count("\n") == 1
    assert not (outputs / "ingest").exists()                # nothing ran
    assert cli.main(["status", *args]) == 0                  # reads only: no lock
    assert cli.main(["runs", *args]) == 0


def test_a_killed_runs_lock_is_taken_over(holder, caplog):
    child, outputs = holder
    child.send_signal(signal.SIGKILL)
    child.wait()
    logger = __import__("logging").getLogger("pipeline")
    logger.addHandler(caplog.handler)               # the CLI may have stopped propagation
    try:
        with caplog.at_level("INFO", logger="pipeline"), lock.held(outputs):
            pass
    finally:
        logger.removeHandler(caplog.handler)
    assert f"(pid {child.pid}" in caplog.text and "taking over" in caplog.text
    with lock.held(outputs):                        # and released again at the end
        pass

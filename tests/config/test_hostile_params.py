"""Issue 30, items 4 to 6 for params: alias bombs, deep nesting, huge numbers, long
values and special files get one line, quickly, with what they quote cut short.

Every hostile file is made here, in a temporary folder.
"""
import os
import time
from pathlib import Path

import pytest
from helpers import ROOT, run_cli

from pipeline.config import params as params_mod
from pipeline.errors import PipelineError


def laughs(levels: int = 9) -> str:
    """The billion laughs: each level a list of ten aliases of the one before, so a
    file of a few hundred bytes stands for 10**levels strings."""
    lines = ['train: {epochs: 1}', 'a0: &a0 ["lol"]']
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, levels)]
    return "\n".join(lines) + "\n"


def load_error(path: Path, *overrides: str) -> str:
    started = time.monotonic()
    with pytest.raises(PipelineError) as caught:
        params_mod.load(path, list(overrides))
    assert time.monotonic() - started < 5
    return str(caught.value)


def test_an_alias_bomb_file_is_refused_before_expanding(tmp_path):
    path = tmp_path / "bomb.yaml"
    path.write_text(laughs())
    assert path.stat().st_size < 1000
    assert load_error(path) == (f"{path}, line 3: expected plain values, found an alias (*a0): "
                                "aliases are not read in params")


def test_an_alias_bomb_in_set_is_refused():
    value = "[&a [1,1,1,1,1,1,1,1], &b [*a,*a,*a,*a,*a,*a,*a,*a], [*b,*b,*b,*b,*b,*b,*b,*b]]"
    message = load_error(ROOT / "params.yaml", f"train.lr={value}")
    assert message.startswith("--set train.lr=[&a [1,1,1,1,1,1,1,1], &b [*a,*a,*a,*a,*a,*a,*a,*a], "
                              [:params_mod.QUOTE_CHARS - 3 + len("--set ")])
    assert message.endswith(": expected plain values, found an alias (*a): aliases are not "
                            "read in params")


FLOW = "[" * 5000 + "]" * 5000                                     # all on line 1
BLOCK = "".join(f"{' ' * i}k{i}:\n" for i in range(1000)) + " " * 1000 + "1\n"


@pytest.mark.parametrize("text, line", [(FLOW, 1), (BLOCK, params_mod.MAX_DEPTH + 1)])
def test_yaml_nested_thousands_deep_is_refused(tmp_path, text, line):
    path = tmp_path / "deep.yaml"
    path.write_text(text)
    assert load_error(path) == (f"{path}, line {line}: expected sections a few levels deep, "
                                f"found more than {params_mod.MAX_DEPTH}")


def test_huge_numbers_get_one_line():
    int_error = load_error(ROOT / "params.yaml", "train.epochs=" + "9" * 5000)
    assert int_error.startswith("--set train.epochs=999")
    assert "expected values of a sensible size, found one that cannot be read" in int_error
    assert len(int_error) < 300
    float_error = load_error(ROOT / "params.yaml", "train.lr=" + "9" * 400)
    assert float_error.startswith("--set train.lr=999")
    assert "train.lr must be a finite number, found 999" in float_error
    assert len(float_error) < 300


def test_values_quoted_in_messages_are_cut_short(tmp_path):
    message = load_error(ROOT / "params.yaml", "train.lr=" + "x" * 100_000)
    assert len(message) < 300 and message.endswith("... (str)")
    path = tmp_path / "my.yaml"
    path.write_text('train:\n  schedule: "\\x1b[2J' + "y" * 5000 + '"\n')   # YAML's escape
    message = load_error(path)
    assert len(message) < 300 and "\x1b" not in message and "\\x1b[2J" in message


def test_special_and_huge_params_files_get_one_line(tmp_path):
    fifo = tmp_path / "my.yaml"
    os.mkfifo(fifo)                               # opening it would wait for a writer
    assert load_error(fifo) == f"{fifo}: expected a params file, found a named pipe (FIFO)"
    assert load_error(Path("/dev/zero")) == \
        "/dev/zero: expected a params file, found a character device"
    big = tmp_path / "big.yaml"
    big.write_text("# " + "x" * params_mod.MAX_FILE_BYTES + "\n")
    assert load_error(big) == f"{big}: too large: expected a params file of at most 1024 KB"


def test_through_the_command_line_one_line_and_no_traceback(tmp_path):
    path = tmp_path / "bomb.yaml"
    path.write_text(laughs())
    done = run_cli("status", "--params", str(path), timeout=30)
    assert done.returncode == 1
    assert done.stderr.splitlines() == [(f"error: {path}, line 3: expected plain values, found "
                                         "an alias (*a0): aliases are not read in params")]

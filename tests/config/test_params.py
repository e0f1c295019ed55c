"""Loading params.yaml: overrides, and a message naming file and line for each mistake."""
import re

import pytest
from helpers import ROOT

from pipeline.config import params as params_mod
from pipeline.config import sections as settings
from pipeline.errors import PipelineError

DEFAULTS = (ROOT / "params.yaml").read_text()


def load_text(tmp_path, text, *overrides):
    path = tmp_path / "params.yaml"
    path.write_text(text)
    return params_mod.load(path, list(overrides))


def failure(tmp_path, text, *overrides):
    with pytest.raises(PipelineError) as info:
        load_text(tmp_path, text, *overrides)
    message = str(info.value)
    assert "\n" not in message
    return message


def replace_line(key, value):
    """DEFAULTS with the line setting `key` (a leaf name, indented or not) given `value`."""
    lines = DEFAULTS.splitlines()
    for i, line in enumerate(lines):
        if line.strip().startswith(f"{key}:"):
            lines[i] = line[: line.index(key)] + f"{key}: {value}"
            return "\n".join(lines) + "\n", i + 1
    raise AssertionError(f"{key} not in params.yaml")


def test_the_defaults_load_with_every_key_of_the_schema():
    params = params_mod.load(ROOT / "params.yaml")
    assert list(params) == list(params_mod.SCHEMA)
    assert isinstance(params["train.lr"], float) and isinstance(params["train.epochs"], int)


def test_overrides_are_read_as_yaml(tmp_path):
    params = load_text(tmp_path, DEFAULTS, "train.epochs=3", "train.lr=1e-2", "data.sample=null",
                       "train.l2=0")
    assert params["train.epochs"] == 3 and params["train.lr"] == 0.01
    assert params["data.sample"] is None and params["train.l2"] == 0.0
    assert settings.of(params).train.epochs == 3


def test_yaml_1_1_exponent_without_a_dot_is_a_number(tmp_path):
    text, _ = replace_line("lr", "1e-3")
    assert load_text(tmp_path, text)["train.lr"] == 0.001


@pytest.mark.parametrize("key, value, want", [
    ("lr", "-0.1", "train.lr must be a number > 0, found -0.1"),
    ("lr", "0", "train.lr must be a number > 0, found 0.0"),
    ("lr", ".inf", "train.lr must be a finite number, found inf"),
    ("lr", "fast", "train.lr must be a number, found 'fast' (str)"),
    ("val_fraction", "0", "preprocess.val_fraction must be a number in (0, 1), found 0.0"),
    ("val_fraction", "1", "preprocess.val_fraction must be a number in (0, 1), found 1.0"),
    ("val_fraction", "1.5", "preprocess.val_fraction must be a number in (0, 1), found 1.5"),
    ("epochs", "0", "train.epochs must be an integer >= 1, found 0"),
    ("epochs", "2.5", "train.epochs must be an integer, found 2.5 (float)"),
    ("epochs", "yes", "train.epochs must be an integer, found True (bool)"),
    ("epochs", "'12'", "train.epochs must be an integer, found '12' (str)"),
    ("hidden", "0", "train.hidden must be an integer >= 1, found 0"),
    ("hidden", "-5", "train.hidden must be an integer >= 1, found -5"),
    ("batch_size", "", "train.batch_size must be set, found null"),
    ("seed", "-1", "seed must be an integer >= 0, found -1"),
    ("outputs", "[a, b]", "outputs must be a non-empty string, found ['a', 'b'] (list)"),
])
def test_bad_values_in_the_file_name_file_and_line(tmp_path, key, value, want):
    text, line = replace_line(key, value)
    message = failure(tmp_path, text)
    assert message == f"{tmp_path / 'params.yaml'}, line {line}: {want}"


@pytest.mark.parametrize("override, want", [
    ("train.lr=-1", "--set train.lr=-1: train.lr must be a number > 0, found -1.0"),
    ("train.epochs=0", "--set train.epochs=0: train.epochs must be an integer >= 1, found 0"),
    ("preprocess.val_fraction=1", "--set preprocess.val_fraction=1: preprocess.val_fraction "
                                  "must be a number in (0, 1), found 1.0"),
    ("train.hidden=many", "--set train.hidden=many: train.hidden must be an integer, "
                          "found 'many' (str)"),
    ("train.epoch=3", "--set train.epoch=3: unknown key 'train.epoch' "
                      "(did you mean 'train.epochs'?)"),
    ("epochs=3", "--set epochs=3: unknown key 'epochs' (did you mean 'train.epochs'?)"),
    ("batch_size=64", "unknown key 'batch_size' (did you mean 'train.batch_size' or "
                      "'predict.batch_size'?)"),
    ("nonsense=1", "--set nonsense=1: unknown key 'nonsense'"),
    ("train=3", "--set train=3: expected the section 'train' to hold keys such as train."),
    ("train.epochs", "--set train.epochs: expected KEY=VALUE, such as train.epochs=5"),
    ("=5", "--set =5: expected KEY=VALUE"),
    ("train.lr=[0.1", "--set train.lr=[0.1: expected a YAML value after '=', found '[0.1'"),
    ("train.epochs=", "--set train.epochs=: train.epochs must be set, found null"),
])
def test_bad_overrides_name_the_set(tmp_path, override, want):
    assert want in failure(tmp_path, DEFAULTS, override)


def test_a_typo_in_the_file_gets_a_suggestion_and_its_line(tmp_path):
    text, line = replace_line("epochs", "12")
    text = text.replace("  epochs: 12", "  epoch: 12")
    assert failure(tmp_path, text) == (f"{tmp_path / 'params.yaml'}, line {line}: unknown key "
                                       "'train.epoch' (did you mean 'train.epochs'?)")


def test_invalid_yaml_names_line_and_column(tmp_path):
    message = failure(tmp_path, "seed: 0\ntrain:\n  lr: [0.1\n")
    assert message.startswith(f"{tmp_path / 'params.yaml'}, line 4, column 1: invalid YAML: ")
    message = failure(tmp_path, "seed: 0\n  outputs: x\n")
    assert ", line 2, column 10: invalid YAML: mapping values are not allowed here" in message


def test_a_key_set_twice_is_refused(tmp_path):
    message = failure(tmp_path, DEFAULTS + "seed: 5\n")
    assert message.endswith(f"line {DEFAULTS.count(chr(10)) + 1}: seed is set twice "
                            "(first on line 4)")


def test_empty_or_non_mapping_file(tmp_path):
    assert failure(tmp_path, "").endswith("expected a mapping of sections, found an empty file")
    assert failure(tmp_path, "- a\n- b\n").endswith("expected a mapping of sections, found a list")


def test_a_key_missing_from_the_project_params_yaml_is_named(tmp_path, monkeypatch):
    monkeypatch.setattr(params_mod, "PROJECT_DEFAULTS", tmp_path / "params.yaml")
    text = "\n".join(line for line in DEFAULTS.splitlines() if not line.startswith("  eps:"))
    assert failure(tmp_path, text) == (f"{tmp_path / 'params.yaml'}: expected every key in a "
                                       "params.yaml, which holds every default, found no "
                                       "train.eps")


def test_a_section_given_a_value(tmp_path):
    text = DEFAULTS.replace("preprocess:\n  val_fraction: 0.1", "preprocess: 0.1")
    assert "expected the section 'preprocess' to hold keys such as " \
           "preprocess.val_fraction, found 0.1" in failure(tmp_path, text)


def test_missing_params_file(tmp_path):
    with pytest.raises(PipelineError, match="params file not found"):
        params_mod.load(tmp_path / "nope.yaml")


@pytest.mark.parametrize("other", ["train.keep_best=true", "train.patience=3"])
def test_all_rows_with_epoch_choice_on_validation_is_refused_at_load(tmp_path, other):
    message = failure(tmp_path, DEFAULTS, "train.all_rows=true", other)
    assert message.startswith("--set train.all_rows=true: ")
    assert "expected keep_best false and patience 0" in message
    load_text(tmp_path, DEFAULTS, "train.all_rows=true")          # alone it is fine


def test_a_cosine_floor_above_the_rate_is_refused(tmp_path):
    assert "train.lr_min must be at most train.lr (0.002), found 0.01" in \
        failure(tmp_path, DEFAULTS, "train.lr_min=0.01")


def test_a_local_file_overrides_the_params_file_and_set_overrides_both(tmp_path):
    local = tmp_path / "params.local.yaml"
    local.write_text("data:\n  train: /data/mnist/train.csv\ntrain:\n  epochs: 3\n")
    p = params_mod.load(ROOT / "params.yaml", ["train.epochs=4"], local=local)
    assert p["data.train"] == "/data/mnist/train.csv" and p["train.epochs"] == 4
    assert p["data.test"] == params_mod.load(ROOT / "params.yaml")["data.test"]
    assert params_mod.load(ROOT / "params.yaml", local=tmp_path / "absent.yaml") == \
        params_mod.load(ROOT / "params.yaml")
    local.write_text("train:\n  epoch: 3\n")
    with pytest.raises(PipelineError, match=r"params.local.yaml, line 2: unknown key "
                                            r"'train.epoch' \(did you mean 'train.epochs'\?\)"):
        params_mod.load(ROOT / "params.yaml", local=local)


def test_a_missing_params_file_says_where_it_looked(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(PipelineError, match=rf"params.yaml: params file not found in "
                                            rf"{re.escape(str(tmp_path))} \(run from the "):
        params_mod.load("params.yaml")


# --- files of changes: any params file other than params.yaml ---

def changes_file(folder, text, name="my.yaml"):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(text)
    return folder / name


def test_a_file_of_changes_is_read_over_params_yaml(tmp_path):
    mine = changes_file(tmp_path, "train: {epochs: 5}\n")
    assert params_mod.load(mine) == {**params_mod.load(ROOT / "params.yaml"), "train.epochs": 5}
    # Then params.local.yaml, then --set, as over params.yaml itself.
    (tmp_path / "params.local.yaml").write_text("train:\n  epochs: 6\n  hidden: 32\n")
    p = params_mod.load(mine, ["train.hidden=16"], local=tmp_path / "params.local.yaml")
    assert (p["train.epochs"], p["train.hidden"], p["train.lr"]) == (6, 16, 0.002)


def test_a_bad_value_in_a_file_of_changes_names_that_file_and_line(tmp_path):
    mine = changes_file(tmp_path, "# a wider network\ntrain:\n  hidden: 512\n  lr: -1\n")
    with pytest.raises(PipelineError) as info:
        params_mod.load(mine)
    assert str(info.value) == f"{mine}, line 4: train.lr must be a number > 0, found -1.0"
    # A check across two fields blames the file that set the one to blame.
    mine.write_text("train:\n  lr_min: 0.01\n")
    with pytest.raises(PipelineError) as info:
        params_mod.load(mine)
    assert str(info.value) == (f"{mine}, line 2: train.lr_min must be at most train.lr "
                               "(0.002), found 0.01")


@pytest.mark.parametrize("text, line, want", [
    ("train:\n  epoch: 5\n", 2, "unknown key 'train.epoch' (did you mean 'train.epochs'?)"),
    ("\npredict:\n  epochs: 5\n", 3,
     "unknown key 'predict.epochs' (did you mean 'train.epochs'?)"),
    ("train: 5\n", 1, "expected the section 'train' to hold keys such as train.hidden, "
                      "found 5"),
])
def test_an_unknown_key_in_a_file_of_changes_is_refused(tmp_path, text, line, want):
    mine = changes_file(tmp_path, text)
    with pytest.raises(PipelineError) as info:
        params_mod.load(mine)
    assert str(info.value) == f"{mine}, line {line}: {want}"


def test_a_file_of_changes_in_another_folder_is_read_over_the_project_params_yaml(
        tmp_path, monkeypatch):
    # Not over a params.yaml beside it, nor over one in the folder run from: the file
    # means the same wherever it is kept and run from.
    def seeded(seed):
        text = DEFAULTS.replace("seed: 0 ", f"seed: {seed} ")
        assert text != DEFAULTS
        return text
    mine = changes_file(tmp_path / "experiments" / "wide", "train:\n  hidden: 512\n")
    (mine.parent / "params.yaml").write_text(seeded(9))
    (tmp_path / "params.yaml").write_text(seeded(7))
    for folder in (ROOT, tmp_path, mine.parent):
        monkeypatch.chdir(folder)
        p = params_mod.load(mine)
        assert p == {**params_mod.load(ROOT / "params.yaml"), "train.hidden": 512}, folder


def test_a_file_of_changes_needs_the_project_params_yaml(tmp_path, monkeypatch):
    mine = changes_file(tmp_path, "train: {epochs: 5}\n")
    monkeypatch.setattr(params_mod, "PROJECT_DEFAULTS", tmp_path / "params.yaml")
    with pytest.raises(PipelineError) as info:
        params_mod.load(mine)
    assert str(info.value) == (f"{mine}: lists changes over the project's params.yaml, not "
                               f"found: {tmp_path / 'params.yaml'}")
    # Its own mistakes are reported first.
    mine.write_text("train: {epoch: 5}\n")
    with pytest.raises(PipelineError, match=r"my.yaml, line 1: unknown key 'train.epoch'"):
        params_mod.load(mine)


def test_a_bad_default_names_params_yaml_as_typed_from_the_project_folder(tmp_path,
                                                                          monkeypatch):
    project = tmp_path.resolve() / "project"
    project.mkdir()
    text, line = replace_line("hidden", "0")
    (project / "params.yaml").write_text(text)
    monkeypatch.setattr(params_mod, "PROJECT_DEFAULTS", project / "params.yaml")
    mine = changes_file(tmp_path, "train: {epochs: 5}\n")
    monkeypatch.chdir(project)
    with pytest.raises(PipelineError) as info:
        params_mod.load(mine)
    assert str(info.value) == f"params.yaml, line {line}: train.hidden must be an integer " \
                              ">= 1, found 0"


def test_a_file_of_changes_named_params_yaml_is_told_to_take_another_name(tmp_path):
    mine = changes_file(tmp_path / "experiments", "train: {epochs: 5}\n", name="params.yaml")
    with pytest.raises(PipelineError) as info:
        params_mod.load(mine)
    assert str(info.value) == (
        f"{mine}: expected every key in a params.yaml, which holds every default, found no "
        f"seed, outputs, data.train, data.test and 31 more (a file of changes over "
        f"{ROOT / 'params.yaml'} needs another name)")


def test_differences_from_a_file_of_changes_are_what_local_and_set_changed(tmp_path):
    local = tmp_path / "params.local.yaml"
    local.write_text("data:\n  train: /data/train.csv\n")
    best = ROOT / "params-best.yaml"
    p = params_mod.load(best, ["train.members=2", "train.epochs=160"], local=local)
    # Neither params-best.yaml's changes nor params.yaml's keys count: the file gives them.
    assert params_mod.differences(best, p) == {"data.train": "/data/train.csv",
                                               "train.members": 2}
    assert params_mod.differences(best, params_mod.load(best)) == {}


def test_differences_are_what_the_local_file_and_set_changed(tmp_path):
    local = tmp_path / "params.local.yaml"
    local.write_text("data:\n  train: /data/train.csv\n")
    p = params_mod.load(ROOT / "params.yaml", ["train.epochs=3", "train.lr=2e-3"], local=local)
    # train.lr=2e-3 is the file's own 0.002: not a change.
    assert params_mod.differences(ROOT / "params.yaml", p) == \
        {"data.train": "/data/train.csv", "train.epochs": 3}
    assert params_mod.differences(tmp_path / "gone.yaml", p) == p

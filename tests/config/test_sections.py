"""The typed settings: params.yaml's keys are the dataclasses' fields, params.load
checks what the fields say (with file, line and did-you-mean in its messages), and
the settings it builds are frozen and hold the values it returns."""
import dataclasses
import typing

import pytest
import yaml
from helpers import ROOT

from pipeline.config import params as params_mod
from pipeline.config import sections as settings
from pipeline.errors import PipelineError

FILES = ("params.yaml", "params-best.yaml", "params-single.yaml")
DEFAULTS = (ROOT / "params.yaml").read_text()
KEYS = [key for key, _, _ in settings.leaves()]


def key_lines(text: str) -> dict[str, int]:
    """The line on which each dotted key of a YAML mapping is set."""
    lines = {}

    def walk(node, prefix):
        for key, value in node.value:
            lines[prefix + key.value] = key.start_mark.line + 1
            if isinstance(value, yaml.MappingNode):
                walk(value, f"{prefix}{key.value}.")
    walk(yaml.compose(text), "")
    return lines


def with_value(key: str, value: str) -> tuple[str, int]:
    """params.yaml with `key` (dotted) set to `value`, and the line it is on."""
    line = key_lines(DEFAULTS)[key]
    lines = DEFAULTS.splitlines()
    leaf = key.rpartition(".")[2]
    lines[line - 1] = lines[line - 1][:lines[line - 1].index(leaf)] + f"{leaf}: {value}"
    return "\n".join(lines) + "\n", line


def failure(tmp_path, text: str, *overrides: str) -> str:
    path = tmp_path / "params.yaml"
    path.write_text(text)
    with pytest.raises(PipelineError) as info:
        params_mod.load(path, list(overrides))
    return str(info.value)


def test_params_yaml_holds_every_key_in_the_fields_order():
    tree = yaml.safe_load(DEFAULTS)
    assert list(params_mod.flatten(tree)) == KEYS == list(params_mod.SCHEMA)


@pytest.mark.parametrize("name", FILES[1:])
def test_the_other_files_hold_only_what_they_change_in_the_fields_order(name):
    # Files of changes, not copies: a key set to params.yaml's value would hide a later
    # change of the default from this file.
    flat = params_mod.flatten(yaml.safe_load((ROOT / name).read_text()))
    assert list(flat) == [key for key in KEYS if key in flat]
    default = params_mod.load(ROOT / "params.yaml")
    assert flat and all(params_mod.load(ROOT / name)[key] != default[key] for key in flat)


def test_no_field_has_a_default():
    # params.yaml is the only place defaults live.
    for cls in (settings.Settings, settings.Data, settings.Preprocess, settings.Train,
                settings.Predict, settings.Cache):
        for field in dataclasses.fields(cls):
            assert field.default is dataclasses.MISSING, f"{cls.__name__}.{field.name}"
            assert field.default_factory is dataclasses.MISSING, f"{cls.__name__}.{field.name}"


def test_every_number_has_a_range_and_says_it():
    numbers = [key for key, kind, _ in settings.leaves() if kind in (int, float)]
    assert "train.lr" in numbers and "cache.max_mb" in numbers
    for key in numbers:
        spec = params_mod.SCHEMA[key]
        assert callable(spec.check) and spec.expect, f"{key} has no range rule"


def test_kinds_come_from_the_annotations():
    kinds = {key: spec.kind for key, spec in params_mod.SCHEMA.items()}
    assert kinds["train.epochs"] == "int" and kinds["train.lr"] == "float"
    assert kinds["train.keep_best"] == "bool" and kinds["outputs"] == "str"
    assert kinds["train.schedule"] == "choice"
    assert params_mod.SCHEMA["train.schedule"].choices == ("constant", "step", "cosine")
    assert [k for k, spec in params_mod.SCHEMA.items() if spec.nullable] == ["data.sample"]


@pytest.mark.parametrize("key", [k for k in KEYS if params_mod.SCHEMA[k].check])
def test_a_value_out_of_range_names_file_line_and_what_was_expected(tmp_path, key):
    # -1 is out of every range here.
    text, line = with_value(key, "-1")
    spec = params_mod.SCHEMA[key]
    found = -1.0 if spec.kind == "float" else -1
    assert failure(tmp_path, text) == (f"{tmp_path / 'params.yaml'}, line {line}: {key} must be "
                                       f"{spec.expect}, found {found!r}")


@pytest.mark.parametrize("key", KEYS)
def test_a_misspelt_key_gets_did_you_mean(tmp_path, key):
    wrong = key + key[-1]                   # the last letter doubled
    assert failure(tmp_path, DEFAULTS, f"{wrong}=1") == \
        f"--set {wrong}=1: unknown key '{wrong}' (did you mean '{key}'?)"


def test_fields_that_disagree_name_the_file_and_line_of_the_one_to_blame(tmp_path):
    text, _ = with_value("train.keep_best", "true")
    lines = key_lines(text)
    text = text.replace("  all_rows: false", "  all_rows: true")
    assert failure(tmp_path, text) == (
        f"{tmp_path / 'params.yaml'}, line {lines['train.all_rows']}: train.all_rows=true trains "
        "on the validation rows, so train.keep_best and train.patience cannot choose epochs "
        "on them: expected keep_best false and patience 0")
    text, line = with_value("train.lr_min", "0.01")
    assert failure(tmp_path, text) == (f"{tmp_path / 'params.yaml'}, line {line}: train.lr_min "
                                       "must be at most train.lr (0.002), found 0.01")


def test_problem_is_none_when_the_fields_agree():
    train = settings.Train.of(params_mod.load(ROOT / "params.yaml"))
    assert train.problem() is None
    assert dataclasses.replace(train, all_rows=True).problem() is None
    assert dataclasses.replace(train, all_rows=True, patience=2).problem()[0] == "train.all_rows"
    assert dataclasses.replace(train, lr_min=train.lr).problem() is None
    assert dataclasses.replace(train, lr_min=2 * train.lr).problem()[0] == "train.lr_min"


@pytest.mark.parametrize("name", FILES)
def test_settings_hold_the_values_params_load_returns(name):
    params = params_mod.load(ROOT / name)
    built = settings.of(params)
    assert built.train.lr == params["train.lr"]
    for key in KEYS:
        value = built
        for part in key.split("."):
            value = getattr(value, part)
        assert value == params[key] and type(value) is type(params[key]), key
    assert settings.Train.of(params) == built.train


def test_settings_are_frozen():
    built = settings.of(params_mod.load(ROOT / "params.yaml"))
    for obj, name in [(built, "seed"), (built.data, "train"), (built.preprocess, "val_fraction"),
                      (built.train, "lr"), (built.predict, "batch_size"),
                      (built.cache, "max_mb")]:
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(obj, name, getattr(obj, name))


def test_the_schedule_field_offers_the_schedules_kinds():
    from pipeline.nn.schedule import KINDS
    assert typing.get_args(typing.get_type_hints(settings.Train)["schedule"]) == KINDS

"""Loading, validating and overriding params.

`params.yaml` holds every value; sections.py says what a value may be (a field's type
and range), so there is one default per setting and it lives in the file. Any other
params file (params-best.yaml, a user's my.yaml) lists only what it changes and is
read over the project's params.yaml. This module reads the files, checks each value
and names the file and line (or the --set) a bad one came from. Params are handled
as a flat dict of dotted keys ("train.lr") and nested again only for display.
"""
from __future__ import annotations

import difflib
import math
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Literal, Union, get_args, get_origin

import yaml

from pipeline import artifacts, sources
from pipeline.config import sections as settings
from pipeline.errors import PipelineError, printable


@dataclass(frozen=True)
class Spec:
    """What one param may hold: a kind and an optional range check."""

    kind: str                                   # "int", "float", "str", "bool", or "choice"
    check: Callable[[Any], bool] | None = None  # range test on a well-typed value
    expect: str = ""                            # says what `check` wants, for messages
    nullable: bool = False
    choices: tuple[str, ...] = ()


def _spec(kind: Any, metadata: dict) -> Spec:
    """The Spec of a settings field of type `kind` (str | None: nullable; a Literal: a
    choice) with `settings.rule`'s metadata."""
    nullable = get_origin(kind) in (Union, types.UnionType) and type(None) in get_args(kind)
    if nullable:
        (kind,) = [k for k in get_args(kind) if k is not type(None)]
    if get_origin(kind) is Literal:
        return Spec("choice", nullable=nullable, choices=get_args(kind))
    assert kind in (int, float, str, bool), f"no Spec for a field of type {kind}"
    return Spec(kind.__name__, metadata.get("check"), metadata.get("expect", ""), nullable)


SCHEMA: dict[str, Spec] = {key: _spec(kind, metadata)
                           for key, kind, metadata in settings.leaves()}

# A file of this name holds every key. A file of any other name is read over the
# project's, beside run.py: not over one beside it or in the current folder, so that
# where a file of changes is kept, or run from, does not change what it means.
DEFAULTS = "params.yaml"
LOCAL = "params.local.yaml"    # beside the params file: one machine's settings, not in git
PROJECT_DEFAULTS = sources.ROOT / DEFAULTS


# A params file is a few KB of sections two levels deep; these bound what a hostile one
# (or a --set value) may cost before it is read, and what a message quotes of it.
MAX_FILE_BYTES = 2**20
MAX_DEPTH = 32
QUOTE_CHARS = 60


def cut(text: str, limit: int = QUOTE_CHARS) -> str:
    """`text` as a message quotes it: at most `limit` characters, control characters
    escaped."""
    return printable(text if len(text) <= limit else text[:limit - 3] + "...")


def _shown(value: Any) -> str:
    """A value as a message quotes it: its repr, cut short."""
    return cut(repr(value))


def safe_yaml(text: str, where: str) -> Any:
    """`text` read as YAML, refusing what could make reading it blow up: aliases (a
    few hundred bytes of nested aliases expand to gigabytes), nesting deeper than
    MAX_DEPTH (Python's recursion limit) and numbers too long to convert. The events
    are looked at first, without building anything. YAML syntax errors propagate as
    yaml.YAMLError; the rest raise PipelineError naming `where`."""
    depth = 0
    for event in yaml.parse(text, Loader=yaml.SafeLoader):
        if isinstance(event, yaml.AliasEvent):
            line = event.start_mark.line + 1
            raise PipelineError(f"{where}, line {line}: expected plain values, found an alias "
                                f"(*{cut(event.anchor)}): aliases are not read in params")
        if isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
            depth += 1
            if depth > MAX_DEPTH:
                raise PipelineError(f"{where}, line {event.start_mark.line + 1}: expected "
                                    f"sections a few levels deep, found more than {MAX_DEPTH}")
        elif isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
            depth -= 1
    try:
        return yaml.safe_load(text)
    except (ValueError, OverflowError) as exc:  # e.g. an int past Python's 4300 digits
        raise PipelineError(f"{where}: expected values of a sensible size, found one that "
                            f"cannot be read ({cut(str(exc))})") from None


def flatten(tree: dict, prefix: str = "") -> dict[str, Any]:
    """{"train": {"lr": 1}} -> {"train.lr": 1}."""
    flat = {}
    for key, value in tree.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, dotted + "."))
        else:
            flat[dotted] = value
    return flat


def _did_you_mean(key: str) -> str:
    """A hint naming the known key(s) closest to a misspelt or misplaced one."""
    if len(key) > 100:                  # no key is that long; difflib would be slow on it
        return ""
    leaf = key.rpartition(".")[2]
    close = [k for k in SCHEMA if k.rpartition(".")[2] == leaf]   # right name, wrong section
    close = close or difflib.get_close_matches(key, SCHEMA, n=1, cutoff=0.6)
    if not close:
        return ""
    return " (did you mean " + " or ".join(f"'{k}'" for k in close) + "?)"


def _coerce(key: str, value: Any, where: str) -> Any:
    """Return `value` as the kind SCHEMA[key] wants, or raise saying what was wrong."""
    spec = SCHEMA[key]
    shown = f"{_shown(value)} ({type(value).__name__})"
    if value is None:
        if spec.nullable:
            return None
        raise PipelineError(f"{where}: {key} must be set, found null")
    if spec.kind == "int":
        # bool is an int subclass in Python; `epochs: yes` is a mistake, not 1.
        if isinstance(value, bool) or not isinstance(value, int):
            raise PipelineError(f"{where}: {key} must be an integer, found {shown}")
    elif spec.kind == "float":
        # YAML 1.1 reads `1e-3` (no dot) as a string; accept it as the number it means.
        if isinstance(value, str):
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise PipelineError(f"{where}: {key} must be a number, found {shown}")
        try:
            value = float(value)
        except OverflowError:                   # an int of hundreds of digits
            raise PipelineError(f"{where}: {key} must be a finite number, found {shown}") \
                from None
        if not math.isfinite(value):
            raise PipelineError(f"{where}: {key} must be a finite number, found {value}")
    elif spec.kind == "bool":
        if not isinstance(value, bool):
            raise PipelineError(f"{where}: {key} must be true or false, found {shown}")
    elif spec.kind in ("str", "choice"):
        if not isinstance(value, str) or not value:
            raise PipelineError(f"{where}: {key} must be a non-empty string, found {shown}")
        if spec.kind == "choice" and value not in spec.choices:
            raise PipelineError(
                f"{where}: {key} must be one of {', '.join(spec.choices)}, found {_shown(value)}")
    if spec.check is not None and not spec.check(value):
        raise PipelineError(f"{where}: {key} must be {spec.expect}, found {_shown(value)}")
    return value


def differences(path: str | Path, params: dict[str, Any]) -> dict[str, Any]:
    """The params whose values are not those the params file `path` gives (read over
    params.yaml when it is another file): what params.local.yaml and --set changed (or
    everything, when the files cannot be read)."""
    try:
        flat, origin = _stack(Path(path))
    except PipelineError:
        return dict(params)
    changed = {}
    for key, value in params.items():
        try:
            same = key in flat and _coerce(key, flat[key], origin[key]) == value
        except PipelineError:
            same = False
        if not same:
            changed[key] = value
    return changed


def parse_override(text: str) -> tuple[str, Any]:
    """'train.lr=0.01' -> ("train.lr", 0.01): the value is read as YAML."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise PipelineError(f"--set {cut(text)}: expected KEY=VALUE, such as train.epochs=5")
    if len(raw) > MAX_FILE_BYTES:
        raise PipelineError(f"--set {cut(text)}: too long: expected a value of at most "
                            f"{MAX_FILE_BYTES // 1024} KB")
    try:
        value = safe_yaml(raw, f"--set {cut(text)}") if raw.strip() else None
    except yaml.YAMLError as exc:
        problem = getattr(exc, "problem", None) or "unreadable"
        raise PipelineError(f"--set {cut(text)}: expected a YAML value after '=', found "
                            f"{_shown(raw.strip())} ({problem})") from None
    return key, value


def _yaml_error(path: Path, exc: yaml.YAMLError) -> PipelineError:
    mark = getattr(exc, "problem_mark", None)
    at = f", line {mark.line + 1}, column {mark.column + 1}" if mark else ""
    problem = getattr(exc, "problem", None) or str(exc)
    return PipelineError(f"{path}{at}: invalid YAML: {problem}")


def _key_lines(path: Path, node: yaml.Node, prefix: str = "") -> dict[str, int]:
    """The line on which each dotted key is set; a key set twice is an error (PyYAML
    would quietly keep the last one)."""
    lines: dict[str, int] = {}
    if not isinstance(node, yaml.MappingNode):
        return lines
    for key_node, value_node in node.value:
        dotted = f"{prefix}{key_node.value}"
        line = key_node.start_mark.line + 1
        if dotted in lines:
            raise PipelineError(f"{path}, line {line}: {cut(dotted)} is set twice "
                                f"(first on line {lines[dotted]})")
        lines[dotted] = line
        lines.update(_key_lines(path, value_node, dotted + "."))
    return lines


def _unknown(where: str, key: str, value: Any) -> PipelineError:
    if any(k.startswith(key + ".") for k in SCHEMA):
        return PipelineError(f"{where}: expected the section '{key}' to hold keys such as "
                             f"{next(k for k in SCHEMA if k.startswith(key + '.'))}, "
                             f"found {_shown(value)}")
    return PipelineError(f"{where}: unknown key '{cut(key)}'{_did_you_mean(key)}")


def _read(path: Path) -> tuple[dict[str, Any], dict[str, str]]:
    """The flat keys of a params file, and where each came from ("file, line N")."""
    try:
        artifacts.regular_file(path, "a params file")
        with open(path, "rb") as f:
            data = f.read(MAX_FILE_BYTES + 1)
        if len(data) > MAX_FILE_BYTES:
            raise PipelineError(f"{path}: too large: expected a params file of at most "
                                f"{MAX_FILE_BYTES // 1024} KB")
        text = data.decode("utf-8")
    except FileNotFoundError:
        where = "" if path.is_absolute() else f" in {Path.cwd()}"
        raise PipelineError(f"{path}: params file not found{where} (run from the project's "
                            "folder, or name the file with --params PATH)") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise PipelineError(f"{path}: cannot read the params file ({exc})") from None
    try:
        tree = safe_yaml(text, str(path))
        lines = _key_lines(path, yaml.compose(text, Loader=yaml.SafeLoader))
    except yaml.YAMLError as exc:
        raise _yaml_error(path, exc) from None
    if not isinstance(tree, dict):
        found = "an empty file" if tree is None else f"a {type(tree).__name__}"
        raise PipelineError(f"{path}: expected a mapping of sections, found {found}")
    flat = flatten(tree)
    origin = {key: f"{path}, line {lines[key]}" if key in lines else str(path) for key in flat}
    for key in flat:
        if key not in SCHEMA:
            raise _unknown(origin[key], key, flat[key])
    return flat, origin


def _stack(path: Path) -> tuple[dict[str, Any], dict[str, str]]:
    """The keys a params file gives, with where each came from: a params.yaml must
    hold every key; any other file is read over the project's params.yaml."""
    if path.name == DEFAULTS:
        flat, origin = _read(path)
        missing = [k for k in SCHEMA if k not in flat]
        if missing:
            shown = ", ".join(missing[:4]) + (f" and {len(missing) - 4} more"
                                               if len(missing) > 4 else "")
            # A user's file of changes that was named params.yaml lands here.
            rename = ("" if path.resolve() == PROJECT_DEFAULTS else
                      f" (a file of changes over {PROJECT_DEFAULTS} needs another name)")
            raise PipelineError(f"{path}: expected every key in a {DEFAULTS}, which holds "
                                f"every default, found no {shown}{rename}")
        return flat, origin
    changes, where = _read(path)        # the file's own mistakes first: they are the user's
    if not PROJECT_DEFAULTS.is_file():
        raise PipelineError(f"{path}: lists changes over the project's {DEFAULTS}, not "
                            f"found: {PROJECT_DEFAULTS}")
    try:                                # messages name it as a user types it
        defaults = PROJECT_DEFAULTS.relative_to(Path.cwd())
    except ValueError:
        defaults = PROJECT_DEFAULTS
    flat, origin = _stack(defaults)
    flat.update(changes)
    origin.update(where)
    return flat, origin


def load(path: str | Path, overrides: list[str] = (),
         local: str | Path | None = None) -> dict[str, Any]:
    """Read a params file (over params.yaml when it is another file: `_stack`), then
    the keys of `local` when that file exists (settings of one machine, such as where
    its data is, kept out of git), apply `--set` overrides, and check every value.

    Returns a flat dict {dotted key: value} holding exactly the keys of SCHEMA
    (`settings.of` makes typed settings of it). Messages name the file and line
    (or the --set) a bad value came from.
    """
    flat, origin = _stack(Path(path))
    if local is not None and Path(local).is_file():
        mine, where = _read(Path(local))
        flat.update(mine)
        origin.update(where)
    for text_ in overrides:
        key, value = parse_override(text_)
        if key not in SCHEMA:
            raise _unknown(f"--set {cut(text_)}", key, value)
        flat[key], origin[key] = value, f"--set {cut(text_)}"
    return validate(flat, origin)


def validate(flat: dict[str, Any], origin: dict[str, str]) -> dict[str, Any]:
    """Every key of SCHEMA in `flat` checked (and converted, as `1e-3` to a float);
    messages name where each came from, `origin[key]`. Returns the checked dict."""
    checked = {key: _coerce(key, flat[key], origin[key]) for key in SCHEMA}
    # Built once to check what no single value shows, here rather than when training
    # starts after ingest and preprocess have run.
    problem = settings.of(checked).train.problem()
    if problem:
        key, message = problem
        raise PipelineError(f"{origin[key]}: {message}")
    return checked

"""Typed settings: one frozen dataclass per section of params.yaml.

A field's type is its kind (int, float, str, bool; `str | None` may be null; a
Literal is a choice) and its metadata its range (`rule`). params.py derives from
these what it checks, with file and line in its messages; params.yaml holds every
value, so no field has a default. Adding an option: a field here, its default in
params.yaml, and its use.
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields, is_dataclass, replace
from typing import Any, Callable, Iterator, get_type_hints

from pipeline.nn.schedule import Kind


def rule(expect: str, check: Callable[[Any], bool]) -> Any:
    """A field whose values must pass `check`; `expect` says which do, for messages
    ("train.lr must be a number > 0, found -0.1")."""
    return field(metadata={"expect": expect, "check": check})


@dataclass(frozen=True)
class Data:
    """Kaggle's CSV files, and the bundled sample used when neither exists."""

    train: str
    test: str
    sample: str | None


@dataclass(frozen=True)
class Preprocess:
    """The validation split."""

    val_fraction: float = rule("a number in (0, 1)", lambda v: 0 < v < 1)


@dataclass(frozen=True)
class Train:
    """The network and how it is trained: `train.fit` reads all but members,
    all_rows, cv_folds and distill_epochs, which `train.run` reads. params.yaml says
    what each does."""

    hidden: int = rule("an integer >= 1", lambda v: v >= 1)
    epochs: int = rule("an integer >= 1", lambda v: v >= 1)
    batch_size: int = rule("an integer >= 1", lambda v: v >= 1)
    lr: float = rule("a number > 0", lambda v: v > 0)
    rms_decay: float = rule("a number in (0, 1)", lambda v: 0 < v < 1)
    eps: float = rule("a number > 0", lambda v: v > 0)    # keeps RMSprop's divisor from 0
    l2: float = rule("a number >= 0", lambda v: v >= 0)
    schedule: Kind
    lr_min: float = rule("a number >= 0", lambda v: v >= 0)
    lr_step_epochs: int = rule("an integer >= 1", lambda v: v >= 1)
    lr_step_gamma: float = rule("a number in (0, 1]", lambda v: 0 < v <= 1)
    augment_shift: float = rule("a number of pixels >= 0", lambda v: v >= 0)
    augment_rotate: float = rule("degrees in [0, 180]", lambda v: 0 <= v <= 180)
    augment_scale: float = rule("a number in [0, 1)", lambda v: 0 <= v < 1)
    augment_shear: float = rule("degrees in [0, 90)", lambda v: 0 <= v < 90)
    elastic_alpha: float = rule("a number >= 0", lambda v: v >= 0)
    elastic_sigma: float = rule("a number of pixels > 0", lambda v: v > 0)
    input_dropout: float = rule("a number in [0, 1)", lambda v: 0 <= v < 1)
    max_norm: float = rule("a number >= 0 (0: no limit)", lambda v: v >= 0)
    keep_best: bool
    patience: int = rule("an integer >= 0 (0: no early stopping)", lambda v: v >= 0)
    members: int = rule("an integer >= 1", lambda v: v >= 1)
    all_rows: bool
    cv_folds: int = rule("0 (off) or an integer >= 2", lambda v: v == 0 or v >= 2)
    distill_temperature: float = rule("a number >= 0 (0: off)", lambda v: v >= 0)
    distill_weight: float = rule("a number in [0, 1]", lambda v: 0 <= v <= 1)
    distill_epochs: int = rule("an integer >= 0 (0: train.epochs)", lambda v: v >= 0)

    @classmethod
    def of(cls, flat: dict[str, Any]) -> Train:
        """The train section of checked params {"train.lr": 0.002, ...}."""
        return _build(cls, flat, "train.")

    def plain(self) -> Train:
        """These settings with every option of the training loop off: a constant
        rate, no distortion, dropout, max-norm, epoch choice or distillation; what
        is left is minibatch RMSprop with L2 (PyTorch's side of the benchmark, and
        the tests of one option at a time)."""
        return replace(
            self, schedule="constant", augment_shift=0.0, augment_rotate=0.0,
            augment_scale=0.0, augment_shear=0.0, elastic_alpha=0.0, input_dropout=0.0,
            max_norm=0.0, keep_best=False, patience=0, distill_temperature=0.0)

    def problem(self) -> tuple[str, str] | None:
        """(the dotted key to blame, what is wrong) for the first two fields that
        disagree, or None: checks no single field's range can make."""
        if self.all_rows and (self.keep_best or self.patience):
            return "train.all_rows", (
                "train.all_rows=true trains on the validation rows, so train.keep_best and "
                "train.patience cannot choose epochs on them: expected keep_best false and "
                "patience 0")
        if self.lr_min > self.lr:
            return "train.lr_min", (f"train.lr_min must be at most train.lr ({self.lr}), "
                                    f"found {self.lr_min}")
        return None


@dataclass(frozen=True)
class Predict:
    """Prediction on the test and validation rows."""

    batch_size: int = rule("an integer >= 1", lambda v: v >= 1)
    tta_shift: float = rule("a number of pixels in [0, 3] (0: off)", lambda v: 0 <= v <= 3)


@dataclass(frozen=True)
class Cache:
    """The run cache of trained models. Read by the cache only, so no step's
    fingerprint holds it: it changes no output."""

    max_mb: float = rule("a number of megabytes >= 0 (0: no cache)", lambda v: v >= 0)


@dataclass(frozen=True)
class Settings:
    """Every setting of the pipeline, as params.yaml lays them out."""

    seed: int = rule("an integer >= 0", lambda v: v >= 0)
    outputs: str
    data: Data
    preprocess: Preprocess
    train: Train
    predict: Predict
    cache: Cache


def leaves(cls: type = Settings, prefix: str = "") -> Iterator[tuple[str, type, dict]]:
    """(dotted key, type, metadata) of every setting under `cls`, in params.yaml's
    order: ("seed", int, {...}), ..., ("train.lr", float, {...}), ..."""
    types = get_type_hints(cls)            # the annotations are strings (PEP 563)
    for f in fields(cls):
        if is_dataclass(types[f.name]):
            yield from leaves(types[f.name], f"{prefix}{f.name}.")
        else:
            yield prefix + f.name, types[f.name], dict(f.metadata)


def of(flat: dict[str, Any]) -> Settings:
    """Settings from checked params {"seed": 0, ..., "train.lr": 0.002, ...}, as
    params.load returns them."""
    return _build(Settings, flat, "")


def _build(cls: type, flat: dict[str, Any], prefix: str) -> Any:
    types = get_type_hints(cls)
    return cls(**{f.name: _build(types[f.name], flat, f"{prefix}{f.name}.")
                  if is_dataclass(types[f.name]) else flat[prefix + f.name]
                  for f in fields(cls)})

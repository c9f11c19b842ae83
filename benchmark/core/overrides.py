"""Settings given by name (`--set admm.rho=0.01`, a YAML file, a preset's values), checked and applied.

A setting is `<section>.<field>` for the core sections (pretrain, finetune, train_attack, eval_attack, eval),
a top-level field (train_examples, eval_examples), or `<group>.<field>` for a plug-in's settings group. Old
spellings (`admm_rho`, `prune.epochs`) are aliases declared by the group that owns them. Values are checked
against the field's type (an int field refuses 2.7 and "yes", a bool field refuses "maybe", None only where
the field is optional), its choices and its lower bound; a bad one is a one-line UserError.
"""

from __future__ import annotations

import dataclasses
import difflib
import typing
from collections.abc import Mapping
from typing import Any

from benchmark.core.config import _NESTED, SETTINGS, RunConfig, schema_fields
from benchmark.core.errors import UserError

GRID_OPTIONS = {"dataset": "--data", "arch": "--arch", "objective": "--objective",
                "pretrain_objective": "--pretrain-objective", "method": "--methods", "sparsity": "--sparsity",
                "scope": "--scope", "seed": "--seeds", "preset": "--preset", "budget": "--budget"}

_TOP_LEVEL = {f.name for f in dataclasses.fields(RunConfig)} - set(GRID_OPTIONS) - set(_NESTED) - {"groups"}


def setting_names() -> list[str]:
    """Every setting's dotted name, as `--set` takes it."""
    return [path.removeprefix("groups.") for path, _ in schema_fields() if path.split(".")[0] not in GRID_OPTIONS]


def flatten(values: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"pretrain": {"epochs": 3}} -> {"pretrain.epochs": 3}; dotted keys pass through."""
    out: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, Mapping):
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def canonical(name: str) -> str:
    """The current spelling of a setting: groups' aliases applied (`admm_rho` -> `admm.rho`)."""
    for group in SETTINGS.names():
        for old, new in SETTINGS.get(group).aliases.items():
            if name == old or name.startswith(f"{old}."):
                return new + name[len(old):]
    return name


def apply_settings(cfg: RunConfig, settings: Mapping[str, Any], source: str) -> RunConfig:
    """A copy of cfg with the (nested or dotted) settings applied, in order; nothing is mutated."""
    for name, value in flatten(settings).items():
        cfg = _apply(cfg, canonical(name), value, source)
    return cfg


def _apply(cfg: RunConfig, name: str, value: Any, source: str) -> RunConfig:
    head, _, rest = name.partition(".")
    if head in GRID_OPTIONS:
        raise UserError(f"{source}: {head!r} is a grid option, not a setting: use {GRID_OPTIONS[head]} "
                        f"(or the `{GRID_OPTIONS[head].removeprefix('--').replace('-', '_')}` key of a YAML file)")
    if head in SETTINGS and rest:
        group = _replace_field(cfg.settings_of(head), rest, value, name, source)
        return cfg.replace(groups={**cfg.groups, head: group})
    if head in _NESTED and rest:
        return cfg.replace(**{head: _replace_field(getattr(cfg, head), rest, value, name, source)})
    if not rest and head in _TOP_LEVEL:
        return _replace_field(cfg, head, value, name, source)
    raise unknown_setting(name, source)


def unknown_setting(name: str, source: str) -> UserError:
    close = difflib.get_close_matches(name, setting_names(), n=3, cutoff=0.5)
    hint = f"; closest: {', '.join(close)}" if close else "; `python -m benchmark list settings` lists them"
    return UserError(f"{source}: unknown setting {name!r}{hint}")


def _replace_field(obj: Any, leaf: str, value: Any, name: str, source: str) -> Any:
    spec = {f.name: f for f in dataclasses.fields(obj)}.get(leaf)
    if spec is None:
        raise unknown_setting(name, source)
    hints = typing.get_type_hints(type(obj))
    return dataclasses.replace(obj, **{leaf: check_value(value, hints[leaf], spec, f"{source}: {name}")})


def check_value(value: Any, annotation: Any, spec: dataclasses.Field, what: str) -> Any:
    """`value` as the field's type, or a UserError naming `what`; list fields also take "a,b,c"."""
    args = typing.get_args(annotation)
    optional = type(None) in args
    if value is None:
        if optional:
            return None
        raise UserError(f"{what} cannot be null")
    kind = next((a for a in args if a is not type(None)), annotation) if optional else annotation
    if typing.get_origin(kind) is list:
        (element,) = typing.get_args(kind)
        items = [v.strip() for v in value.split(",") if v.strip()] if isinstance(value, str) else value
        if not isinstance(items, list | tuple):
            raise UserError(f"{what} needs a list, got {value!r}")
        return [_scalar(from_text(v, element), element, spec, what) for v in items]
    return _scalar(from_text(value, kind), kind, spec, what)  # YAML reads 1e-3 (no dot) as a string


def from_text(value: Any, kind: type) -> Any:
    """A value written as text (a flag's, or "0.5" in "0.5,1") read as a number where the field wants one."""
    if isinstance(value, str) and kind in (int, float):
        try:
            return kind(value)
        except ValueError:
            return value
    return value


def _scalar(value: Any, kind: type, spec: dataclasses.Field, what: str) -> Any:
    ok = {bool: isinstance(value, bool),
          int: isinstance(value, int) and not isinstance(value, bool),
          float: isinstance(value, int | float) and not isinstance(value, bool),
          str: isinstance(value, str)}.get(kind, True)
    if not ok:
        raise UserError(f"{what} needs {'an' if kind is int else 'a'} {kind.__name__}, got {value!r}")
    value = float(value) if kind is float else value
    choices, minimum = spec.metadata.get("choices"), spec.metadata.get("minimum")
    if choices and value not in choices:
        raise UserError(f"{what} must be one of {', '.join(map(str, choices))}, got {value!r}")
    if minimum is not None and value < minimum:
        raise UserError(f"{what} must be at least {minimum:g}, got {value!r}")
    return value

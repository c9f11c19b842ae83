"""What `python -m benchmark list` shows: every registry with one line per entry, and every setting."""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Callable
from typing import Any

from benchmark.core.config import SETTINGS, RunConfig, schema_fields
from benchmark.core.data import DATASETS
from benchmark.core.models import ARCHS
from benchmark.core.overrides import GRID_OPTIONS
from benchmark.core.presets import PRESETS
from benchmark.core.registry import Registry
from benchmark.evaluation.evaluators import EVALUATORS
from benchmark.training.objectives import OBJECTIVES
from methods import METHODS


def registries() -> dict[str, tuple[Registry[Any], Callable[[Any], str]]]:
    return {
        "methods": (METHODS, lambda c: f"{c.description} [{c.taxonomy.line()}]"),
        "datasets": (DATASETS, lambda d: f"{d.description} ({'x'.join(map(str, d.input_shape))}, "
                                         f"{d.num_classes} classes, eps {d.eps:.4g}, verification eps "
                                         f"{d.verify_eps:.4g}, arch {d.default_arch})"),
        "archs": (ARCHS, lambda a: a.description),
        "objectives": (OBJECTIVES, lambda o: o.description),
        "presets": (PRESETS, lambda p: p.description),
        "evaluators": (EVALUATORS, lambda e: e.description),
    }


def settings_lines() -> list[str]:
    """One line per setting: its `--set` name, type, default and help; plug-in groups name their users."""
    lines = ["settings (--set NAME=VALUE; the preset's values override these defaults):"]
    for path, f in schema_fields():
        head = path.split(".")[0]
        if head in GRID_OPTIONS:
            continue
        name = path.removeprefix("groups.")
        group = name.split(".")[0]
        users = f" [{SETTINGS.get(group).role} {', '.join(sorted(SETTINGS.get(group).users))}]" \
            if group in SETTINGS else ""
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        lines.append(f"  {name:<32} {_type_name(path, f):<12} {default!s:<12} {f.metadata.get('help', '')}{users}")
    return lines


def _type_name(path: str, f: dataclasses.Field) -> str:
    owner = RunConfig
    parts = path.split(".")
    if parts[0] == "groups":
        owner = SETTINGS.get(parts[1]).cls
    elif len(parts) == 2:
        owner = typing.get_type_hints(RunConfig)[parts[0]]
    return str(typing.get_type_hints(owner)[f.name]).replace("typing.", "").replace("<class '", "").replace("'>", "")

"""The grid spec and run options: what to run and where, as typed fields with a help line each.

The command line's options and a YAML file's keys are both generated from these fields (`add_arguments`,
`spec_from`), so they never drift apart. This module imports no torch: `--help` stays fast.
Resolution into cell configs is `benchmark.grid.resolve`.
"""

from __future__ import annotations

import argparse
import dataclasses
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmark.core.config import BUDGETS, setting
from benchmark.core.errors import UserError
from benchmark.core.overrides import check_value, flatten, from_text


@dataclass
class GridSpec:
    """What to run. Lists take commas or spaces on the command line."""

    methods: list[str] | None = setting(None, help="pruning methods (default: every registered one)")
    data: str = setting("digits", help="dataset")
    arch: str | None = setting(None, help="architecture (default: the dataset's)")
    objective: str = setting("trades", help="training objective of every phase")
    pretrain_objective: str | None = setting(None, help="objective of the dense pretraining, if different")
    sparsity: list[float] = setting(default_factory=lambda: [0.9, 0.95, 0.99], help="target sparsities in [0, 1)")
    seeds: list[int] = setting(default_factory=lambda: [0], help="seeds")
    scope: str = setting("layer", choices=("layer", "global"),
                         help="the same sparsity per layer, or one global threshold")
    preset: str = setting("quick", help="budgets: smoke | quick | paper")
    budget: str = setting("preset", choices=BUDGETS,
                          help="preset: the preset's epochs for every method; equal-passes: every method's training "
                               "raised to the forward/backward passes of the costliest method at that sparsity")
    eval: list[str] | None = setting(None, help="evaluators in cascade order, also torchattacks:<Attack> "
                                                "(default: the preset's, e.g. clean pgd autoattack)")
    amp: str | None = setting(None, choices=("fp32", "bf16"), help="training precision: bf16 autocast of training "
                                                                   "and its attacks; in the run key (default: fp32)")
    settings: dict[str, Any] = field(default_factory=dict)  # dotted name -> value, later entries win


@dataclass
class RunOptions:
    """Where results and data are, and how the grid runs; none of it enters a key."""

    out: Path = setting(Path("runs"), help="store and run folders")
    data_dir: Path | None = setting(None, help="where datasets are (or are downloaded to)")
    download: bool = setting(False, help="download the dataset if it is not found")
    device: str = setting("auto", choices=("auto", "cpu", "cuda"), help="where to train and evaluate")
    workers: int = setting(0, minimum=0, help="data-loading worker processes (for augmented image datasets "
                                              "on a GPU)")
    quiet: bool = setting(False, help="no progress bars or status lines")
    dry_run: bool = setting(False, help="print the grid and what is done; run nothing")
    ddp: bool = setting(False, help="train each cell with DistributedDataParallel over the processes of "
                                    "`torchrun --nproc-per-node N -m benchmark run ...`")
    channels_last: bool = setting(False, help="train in the channels-last memory format (speed only)")
    compile: bool = setting(False, help="torch.compile the model for training (speed only)")
    executor: str = setting("local", choices=("local", "ray"),
                            help="run cells in this process one after another, or as Ray tasks")
    ray_address: str | None = setting(None, help="join a running Ray cluster: auto or HOST:PORT (default: start "
                                                 "a local Ray runtime); --executor ray only")
    gpus_per_cell: float | None = setting(None, minimum=0, help="GPUs each Ray task asks for, may be a fraction "
                                                                "(default: 1 when CUDA is present, else 0)")
    cpus_per_cell: int | None = setting(None, minimum=1, help="CPUs each Ray task asks for, and its torch "
                                                              "threads (default: 1)")
    retries: int | None = setting(None, minimum=0, help="times a unit whose Ray worker died is run again "
                                                        "(default: 0: its cells are recorded as failed)")

    def check_executor(self) -> None:
        """The Ray options mean nothing to the local executor: say so rather than ignore them."""
        given = [f"--{n.replace('_', '-')}" for n in RAY_OPTIONS if getattr(self, n) is not None]
        if self.executor != "ray" and given:
            raise UserError(f"{', '.join(given)} {'is' if len(given) == 1 else 'are'} for --executor ray")


RAY_OPTIONS = ("ray_address", "gpus_per_cell", "cpus_per_cell", "retries")


def option_fields(cls: type) -> dict[str, dataclasses.Field]:
    """The fields of GridSpec or RunOptions that are options (not the settings mapping)."""
    return {f.name: f for f in dataclasses.fields(cls) if f.name != "settings"}


def add_arguments(parser: argparse.ArgumentParser, cls: type, only: tuple[str, ...] | None = None) -> None:
    """One command-line option per field of `cls`, from its type and help line. argparse's defaults are None,
    so a YAML file's value stands unless a flag is given; the dataclass holds the real defaults."""
    hints = typing.get_type_hints(cls)
    for name, f in option_fields(cls).items():
        if only is not None and name not in only:
            continue
        kind = _unwrap(hints[name])
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        shown = f" (default: {_shown(default)})" if default not in (None, False) else ""
        flag, help_line = f"--{name.replace('_', '-')}", f.metadata.get("help", "") + shown
        if kind is bool:
            parser.add_argument(flag, action="store_true", default=None, help=help_line)
        elif typing.get_origin(kind) is list:
            parser.add_argument(flag, nargs="+", metavar=name.upper(), help=help_line)
        else:
            parser.add_argument(flag, choices=f.metadata.get("choices"), type=Path if kind is Path else None,
                                metavar=None if f.metadata.get("choices") else name.upper(), help=help_line)


def spec_from(options: Mapping[str, Any], source: str) -> tuple[GridSpec, RunOptions]:
    """Grid spec and run options from option names (dashes or underscores) and settings (nested sections like
    `finetune: {epochs: 5}`, or dotted names), in order; values are checked against the fields' types."""
    classes = {name: cls for cls in (GridSpec, RunOptions) for name in option_fields(cls)}
    values: dict[type, dict[str, Any]] = {GridSpec: {}, RunOptions: {}}
    settings: dict[str, Any] = {}
    for raw, value in options.items():
        name = raw.replace("-", "_")
        if name in classes and not isinstance(value, Mapping):
            cls = classes[name]
            f = option_fields(cls)[name]
            values[cls][name] = _option_value(value, typing.get_type_hints(cls)[name], f, f"{source}: {raw}")
        else:  # a setting; an unknown name fails at resolution with the closest valid ones
            settings.update(flatten({raw: value}))
    return GridSpec(**values[GridSpec], settings=settings), RunOptions(**values[RunOptions])


def _option_value(value: Any, kind: Any, f: dataclasses.Field, what: str) -> Any:
    if _unwrap(kind) is Path:
        return None if value is None else Path(str(value))
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        value = ",".join(value)  # `--sparsity 0.9 0.95` and `--sparsity 0.9,0.95` alike
    return check_value(from_text(value, _unwrap(kind)), kind, f, what)


def _unwrap(kind: Any) -> Any:
    """X for `X | None`, else the annotation itself."""
    args = [a for a in typing.get_args(kind) if a is not type(None)]
    return args[0] if type(None) in typing.get_args(kind) and len(args) == 1 else kind


def _shown(value: Any) -> str:
    return " ".join(map(str, value)) if isinstance(value, list) else str(value)

"""Checkpoint layouts: how the code the field shares names the state_dict of an architecture rpbench has.

A layout renames a foreign state_dict's keys into rpbench's names for the model's body (everything after the
`Normalize` layer) and says which input normalization that code applies. Loading stays strict: a layout fits
only when the renamed keys are exactly the body's keys, with the body's shapes. Layouts, in the order tried:

- `rpbench`: rpbench's own export, the `Normalize` buffers included (they are the default normalization);
- `body`: the body alone under rpbench's names: torchvision's ResNet-50, HYDRA's and other papers' VGG and
  Sequential models (a flat Sequential indexed from 0); the dataset's mean/std by default;
- `kuangliu`: kuangliu/pytorch-cifar and RobustBench ResNet-18 and PreAct ResNet-18 (`linear` classifier);
  raw [0, 1] inputs by default (RobustBench's convention; AutoAttack's example model);
- `robustbench-wrn`: TRADES/RobustBench WideResNets (`block1.layer.0`, `convShortcut`, `bn1`, `fc`), with
  the unused `sub_block1` of TRADES and HYDRA dropped (it is never called in forward); raw [0, 1] inputs.

HYDRA's subnet checkpoints (a `popup_scores` tensor beside each conv/linear weight) are first turned into plain
weights by `apply_popup_scores`, then matched like any other file.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from benchmark.core.errors import UserError
from benchmark.core.mask import keep_top

WRAPPERS = ("net", "state_dict", "model")  # kuangliu's {'net', 'acc', 'epoch'}; HYDRA's and others' dicts
PARALLEL_PREFIX = "module."
SCORES = "popup_scores"
SHOWN = 3  # keys named per kind of mismatch in the one-line error


def unwrap(state: Any, source: Path) -> dict[str, Tensor]:
    """The state_dict inside a checkpoint file's object, without DataParallel's `module.` prefix."""
    if isinstance(state, dict):
        for key in WRAPPERS:
            if isinstance(state.get(key), dict):
                state = state[key]
                break
    if not isinstance(state, dict) or not state or not all(isinstance(v, Tensor) for v in state.values()):
        raise UserError(f"{source} holds no state_dict of tensors (nor one under {', '.join(WRAPPERS)})")
    return {k.removeprefix(PARALLEL_PREFIX): v for k, v in state.items()}


def has_popup_scores(state: Mapping[str, Tensor]) -> bool:
    return any(k.endswith(f".{SCORES}") for k in state)


def apply_popup_scores(state: Mapping[str, Tensor], k: float, source: Path) -> dict[str, Tensor]:
    """HYDRA's subnet layers as plain weights: each weight times the mask its layer's scores imply at the kept
    fraction k, the scores dropped (HYDRA's `subnet_to_dense`). The mask is HYDRA's `GetSubnet`: per layer,
    the n - int((1 - k) * n) largest |popup_scores| are kept (../shared/reference/hydra_protocol.md, 1.2)."""
    if not 0.0 < k <= 1.0:
        raise UserError(f"--hydra-k is the kept fraction, in (0, 1]; got {k}")
    plain = {name: t for name, t in state.items() if not name.endswith(f".{SCORES}")}
    for name, scores in state.items():
        if not name.endswith(f".{SCORES}"):
            continue
        weight = name.removesuffix(SCORES) + "weight"
        if weight not in state or state[weight].shape != scores.shape:
            raise UserError(f"{source}: {name} has no weight of its shape beside it ({weight})")
        n = scores.numel()
        keep = keep_top(scores.abs().flatten(), n - int((1 - k) * n)).view_as(scores)
        plain[weight] = state[weight].masked_fill(~keep, 0.0)
    return plain


# ------------------------------------------------------------------------------------------------ layouts


@dataclass(frozen=True)
class Layout:
    """name: shown in errors and records. archs: the rpbench archs it can fit (None: any). whole: the keys
    are the whole model's (Normalize included), else the body's. normalization: the default, one of
    `checkpoint` (the file's own buffers), `dataset`, `none`. rename: foreign key -> rpbench key, or None to
    drop a key the architecture never uses."""

    name: str
    archs: tuple[str, ...] | None
    normalization: str
    rename: Callable[[str], str | None] = lambda key: key
    whole: bool = False


def _kuangliu(key: str) -> str:
    return "fc." + key.removeprefix("linear.") if key.startswith("linear.") else key


_WRN_BLOCK = re.compile(r"^(block\d)\.layer\.(\d+)\.")


def _robustbench_wrn(key: str) -> str | None:
    if key.startswith("sub_block1."):
        return None
    if key.startswith("bn1."):
        return "bn." + key.removeprefix("bn1.")
    return _WRN_BLOCK.sub(r"\1.\2.", key).replace(".convShortcut.", ".shortcut.")


WRN_ARCHS = ("wrn-28-4", "wrn-28-10", "wrn-34-10")

LAYOUTS: tuple[Layout, ...] = (
    Layout("rpbench", None, "checkpoint", whole=True),
    Layout("body", None, "dataset"),
    Layout("kuangliu", ("resnet18", "preact-resnet18"), "none", _kuangliu),
    Layout("robustbench-wrn", WRN_ARCHS, "none", _robustbench_wrn),
)


def body_of(model: nn.Sequential) -> nn.Module:
    """The model without its Normalize layer: the body module, or for a flat Sequential a view indexed from 0
    that shares the model's modules (so loading into it loads into the model)."""
    return model[1] if len(model) == 2 else nn.Sequential(*list(model)[1:])


@dataclass(frozen=True)
class Misfit:
    """How a renamed state_dict differs from the target's: keys missing, unexpected, of another shape."""

    missing: list[str]
    unexpected: list[str]
    reshaped: list[str]

    @property
    def size(self) -> int:
        return len(self.missing) + len(self.unexpected) + len(self.reshaped)

    def line(self) -> str:
        parts = [f"{len(keys)} {what} ({_first(keys)})" for what, keys in
                 (("missing", self.missing), ("unexpected", self.unexpected), ("of another shape", self.reshaped))
                 if keys]
        return ", ".join(parts)


def _first(keys: Sequence[str]) -> str:
    return ", ".join(keys[:SHOWN]) + (", ..." if len(keys) > SHOWN else "")


def misfit(state: Mapping[str, Tensor], target: Mapping[str, Tensor]) -> Misfit:
    return Misfit(missing=[k for k in target if k not in state], unexpected=[k for k in state if k not in target],
                  reshaped=[k for k in target if k in state and state[k].shape != target[k].shape])


def load_into(model: nn.Sequential, state: Mapping[str, Tensor], arch: str, source: Path) -> Layout:
    """Load `state` strictly into `model` (built as `arch`) under the first layout it fits; which one it was.
    No fit: one line naming the nearest layout's first few differing keys and their counts."""
    tried: list[tuple[Misfit, Layout]] = []
    for layout in LAYOUTS:
        if layout.archs is not None and arch not in layout.archs:
            continue
        renamed = {new: v for k, v in state.items() if (new := layout.rename(k)) is not None}
        target = model if layout.whole else body_of(model)
        difference = misfit(renamed, target.state_dict())
        if difference.size == 0:
            target.load_state_dict(renamed, strict=True)
            return layout
        tried.append((difference, layout))
    difference, nearest = min(tried, key=lambda pair: pair[0].size)
    raise UserError(f"{source} does not fit arch {arch!r} in any layout rpbench reads "
                    f"({', '.join(layout.name for _, layout in tried)}); nearest, {nearest.name}: {difference.line()}")


# ---------------------------------------------------------------------------------------------- normalize


@dataclass(frozen=True)
class Normalization:
    """The mean and std of the model's input layer, per channel, in [0, 1] pixel units."""

    mean: tuple[float, ...]
    std: tuple[float, ...]

    def __post_init__(self) -> None:
        # the values the float32 buffers hold, so that a given normalization equals the one a file stores
        for name in ("mean", "std"):
            object.__setattr__(self, name, tuple(torch.tensor(getattr(self, name), dtype=torch.float32).tolist()))

    @classmethod
    def identity(cls, channels: int) -> Normalization:
        return cls((0.0,) * channels, (1.0,) * channels)

    @classmethod
    def of(cls, layer: nn.Module) -> Normalization:
        return cls(tuple(layer.mean.flatten().tolist()), tuple(layer.std.flatten().tolist()))

    def describe(self) -> str:
        if self == Normalization.identity(len(self.mean)):
            return "none"
        return f"mean {_numbers(self.mean)} std {_numbers(self.std)}"

    @torch.no_grad()
    def install(self, layer: nn.Module) -> None:
        """Set a `Normalize` layer's buffers to these values."""
        layer.mean.copy_(torch.tensor(self.mean).view_as(layer.mean))
        layer.std.copy_(torch.tensor(self.std).view_as(layer.std))


def _numbers(values: Sequence[float]) -> str:
    return ",".join(f"{v:.6g}" for v in values)


NORMALIZE_HELP = "dataset, none, or MEAN,STD (two numbers for every channel, or the C means then the C stds)"


def parse_normalize(text: str, dataset_mean: Sequence[float], dataset_std: Sequence[float]) -> Normalization:
    """`--normalize`'s value for a dataset with these statistics (their length is the channel count)."""
    channels = len(dataset_mean)
    if text == "dataset":
        return Normalization(tuple(dataset_mean), tuple(dataset_std))
    if text == "none":
        return Normalization.identity(channels)
    try:
        numbers = [float(part) for part in text.split(",")]
    except ValueError:
        numbers = []
    if len(numbers) == 2:
        numbers = [numbers[0]] * channels + [numbers[1]] * channels
    if len(numbers) != 2 * channels:
        raise UserError(f"--normalize takes {NORMALIZE_HELP} ({channels} channels here); got {text!r}")
    mean, std = tuple(numbers[:channels]), tuple(numbers[channels:])
    if not all(math.isfinite(v) for v in numbers) or not all(s > 0 for s in std):
        raise UserError(f"--normalize: mean and std must be finite and std positive; got {text!r}")
    return Normalization(mean, std)

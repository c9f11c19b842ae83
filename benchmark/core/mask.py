"""Masks as data: a validated mapping from prunable parameter name to a boolean keep-tensor.

Prunable means the weight of every nn.Conv2d and nn.Linear, first and last layers included; biases and
BatchNorm are never pruned (see DESIGN.md, "sparsity").
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from pathlib import Path

import torch
from torch import Tensor, nn

from benchmark.core.errors import UserError

PRUNABLE_TYPES = (nn.Conv2d, nn.Linear)
SCOPES = ("layer", "global")


def prunable_modules(model: nn.Module) -> dict[str, nn.Module]:
    """Module name -> conv/linear module, in definition order."""
    return {name: m for name, m in model.named_modules() if isinstance(m, PRUNABLE_TYPES)}


def prunable_weights(model: nn.Module) -> dict[str, Tensor]:
    """Parameter name ("features.0.weight") -> the module's effective weight tensor."""
    return {f"{name}.weight": m.weight for name, m in prunable_modules(model).items()}


def kept_count(n: int, sparsity: float) -> int:
    """Weights kept out of n: n - floor(sparsity * n), HYDRA's rule (never below (1 - sparsity) * n).

    The small epsilon keeps binary rounding (0.29 * 100 = 28.999...) from dropping a weight.
    """
    return n - math.floor(sparsity * n + 1e-9)


def check_sparsity(sparsity: float) -> float:
    if not 0.0 <= sparsity < 1.0:
        raise UserError(f"sparsity must be in [0, 1), got {sparsity}")
    return sparsity


class Mask(Mapping[str, Tensor]):
    """Parameter name -> bool tensor (True = kept). Immutable once built."""

    def __init__(self, tensors: Mapping[str, Tensor]) -> None:
        for name, t in tensors.items():
            if t.dtype != torch.bool:
                raise ValueError(f"mask for {name} must be bool, got {t.dtype}")
        self._tensors = {name: t.detach() for name, t in tensors.items()}

    def __getitem__(self, name: str) -> Tensor:
        return self._tensors[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._tensors)

    def __len__(self) -> int:
        return len(self._tensors)

    def to(self, device: torch.device | str) -> Mask:
        return Mask({n: t.to(device) for n, t in self._tensors.items()})

    def validate(self, model: nn.Module) -> None:
        """The mask covers exactly the model's prunable weights, with matching shapes."""
        weights = prunable_weights(model)
        if set(weights) != set(self._tensors):
            missing = sorted(set(weights) - set(self._tensors))
            extra = sorted(set(self._tensors) - set(weights))
            raise ValueError(f"mask does not fit the model: missing {missing}, unexpected {extra}")
        for name, w in weights.items():
            if w.shape != self._tensors[name].shape:
                raise ValueError(f"mask for {name} has shape {tuple(self[name].shape)}, weight {tuple(w.shape)}")

    @property
    def total(self) -> int:
        return sum(t.numel() for t in self._tensors.values())

    @property
    def kept(self) -> int:
        return sum(int(t.sum()) for t in self._tensors.values())

    def sparsity(self) -> float:
        return 1.0 - self.kept / self.total

    def kept_per_layer(self) -> dict[str, list[int]]:
        """Parameter name -> [kept, total] weights."""
        return {n: [int(t.sum()), t.numel()] for n, t in self._tensors.items()}

    @torch.no_grad()
    def apply_(self, model: nn.Module) -> None:
        """Zero every masked weight in place (called after every optimizer step)."""
        for name, w in prunable_weights(model).items():
            w.mul_(self._tensors[name])

    def save(self, path: Path) -> None:
        from benchmark.core.io import atomic_save

        atomic_save({n: t.cpu() for n, t in self._tensors.items()}, path)

    @classmethod
    def load(cls, path: Path) -> Mask:
        from benchmark.core.io import safe_load

        return cls(safe_load(path))


def topk_mask(scores: Mapping[str, Tensor], sparsity: float, scope: str) -> Mask:
    """Keep the largest scores: per layer (`layer`, kept_count of each) or across all layers (`global`).

    topk keeps exactly k entries even with ties, so the sparsity is exact.
    """
    check_sparsity(sparsity)
    if scope == "layer":
        return Mask({n: keep_top(s.flatten(), kept_count(s.numel(), sparsity)).view_as(s) for n, s in scores.items()})
    if scope == "global":
        flat = torch.cat([s.detach().flatten() for s in scores.values()])
        keep = keep_top(flat, kept_count(flat.numel(), sparsity))
        parts = keep.split([s.numel() for s in scores.values()])
        return Mask({n: p.view_as(s) for (n, s), p in zip(scores.items(), parts, strict=True)})
    raise UserError(f"unknown scope {scope!r}; valid: {', '.join(SCOPES)}")


def keep_top(flat: Tensor, k: int) -> Tensor:
    """A bool tensor of flat's shape, True at its k largest entries."""
    keep = torch.zeros(flat.numel(), dtype=torch.bool, device=flat.device)
    if k > 0:
        keep[torch.topk(flat.detach(), k, sorted=False).indices] = True
    return keep


def magnitude_mask(model: nn.Module, sparsity: float, scope: str) -> Mask:
    """Least-weight-magnitude mask of the model's current weights."""
    return topk_mask({n: w.detach().abs() for n, w in prunable_weights(model).items()}, sparsity, scope)


def dense_mask(model: nn.Module) -> Mask:
    return Mask({n: torch.ones_like(w, dtype=torch.bool) for n, w in prunable_weights(model).items()})

"""HYDRA (Sehwag et al., NeurIPS 2020): learn one importance score per weight under the robust loss.

In the prune phase every conv/linear weight is wrapped by a torch parametrization, so the module's
`.weight` is the effective weight `W * keep(scores)` and attacks, the loss and bound propagation all read
it through ordinary modules (DESIGN.md, property 5). The keep-mask is the top-(1 - sparsity) |score| of
each layer (or across layers with scope "global"); the gradient passes straight through the top-k to the
scores: dL/ds = sign(s) * dL/dW_eff * W, for pruned weights too, so they can come back.

The mask is recomputed only when a score tensor changed (its autograd version counter moved), i.e. once
per optimizer step, not on every forward pass of every attack step as the official code does; and the
training loop reads parametrized weights under `parametrize.cached()`, so even the product W * keep is
formed once per step.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

from benchmark.core.config import SettingsGroup, TrainSettings
from benchmark.core.mask import Mask, prunable_modules, topk_mask
from benchmark.core.presets import PresetContext
from benchmark.training.loop import Phase
from methods.base import Pruner, Taxonomy, register_method


class _StraightThroughMask(torch.autograd.Function):
    """Forward W * keep; backward passes the gradient to the scores as if keep were |s|."""

    @staticmethod
    def forward(ctx, weight: Tensor, scores: Tensor, keep: Tensor) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(weight, scores, keep)
        return weight * keep

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor | None, Tensor | None, None]:  # type: ignore[override]
        weight, scores, keep = ctx.saved_tensors
        grad_weight = grad * keep if ctx.needs_input_grad[0] else None
        grad_scores = grad * weight * scores.sign() if ctx.needs_input_grad[1] else None
        return grad_weight, grad_scores, None


class ScoreSet:
    """The scores of all prunable layers and their current keep-masks, recomputed together on change."""

    def __init__(self, sparsity: float, scope: str) -> None:
        self.sparsity = sparsity
        self.scope = scope
        self.scores: dict[str, nn.Parameter] = {}
        self._versions: tuple[int, ...] = ()
        self._keep: dict[str, Tensor] = {}

    def keep(self, name: str, dtype: torch.dtype) -> Tensor:
        """The layer's current keep-mask as 0/1 of the weight's dtype."""
        versions = tuple(s._version for s in self.scores.values())
        if not self._keep or versions != self._versions:
            with torch.no_grad():
                mask = topk_mask({n: s.abs() for n, s in self.scores.items()}, self.sparsity, self.scope)
            self._keep = {n: m.to(dtype) for n, m in mask.items()}
            self._versions = versions
        return self._keep[name]


class ScoredWeight(nn.Module):
    """Parametrization of one layer's weight by its importance scores."""

    def __init__(self, name: str, scores: Tensor, score_set: ScoreSet) -> None:
        super().__init__()
        self.name = name
        self.scores = nn.Parameter(scores)
        object.__setattr__(self, "_score_set", score_set)  # shared, not a submodule

    def forward(self, weight: Tensor) -> Tensor:
        keep = self._score_set.keep(self.name, weight.dtype)
        return _StraightThroughMask.apply(weight, self.scores, keep)


def scaled_score_init(weight: Tensor) -> Tensor:
    """HYDRA's s = sqrt(6 / fan_in) * W / max|W|: the initial mask is the magnitude mask."""
    fan_in = weight[0].numel()
    return math.sqrt(6.0 / fan_in) * weight.detach() / weight.detach().abs().max().clamp_min(1e-12)


@dataclass
class HydraSettings(TrainSettings):
    """The prune phase: the optimiser of the scores (and BatchNorm's affine parameters) and its budget."""


def hydra_budget(ctx: PresetContext) -> dict[str, Any]:
    """HYDRA's prune phase: 20 epochs at lr 0.1 (bound-based: Adam at 1e-5). `quick` prunes bound-based runs at
    1e-3, since 1e-5 moves the scores too little in 3 short epochs."""
    if ctx.preset == "smoke":
        return {"epochs": 1, "lr": 0.1, **ctx.batch}
    if ctx.bound_based:
        return {"epochs": 3 if ctx.preset == "quick" else 20, "lr": 1e-3 if ctx.preset == "quick" else 1e-5,
                **ctx.adam, **ctx.batch}
    return {"epochs": 20 if ctx.preset == "paper" else 10 if ctx.small else 5, "lr": 0.1}


@register_method
class Hydra(Pruner):
    name = "hydra"
    description = "importance scores trained by SGD under the robust loss, scaled magnitude init, then finetune"
    taxonomy = Taxonomy("after training", "one-shot", "unstructured", "local or global",
                        "learned importance scores (robust ERM)")
    settings_group = SettingsGroup("hydra", HydraSettings, "method", budget=hydra_budget, aliases={"prune": "hydra"})

    def __init__(self, sparsity: float, scope: str, settings: HydraSettings | None = None) -> None:
        super().__init__(sparsity, scope, settings or HydraSettings())
        self._score_set: ScoreSet | None = None

    def phases(self) -> list[Phase]:
        return [Phase("prune", self.settings)]

    def prepare(self, model: nn.Module, phase: Phase) -> None:
        self._score_set = ScoreSet(self.sparsity, self.scope)
        for module_name, module in prunable_modules(model).items():
            name = f"{module_name}.weight"
            param = ScoredWeight(name, scaled_score_init(module.weight), self._score_set)
            self._score_set.scores[name] = param.scores
            parametrize.register_parametrization(module, "weight", param)
            module.parametrizations.weight.original.requires_grad_(False)
            if module.bias is not None:
                module.bias.requires_grad_(False)

    def trainable(self, model: nn.Module, phase: Phase) -> Iterable[nn.Parameter]:
        """Scores, and BatchNorm's affine parameters as in the official code; weights and biases are frozen."""
        assert self._score_set is not None, "prepare() first"
        bn = [p for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) for p in m.parameters()]
        return list(self._score_set.scores.values()) + bn

    def mask(self, model: nn.Module) -> Mask:
        assert self._score_set is not None, "prepare() first"
        scores = {n: s.detach().abs() for n, s in self._score_set.scores.items()}
        return topk_mask(scores, self.sparsity, self.scope)

    def release(self, model: nn.Module) -> None:
        for module in prunable_modules(model).values():
            if parametrize.is_parametrized(module, "weight"):
                parametrize.remove_parametrizations(module, "weight", leave_parametrized=False)
        for p in model.parameters():
            p.requires_grad_(True)
        self._score_set = None

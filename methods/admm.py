"""Robustness-aware ADMM pruning (Ye et al., ICCV 2019, "Adversarial Robustness vs. Model Compression").

From the pretrained model, an ADMM phase trains the weights W under the robust objective plus
rho/2 * sum ||W - Z + U||^2, where Z is the projection of W onto the sparsity set (top-k magnitude per layer,
or global) and U the scaled dual variable. Every `admm.interval` epochs: Z <- proj(W + U), U <- U + W - Z,
rho <- admm.rho_growth * rho. Then the hard prune, and the shared finetune.

The hard prune keeps the largest trained weights |W| (Ye et al.'s rule: the ADMM phase has pulled W onto the
sparsity set, and the mask is read off W itself). `admm.final_mask=z` keeps the support of the last Z instead,
the rule rpbench used before: Z = proj(W + U) is taken after a dual update past the last epoch, and with U
grown large on the pruned weights it can differ from W's own magnitude mask by most of its support.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from benchmark.core.config import SettingsGroup, TrainSettings, setting
from benchmark.core.mask import Mask, magnitude_mask, prunable_weights, topk_mask
from benchmark.core.presets import PresetContext
from benchmark.training.loop import Phase
from methods.base import Pruner, Taxonomy, register_method


@dataclass
class AdmmSettings(TrainSettings):
    """The ADMM phase's optimiser and budget, and the augmented-Lagrangian schedule."""

    rho: float = setting(1e-3, minimum=0.0, help="initial penalty weight (Ye et al.: 1e-3)")
    rho_growth: float = setting(1.3, minimum=1.0, help="rho is multiplied by this at every Z/U update")
    interval: int = setting(1, minimum=1, help="epochs between Z/U/rho updates")
    final_mask: str = setting("w", choices=("w", "z"), introduced="z",
                              help="hard prune by the trained |W| (Ye et al.) or by the last Z's support")


def admm_budget(ctx: PresetContext) -> dict[str, Any]:
    """Ye et al.'s rho 1e-3 in `paper`; 1 in `smoke` and `quick`, whose short ADMM phase barely moves the weights
    towards Z at 1e-3 while the dual variable of the pruned weights keeps growing (README)."""
    if ctx.preset == "paper":
        return {"epochs": 20, "lr": 0.01, "rho": 1e-3, **ctx.batch}
    epochs = 1 if ctx.preset == "smoke" else 3 if ctx.bound_based else 10 if ctx.small else 5
    return {"epochs": epochs, "lr": 0.01, "rho": 1.0, **ctx.batch}


def project(values: dict[str, Tensor], sparsity: float, scope: str) -> tuple[Mask, dict[str, Tensor]]:
    """Euclidean projection onto the sparsity set: keep the largest |v|, zero the rest."""
    keep = topk_mask({n: v.abs() for n, v in values.items()}, sparsity, scope)
    return keep, {n: v * keep[n] for n, v in values.items()}


@register_method
class Admm(Pruner):
    name = "admm"
    description = "ADMM with the robust loss: W pulled towards its sparse projection Z, then hard prune + finetune"
    taxonomy = Taxonomy("after training", "one-shot", "unstructured", "local or global",
                        "weight magnitude after ADMM regularisation")
    settings_group = SettingsGroup("admm", AdmmSettings, "method", budget=admm_budget,
                                   aliases={"admm_rho": "admm.rho", "admm_rho_growth": "admm.rho_growth",
                                            "admm_interval": "admm.interval"})

    def __init__(self, sparsity: float, scope: str, settings: AdmmSettings | None = None) -> None:
        super().__init__(sparsity, scope, settings or AdmmSettings())

    def phases(self) -> list[Phase]:
        return [Phase("admm", self.settings)]

    def prepare(self, model: nn.Module, phase: Phase) -> None:
        weights = {n: w.detach().clone() for n, w in prunable_weights(model).items()}
        self.z_support, self.z = project(weights, self.sparsity, self.scope)
        self.u = {n: torch.zeros_like(w) for n, w in weights.items()}
        self.rho = self.settings.rho

    def regularize(self, model: nn.Module, phase: Phase) -> Tensor:
        terms = [(w - self.z[n] + self.u[n]).pow(2).sum() for n, w in prunable_weights(model).items()]
        return 0.5 * self.rho * torch.stack(terms).sum()

    def on_epoch_end(self, model: nn.Module, phase: Phase, epoch: int) -> None:
        if (epoch + 1) % self.settings.interval == 0:
            self.update(model)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """One ADMM dual step: Z <- proj(W + U), U <- U + W - Z, rho <- growth * rho."""
        weights = {n: w.detach() for n, w in prunable_weights(model).items()}
        self.z_support, self.z = project({n: w + self.u[n] for n, w in weights.items()}, self.sparsity, self.scope)
        self.u = {n: self.u[n] + w - self.z[n] for n, w in weights.items()}
        self.rho *= self.settings.rho_growth

    def mask(self, model: nn.Module) -> Mask:
        if self.settings.final_mask == "z":
            return self.z_support
        return magnitude_mask(model, self.sparsity, self.scope)

    def state_dict(self) -> dict[str, Any]:
        return {"rho": self.rho, "z": self.z, "u": self.u, "z_support": dict(self.z_support)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.rho, self.z, self.u = state["rho"], state["z"], state["u"]
        self.z_support = Mask(state["z_support"])

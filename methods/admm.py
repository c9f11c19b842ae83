"""Robustness-aware ADMM pruning (Ye et al., ICCV 2019, "Adversarial Robustness vs. Model Compression").

From the pretrained model, an ADMM phase trains the weights W under the robust objective plus
rho/2 * sum ||W - Z + U||^2, where Z is the projection of W onto the sparsity set (top-k magnitude per layer,
or global) and U the scaled dual variable. Every `admm_interval` epochs: Z <- proj(W + U), U <- U + W - Z,
rho <- admm_rho_growth * rho. Then a hard prune to the support of Z, and the shared finetune.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from benchmark.core.mask import Mask, prunable_weights, topk_mask
from methods.base import Phase, Pruner, Taxonomy, register_method


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

    def phases(self) -> list[Phase]:
        return [Phase("admm", self.cfg.admm)]

    def prepare(self, model: nn.Module, phase: Phase) -> None:
        weights = {n: w.detach().clone() for n, w in prunable_weights(model).items()}
        self.keep, self.z = project(weights, self.cfg.sparsity, self.cfg.scope)
        self.u = {n: torch.zeros_like(w) for n, w in weights.items()}
        self.rho = self.cfg.admm_rho

    def regularize(self, model: nn.Module, phase: Phase) -> Tensor:
        terms = [(w - self.z[n] + self.u[n]).pow(2).sum() for n, w in prunable_weights(model).items()]
        return 0.5 * self.rho * torch.stack(terms).sum()

    def on_epoch_end(self, model: nn.Module, phase: Phase, epoch: int) -> None:
        if (epoch + 1) % self.cfg.admm_interval == 0:
            self.update(model)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """One ADMM dual step: Z <- proj(W + U), U <- U + W - Z, rho <- growth * rho."""
        weights = {n: w.detach() for n, w in prunable_weights(model).items()}
        self.keep, self.z = project({n: w + self.u[n] for n, w in weights.items()}, self.cfg.sparsity,
                                    self.cfg.scope)
        self.u = {n: self.u[n] + w - self.z[n] for n, w in weights.items()}
        self.rho *= self.cfg.admm_rho_growth

    def mask(self, model: nn.Module) -> Mask:
        return self.keep

    def state_dict(self) -> dict[str, Any]:
        return {"rho": self.rho, "z": self.z, "u": self.u, "keep": dict(self.keep)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        device = next(iter(self.z.values())).device
        self.rho = state["rho"]
        self.z = {n: t.to(device) for n, t in state["z"].items()}
        self.u = {n: t.to(device) for n, t in state["u"].items()}
        self.keep = Mask(state["keep"]).to(device)

"""Natural training and adversarial training: Madry et al.'s PGD and TRADES."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from attacks.pgd import cross_entropy_loss, eval_mode, pgd_linf
from benchmark.core.config import SettingsGroup, setting
from benchmark.training.objectives.base import Objective, register_objective


@dataclass
class TradesSettings:
    beta: float = setting(6.0, minimum=0.0, help="TRADES' weight of the KL term (HYDRA: 6)")


@register_objective
class Natural(Objective):
    name = "natural"
    description = "cross-entropy on clean inputs"

    def loss(self, model: nn.Module, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        logits = model(x)
        return F.cross_entropy(logits, y), logits


@register_objective
class MadryPGD(Objective):
    name = "pgd"
    description = "Madry et al.: cross-entropy on l-inf PGD examples (random start)"

    def loss(self, model: nn.Module, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        a = self.attack
        x_adv = pgd_linf(model, x, cross_entropy_loss(y), a.eps, a.step_size, a.steps, start="uniform")
        logits = model(x_adv)
        return F.cross_entropy(logits, y), logits


@register_objective
class Trades(Objective):
    name = "trades"
    description = "TRADES (Zhang et al. 2019): CE + beta x KL(f(x) || f(x_adv)), trades.beta (6)"
    settings_group = SettingsGroup("trades", TradesSettings, "objective", aliases={"trades_beta": "trades.beta"})

    def loss(self, model: nn.Module, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        a = self.attack
        with torch.no_grad(), eval_mode(model):
            target = F.softmax(model(x), dim=1)  # computed once; the official code recomputes it every step

        def kl_to_target(logits: Tensor) -> Tensor:
            return F.kl_div(F.log_softmax(logits, dim=1), target, reduction="sum")

        x_adv = pgd_linf(model, x, kl_to_target, a.eps, a.step_size, a.steps, start="normal")
        logits = model(x)
        adv_logits = model(x_adv)
        kl = F.kl_div(F.log_softmax(adv_logits, dim=1), F.softmax(logits, dim=1), reduction="sum") / x.shape[0]
        return F.cross_entropy(logits, y) + self.settings.beta * kl, logits



"""Training objectives: plug-ins of the one training loop (benchmark/train.py).

An objective turns a batch into a loss; it may keep schedules through its per-epoch and per-batch hooks
(eps ramps, loss weights). It returns the logits it already computed, for the loop's accuracy log, so no
forward pass is spent only on logging.
"""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from attacks.pgd import cross_entropy_loss, eval_mode, pgd_linf
from benchmark.config import AttackSettings, RunConfig
from benchmark.registry import Registry


class Objective:
    name: ClassVar[str]
    description: ClassVar[str]

    def __init__(self, cfg: RunConfig) -> None:
        self.cfg = cfg
        self.attack: AttackSettings = cfg.train_attack

    def on_epoch_start(self, epoch: int, epochs: int) -> None:
        """Per-epoch schedule hook."""

    def on_batch_start(self, step: int, steps_per_epoch: int) -> None:
        """Per-batch schedule hook."""

    def loss(self, model: nn.Module, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        """(mean loss over the batch, logits for the accuracy log)."""
        raise NotImplementedError


OBJECTIVES: Registry[type[Objective]] = Registry("objective")


def register_objective(cls: type[Objective]) -> type[Objective]:
    return OBJECTIVES.register(cls.name)(cls)


def build_objective(name: str, cfg: RunConfig) -> Objective:
    return OBJECTIVES.get(name)(cfg)


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
    description = "TRADES (Zhang et al. 2019): CE + beta x KL(f(x) || f(x_adv)), beta from trades_beta (6)"

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
        return F.cross_entropy(logits, y) + self.cfg.trades_beta * kl, logits


def _noisy(x: Tensor, sigma: float) -> Tensor:
    """x + N(0, sigma^2) in pixel space, not clipped (as Cohen et al. and HYDRA)."""
    return x + sigma * torch.randn_like(x)


@register_objective
class StabilitySmoothing(Objective):
    name = "smoothing"
    description = ("randomized-smoothing training (HYDRA's, for CIFAR/SVHN): CE + beta x KL(f(x) || f(x + N(0, "
                   "sigma^2))), smoothing.sigma 0.25, beta 6")

    def loss(self, model: nn.Module, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        s = self.cfg.smoothing
        logits = model(x)
        target = F.softmax(logits, dim=1)  # not detached, as in TRADES and HYDRA's code
        kl = sum(F.kl_div(F.log_softmax(model(_noisy(x, s.sigma)), dim=1), target, reduction="sum")
                 for _ in range(s.draws)) / (s.draws * x.shape[0])
        return F.cross_entropy(logits, y) + s.beta * kl, logits


@register_objective
class GaussianAugmentation(Objective):
    name = "gaussian"
    description = "Gaussian data augmentation (Cohen et al. 2019; HYDRA's ImageNet): CE(f(x + N(0, sigma^2)), y)"

    def loss(self, model: nn.Module, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        s = self.cfg.smoothing
        noisy = _noisy(x.repeat(s.draws, *[1] * (x.dim() - 1)), s.sigma)
        logits = model(noisy)
        return F.cross_entropy(logits, y.repeat(s.draws)), logits[: len(y)]

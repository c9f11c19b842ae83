"""Noise training for randomized smoothing: HYDRA's stability training and Gaussian augmentation."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from benchmark.core.config import SettingsGroup, setting
from benchmark.training.objectives.base import Objective, register_objective


@dataclass
class SmoothingSettings:
    """Gaussian noise of the `smoothing` and `gaussian` objectives (pixel units), and the stability weight."""

    sigma: float = setting(0.25, minimum=0.0, help="noise standard deviation in [0, 1] pixel units")
    beta: float = setting(6.0, minimum=0.0, help="`smoothing`: CE + beta x KL(f(x) || f(x + delta))")
    draws: int = setting(1, minimum=1, help="noise draws per example and step (the losses average over them)")


SMOOTHING = SettingsGroup("smoothing", SmoothingSettings, "objective")


def _noisy(x: Tensor, sigma: float) -> Tensor:
    """x + N(0, sigma^2) in pixel space, not clipped (as Cohen et al. and HYDRA)."""
    return x + sigma * torch.randn_like(x)


@register_objective
class StabilitySmoothing(Objective):
    name = "smoothing"
    description = ("randomized-smoothing training (HYDRA's, for CIFAR/SVHN): CE + beta x KL(f(x) || f(x + N(0, "
                   "sigma^2))), smoothing.sigma 0.25, beta 6")
    settings_group = SMOOTHING

    def loss(self, model: nn.Module, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        s = self.settings
        logits = model(x)
        target = F.softmax(logits, dim=1)  # not detached, as in TRADES and HYDRA's code
        kl = sum(F.kl_div(F.log_softmax(model(_noisy(x, s.sigma)), dim=1), target, reduction="sum")
                 for _ in range(s.draws)) / (s.draws * x.shape[0])
        return F.cross_entropy(logits, y) + s.beta * kl, logits


@register_objective
class GaussianAugmentation(Objective):
    name = "gaussian"
    description = "Gaussian data augmentation (Cohen et al. 2019; HYDRA's ImageNet): CE(f(x + N(0, sigma^2)), y)"
    settings_group = SMOOTHING

    def loss(self, model: nn.Module, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        s = self.settings
        noisy = _noisy(x.repeat(s.draws, *[1] * (x.dim() - 1)), s.sigma)
        logits = model(noisy)
        return F.cross_entropy(logits, y.repeat(s.draws)), logits[: len(y)]



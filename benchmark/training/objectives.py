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

from attacks import bounds
from attacks.pgd import cross_entropy_loss, eval_mode, pgd_linf
from benchmark.core.config import AttackSettings, RunConfig
from benchmark.core.registry import Registry


class Objective:
    name: ClassVar[str]
    description: ClassVar[str]
    bound_based: ClassVar[bool] = False  # needs a model that bound propagation supports (attacks/bounds.py)

    def __init__(self, cfg: RunConfig, ramped: bool = False) -> None:
        """ramped: this phase is the dense pretraining, where a bound-based objective ramps its eps up."""
        self.cfg = cfg
        self.attack: AttackSettings = cfg.train_attack
        self.ramped = ramped

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


def build_objective(name: str, cfg: RunConfig, ramped: bool = False) -> Objective:
    return OBJECTIVES.get(name)(cfg, ramped)


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


class BoundObjective(Objective):
    """The schedule shared by the bound-based objectives: progress t in [0, 1] through the eps ramp of the
    dense pretraining (1 throughout the other phases), with eps, kappa and beta read off it."""

    bound_based = True
    per_batch = True  # the eps ramp advances every batch (False: once per epoch, as MixTrain's code)

    def __init__(self, cfg: RunConfig, ramped: bool = False) -> None:
        super().__init__(cfg, ramped)
        self.settings = cfg.verifiable
        self.epoch = 0
        self.progress = 0.0 if ramped else 1.0

    def on_epoch_start(self, epoch: int, epochs: int) -> None:
        self.epoch = epoch
        self._advance(epoch)

    def on_batch_start(self, step: int, steps_per_epoch: int) -> None:
        if self.per_batch:
            self._advance(self.epoch + step / max(steps_per_epoch, 1))

    def _advance(self, epochs_done: float) -> None:
        if not self.ramped:
            return
        s = self.settings
        into_ramp = epochs_done - s.warmup_epochs
        self.progress = float(into_ramp >= 0) if s.ramp_epochs == 0 else min(max(into_ramp / s.ramp_epochs, 0.0), 1.0)

    @property
    def eps(self) -> float:
        return self.progress * self.attack.eps

    def _mix(self, start: float, end: float) -> float:
        return start + self.progress * (end - start)

    @property
    def kappa(self) -> float:
        return self._mix(self.settings.kappa_start, self.settings.kappa_end)

    def margin_bounds(self, model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
        """Lower bounds (B, K-1) on the margins over the eps-box, by this objective's bound method."""
        raise NotImplementedError

    def loss(self, model: nn.Module, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        """kappa x natural CE + (1 - kappa) x the robust CE of the worst-case logits. With kappa 0 no clean
        forward pass is made, and the logits for the loop's log are the worst-case ones (its accuracy is then
        the verified training accuracy)."""
        kappa = self.kappa
        worst = bounds.worst_case_logits(self.margin_bounds(model, x, y), y)
        robust = F.cross_entropy(worst, y)
        if kappa == 0:
            return robust, worst
        logits = model(x)
        return kappa * F.cross_entropy(logits, y) + (1 - kappa) * robust, logits


@register_objective
class IntervalBoundTraining(BoundObjective):
    name = "ibp"
    description = ("IBP (Gowal et al. 2018): kappa x CE + (1 - kappa) x CE of IBP's worst-case logits; eps and kappa "
                   "ramp per batch (verifiable.*)")

    def margin_bounds(self, model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
        return bounds.margin_bounds(model, x, y, self.eps, "ibp")


@register_objective
class CrownIBPTraining(BoundObjective):
    name = "crown-ibp"
    description = ("CROWN-IBP (Zhang et al. 2020): as ibp, on beta x CROWN-IBP + (1 - beta) x IBP bounds, beta 1 -> 0 "
                   "along the eps ramp")

    def margin_bounds(self, model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
        beta = self._mix(self.settings.beta_start, self.settings.beta_end)
        return bounds.crown_ibp_bounds(model, x, y, self.eps, beta)


@register_objective
class MixTrain(BoundObjective):
    name = "mixtrain"
    description = ("MixTrain (Wang et al. 2018): CE + iw x the robust CE of symbolic intervals on a few examples "
                   "of the batch, with probability 0.8 per batch; eps ramps per epoch")
    per_batch = False

    def loss(self, model: nn.Module, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        s = self.settings
        logits = model(x)
        loss = F.cross_entropy(logits, y)
        if float(torch.rand(())) < s.mixtrain_alpha:  # from torch's generator: seeded and checkpointed
            sample = torch.randint(len(y), (s.mixtrain_examples,), device=y.device)
            margins = bounds.margin_bounds(model, x[sample], y[sample], self.eps, "sym")
            loss = loss + self.interval_weight * F.cross_entropy(bounds.worst_case_logits(margins, y[sample]),
                                                                 y[sample])
        return loss, logits

    @property
    def interval_weight(self) -> float:
        after_ramp = self.epoch - (self.settings.ramp_epochs if self.ramped else 0)
        return min(self.settings.mixtrain_weight * 2.5 ** (max(after_ramp, 0) // 5), 50.0)

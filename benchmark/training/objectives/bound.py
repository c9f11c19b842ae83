"""Verifiable training on certified bounds: IBP, CROWN-IBP and MixTrain, with their eps, kappa and beta ramps."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from attacks import bounds
from benchmark.core.config import AttackSettings, SettingsGroup, setting
from benchmark.core.presets import PresetContext
from benchmark.training.fast_path import full_precision
from benchmark.training.objectives.base import Objective, register_objective


@dataclass
class VerifiableSettings:
    """Schedules of the bound-based objectives `ibp`, `crown-ibp` and `mixtrain`.

    In the dense pretraining the training eps ramps linearly from 0 (per batch; per epoch for `mixtrain`, as in
    its code) over ramp_epochs, after warmup_epochs at eps 0; the prune and finetune phases run at full eps from
    the first step (HYDRA's schedule_length 1). kappa (the natural CE's weight) and CROWN-IBP's beta (the
    weight of the CROWN-IBP bound against IBP's) follow the ramp from their start to their end values.
    `mixtrain`: with probability mixtrain_alpha per batch, CE + iw x the robust CE of symbolic intervals on
    mixtrain_examples examples drawn from the batch, iw = mixtrain_weight x 2.5^floor((epoch - ramp) / 5),
    at most 50.
    """

    warmup_epochs: int = setting(0, minimum=0, help="pretraining epochs at eps 0 before the ramp")
    ramp_epochs: int = setting(5, minimum=0, help="pretraining epochs over which eps ramps up to the full eps")
    kappa_start: float = setting(1.0, minimum=0.0, help="the natural CE's weight at the ramp's start (Gowal: 1)")
    kappa_end: float = setting(0.5, minimum=0.0, help="... and at its end (Gowal et al.: 0.5)")
    beta_start: float = setting(1.0, minimum=0.0, help="CROWN-IBP's weight of its bound at the start (1)")
    beta_end: float = setting(0.0, minimum=0.0, help="... and at the end (Zhang et al. and HYDRA: 0)")
    mixtrain_alpha: float = setting(0.8, minimum=0.0, help="MixTrain: probability of the interval term per batch")
    mixtrain_examples: int = setting(5, minimum=1, help="MixTrain: examples per batch bounded by symbolic "
                                                        "intervals (HYDRA: 5 for cnn-small, 1 for cnn-large)")
    mixtrain_weight: float = setting(0.1, minimum=0.0, help="MixTrain: the interval term's initial weight")


def verifiable_budget(ctx: PresetContext) -> dict[str, Any]:
    """The eps ramp of each preset; `paper` follows HYDRA's CROWN-IBP (kappa 0) and MixTrain configs."""
    if ctx.preset == "smoke":
        return {"ramp_epochs": 2}
    if ctx.preset == "quick":
        return {"ramp_epochs": 6}
    if ctx.objective == "mixtrain":
        return {"ramp_epochs": 15, "mixtrain_examples": 1 if ctx.arch == "cnn-large" else 5}
    return {"ramp_epochs": 120, "kappa_start": 0.0, "kappa_end": 0.0}


VERIFIABLE = SettingsGroup("verifiable", VerifiableSettings, "objective", budget=verifiable_budget)


class BoundObjective(Objective):
    """The schedule shared by the bound-based objectives: progress t in [0, 1] through the eps ramp of the
    dense pretraining (1 throughout the other phases), with eps, kappa and beta read off it."""

    bound_based = True
    per_batch = True  # the eps ramp advances every batch (False: once per epoch, as MixTrain's code)
    settings_group = VERIFIABLE

    def __init__(self, attack: AttackSettings, settings: VerifiableSettings | None = None,
                 ramped: bool = False) -> None:
        super().__init__(attack, settings or VerifiableSettings(), ramped)
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
        with full_precision(x):
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
            with full_precision(x):
                margins = bounds.margin_bounds(model, x[sample], y[sample], self.eps, "sym")
            loss = loss + self.interval_weight * F.cross_entropy(bounds.worst_case_logits(margins, y[sample]),
                                                                 y[sample])
        return loss, logits

    @property
    def interval_weight(self) -> float:
        after_ramp = self.epoch - (self.settings.ramp_epochs if self.ramped else 0)
        return min(self.settings.mixtrain_weight * 2.5 ** (max(after_ramp, 0) // 5), 50.0)

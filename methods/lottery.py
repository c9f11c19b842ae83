"""Lottery tickets: iterative magnitude pruning with rewinding (Frankle and Carbin 2019), trained robustly.

Starting from the trained (pretrained) network, each round prunes `lottery.rate` of the surviving weights by
magnitude (per layer, or global), rewinds the survivors to an early pretraining epoch (or initialisation),
and retrains them with the mask fixed under the run's objective. Rounds go 1 - (1 - rate)^r until the target,
the last round pruning exactly to it. Each round is declared shared under its index and sparsity, so the
runner trains it once for all targets on the same path: 90% is on the way to 99%.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from benchmark.core.config import SettingsGroup, TrainSettings, setting
from benchmark.core.errors import UserError
from benchmark.core.mask import Mask, dense_mask, prunable_weights, topk_mask
from benchmark.core.presets import PresetContext
from benchmark.training.loop import Phase
from methods.base import Pruner, Taxonomy, register_method

REWIND_EPOCHS = (0, 1, 2)  # the pretraining states the runner keeps (0: the initialisation)


@dataclass
class LotterySettings(TrainSettings):
    """The retraining of each round, the fraction of survivors pruned per round, and the rewind point."""

    rate: float = setting(0.5, minimum=0.0, help="fraction of the surviving weights pruned per round, in (0, 1)")
    rewind_epoch: int = setting(1, choices=REWIND_EPOCHS,
                                help="pretraining epoch the survivors are rewound to (0: initialisation)")


def lottery_budget(ctx: PresetContext) -> dict[str, Any]:
    if ctx.preset == "smoke":
        return {"epochs": 1, "lr": 0.1, "rate": 0.7, **ctx.batch}
    epochs = 20 if ctx.preset == "paper" else 2 if ctx.bound_based else 5 if ctx.small else 3
    return {"epochs": epochs, "lr": 0.1, "rate": 0.5, **ctx.batch}


def round_sparsities(target: float, rate: float) -> list[float]:
    """Sparsity after each round: 1 - (1 - rate)^r, the last one clipped to the target."""
    if not 0.0 < rate < 1.0:
        raise UserError(f"lottery.rate must be in (0, 1), got {rate}")
    path, kept = [], 1.0
    while True:
        kept *= 1.0 - rate
        if 1.0 - kept >= target - 1e-9:
            return [*path, target]
        path.append(1.0 - kept)


def prune_survivors(model: nn.Module, previous: Mask, sparsity: float, scope: str) -> Mask:
    """Magnitude pruning among the survivors only, so masks are nested across rounds."""
    scores = {n: torch.where(previous[n], w.detach().abs() + 1.0, torch.zeros_like(w))
              for n, w in prunable_weights(model).items()}
    return topk_mask(scores, sparsity, scope)


@register_method
class LotteryTicket(Pruner):
    name = "lottery"
    description = "iterative magnitude pruning, rewinding survivors to an early epoch, retrained each round"
    taxonomy = Taxonomy("after training", "iterative", "unstructured", "local or global",
                        "weight magnitude, with rewinding")
    settings_group = SettingsGroup("lottery", LotterySettings, "method", budget=lottery_budget,
                                   aliases={"lottery_rate": "lottery.rate",
                                            "lottery_rewind_epoch": "lottery.rewind_epoch"})

    def __init__(self, sparsity: float, scope: str, settings: LotterySettings | None = None) -> None:
        super().__init__(sparsity, scope, settings or LotterySettings())
        self.current: Mask | None = None
        self.sparsities = round_sparsities(sparsity, self.settings.rate)

    @property
    def rewind_epoch(self) -> int:
        return self.settings.rewind_epoch

    def phases(self) -> list[Phase]:
        return [Phase(f"round{r + 1}", self.settings, shared_as=f"round{r + 1}_sparsity{s:.6f}")
                for r, s in enumerate(self.sparsities)]

    def prepare(self, model: nn.Module, phase: Phase) -> None:
        """Prune the trained weights, then rewind the survivors (and BatchNorm) to the rewind point."""
        if self.rewind_state is None:
            raise UserError(f"lottery needs the pretraining state of epoch {self.rewind_epoch} to rewind to")
        previous = self.current if self.current is not None else dense_mask(model)
        round_index = int(phase.name.removeprefix("round")) - 1
        self.current = prune_survivors(model, previous, self.sparsities[round_index], self.scope)
        model.load_state_dict(self.rewind_state)
        self.current.apply_(model)

    def training_mask(self, model: nn.Module, phase: Phase) -> Mask | None:
        return self.current

    def state_dict(self) -> dict[str, Any]:
        return {"mask": dict(self.current)} if self.current is not None else {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.current = Mask(state["mask"]) if "mask" in state else None

    def mask(self, model: nn.Module) -> Mask:
        assert self.current is not None, "run the rounds first"
        return self.current

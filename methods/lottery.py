"""Lottery tickets: iterative magnitude pruning with rewinding (Frankle and Carbin 2019), trained robustly.

Starting from the trained (pretrained) network, each round prunes `lottery_rate` of the surviving weights by
magnitude (per layer, or global), rewinds the survivors to an early pretraining epoch (or initialisation),
and retrains them with the mask fixed under the run's objective. Rounds go 1 - (1 - rate)^r until the target,
the last round pruning exactly to it. Rounds are kept in the method's shared workspace, named by their
index and sparsity, so targets on the same path share them: 90% is on the way to 99%, and the grid never
retrains a round it already has.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from benchmark.core.config import RunConfig
from benchmark.core.errors import UserError
from benchmark.core.io import atomic_save, safe_load
from benchmark.core.mask import Mask, dense_mask, prunable_weights, topk_mask
from methods.base import Phase, Pruner, Taxonomy, register_method


def round_sparsities(target: float, rate: float) -> list[float]:
    """Sparsity after each round: 1 - (1 - rate)^r, the last one clipped to the target."""
    if not 0.0 < rate < 1.0:
        raise UserError(f"lottery_rate must be in (0, 1), got {rate}")
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

    def __init__(self, cfg: RunConfig, workspace: Path | None = None, pretrained_dir: Path | None = None) -> None:
        super().__init__(cfg, workspace, pretrained_dir)
        self.current: Mask | None = None
        self.sparsities = round_sparsities(cfg.sparsity, cfg.lottery_rate)

    def phases(self) -> list[Phase]:
        return [Phase(f"round{r + 1}", self.cfg.lottery) for r in range(len(self.sparsities))]

    def _round(self, phase: Phase) -> int:
        return int(phase.name.removeprefix("round")) - 1

    def _round_file(self, r: int) -> Path | None:
        if self.workspace is None:
            return None
        return self.workspace / f"round{r + 1}_sparsity{self.sparsities[r]:.6f}.pt"

    def restore(self, model: nn.Module, phase: Phase) -> dict[str, Any] | None:
        path = self._round_file(self._round(phase))
        if path is None or not path.exists():
            return None
        state = safe_load(path)
        model.load_state_dict(state["model"])
        self.current = Mask(state["mask"]).to(next(model.parameters()).device)
        return state["cost"]

    def prepare(self, model: nn.Module, phase: Phase) -> None:
        """Prune the trained weights, then rewind the survivors (and BatchNorm) to the rewind point."""
        previous = self.current if self.current is not None else dense_mask(model)
        self.current = prune_survivors(model, previous, self.sparsities[self._round(phase)], self.cfg.scope)
        model.load_state_dict(self._rewind_state())
        self.current.apply_(model)

    def _rewind_state(self) -> dict[str, torch.Tensor]:
        epoch = self.cfg.lottery_rewind_epoch
        path = self.pretrained_dir / f"epoch_{epoch}.pt" if self.pretrained_dir else None
        if path is None or not path.exists():
            raise UserError(f"no rewind point for epoch {epoch}: lottery_rewind_epoch must be 0, 1 or 2 and "
                            f"within pretraining, and the pretrained model must keep its early states ({path})")
        return safe_load(path)

    def training_mask(self, model: nn.Module, phase: Phase) -> Mask | None:
        return self.current

    def finish_phase(self, model: nn.Module, phase: Phase, cost: dict[str, Any]) -> None:
        path = self._round_file(self._round(phase))
        if path is not None:
            mask = {n: t.cpu() for n, t in self.current.items()}
            atomic_save({"model": model.state_dict(), "mask": mask, "cost": cost}, path)

    def state_dict(self) -> dict[str, Any]:
        return {"mask": {n: t.cpu() for n, t in self.current.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        device = next(iter(self.current.values())).device
        self.current = Mask(state["mask"]).to(device)

    def mask(self, model: nn.Module) -> Mask:
        assert self.current is not None, "run the rounds first"
        return self.current

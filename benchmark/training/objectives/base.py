"""The objective interface and registry: plug-ins of the one training loop (benchmark/training/loop.py).

An objective turns a batch into a loss; it may keep schedules through its per-epoch and per-batch hooks
(eps ramps, loss weights). It returns the logits it already computed, for the loop's accuracy log, so no
forward pass is spent only on logging. An objective gets the training attack and the values of its own
settings group (`settings_group`, declared in its file with its preset budgets), not the whole run config.
"""

from __future__ import annotations

from typing import Any, ClassVar

from torch import Tensor, nn

from benchmark.core.config import AttackSettings, RunConfig, SettingsGroup, register_settings
from benchmark.core.registry import Registry


class Objective:
    name: ClassVar[str]
    description: ClassVar[str]
    bound_based: ClassVar[bool] = False  # needs a model that bound propagation supports (attacks/bounds.py)
    settings_group: ClassVar[SettingsGroup | None] = None

    def __init__(self, attack: AttackSettings, settings: Any = None, ramped: bool = False) -> None:
        """ramped: this phase is the dense pretraining, where a bound-based objective ramps its eps up."""
        self.attack = attack
        self.settings = settings
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
    OBJECTIVES.register(cls.name)(cls)
    register_settings(cls.settings_group, "objective", cls.name)
    return cls


def build_objective(name: str, cfg: RunConfig, ramped: bool = False) -> Objective:
    """Objective `name` with cfg's training attack and cfg's values of its settings group."""
    cls = OBJECTIVES.get(name)
    group = cls.settings_group
    return cls(cfg.train_attack, cfg.settings_of(group.name) if group else None, ramped)

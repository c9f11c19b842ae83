"""The Pruner interface and the pruner registry.

A pruner owns everything between the pretrained model and the mask: the phases it trains in (with what
parameters, what regulariser and what fixed mask), and the mask it hands over. Only the Mask leaves a
pruner; the finetune that follows is the same for every method and is run by the runner (DESIGN.md,
property 1). A pruner does no file I/O: the runner checkpoints its `state_dict`, stores and restores the
phases it declares shared (`Phase.shared_as`), and hands it the pretraining state it rewinds to. The runner
drives a pruner like this:

    pruner = build_pruner(name, cfg)   # cfg's sparsity, scope and values of the method's settings group
    if pruner.rewind_epoch is not None: pruner.rewind_state = <that pretraining epoch's state_dict>
    for phase in pruner.phases():
        if phase.shared_as was stored by another target: load the model and pruner state, continue
        pruner.prepare(model, phase)
        train with pruner.trainable / regularize / training_mask / on_epoch_end, checkpointing state_dict
    mask = pruner.mask(model); pruner.release(model)

A pruner with settings declares them as a `SettingsGroup` (a dataclass and its preset budgets) in its own
file: `settings = SettingsGroup("mymethod", MySettings, "method", budget=...)`; the run's values arrive as
`self.settings`, and `--set mymethod.<field>=...` sets them.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, ClassVar

from torch import Tensor, nn

from benchmark.core.config import RunConfig, SettingsGroup, register_settings
from benchmark.core.mask import Mask, check_sparsity
from benchmark.core.registry import Registry
from benchmark.training.loop import Phase


@dataclass(frozen=True)
class Taxonomy:
    """Where a method sits in the Adversarial Pruning Benchmark's taxonomy (Piras et al. 2024)."""

    when: str  # "after training" | "before training" | "during training"
    schedule: str  # "one-shot" | "iterative"
    structure: str  # "unstructured" | "structured"
    scope: str  # "local" | "global" | "local or global"
    criterion: str  # e.g. "least weight magnitude", "learned importance scores"

    def line(self) -> str:
        return f"{self.when}, {self.schedule}, {self.structure}, {self.scope}, criterion: {self.criterion}"


class Pruner:
    """Base class: a one-shot pruner with no training phases and no settings of its own. Override what differs.

    `sparsity` and `scope` are the run's target; `settings` the run's values of the class's `settings` group
    (None when it has none).
    """

    name: ClassVar[str]
    taxonomy: ClassVar[Taxonomy]
    description: ClassVar[str] = ""
    settings_group: ClassVar[SettingsGroup | None] = None

    def __init__(self, sparsity: float, scope: str, settings: Any = None) -> None:
        self.sparsity = check_sparsity(sparsity)
        self.scope = scope
        self.settings = settings
        self.rewind_state: dict[str, Tensor] | None = None  # set by the runner when rewind_epoch is not None

    @property
    def rewind_epoch(self) -> int | None:
        """The pretraining epoch whose state this pruner needs (0: the initialisation), or None."""
        return None

    def phases(self) -> list[Phase]:
        """Training phases run before `mask` (the shared finetune is not one of them)."""
        return []

    def prepare(self, model: nn.Module, phase: Phase) -> None:
        """Install whatever the phase trains (HYDRA: importance scores)."""

    def trainable(self, model: nn.Module, phase: Phase) -> Iterable[nn.Parameter]:
        return model.parameters()

    def training_mask(self, model: nn.Module, phase: Phase) -> Mask | None:
        """A mask re-applied after every optimizer step of the phase (iterative pruning), or None."""
        return None

    def regularize(self, model: nn.Module, phase: Phase) -> Tensor | None:
        """An extra loss term added to the objective's loss in this pruner's phases."""
        return None

    def on_epoch_end(self, model: nn.Module, phase: Phase, epoch: int) -> None:
        pass

    def state_dict(self) -> dict[str, Any]:
        """Pruner state outside the model (ADMM's Z, U and rho), saved with every epoch checkpoint and with a
        shared phase's result; the runner loads it back on the model's device."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass

    def mask(self, model: nn.Module) -> Mask:
        raise NotImplementedError

    def release(self, model: nn.Module) -> None:
        """Remove what `prepare` added, leaving a plain model with its original weights."""


METHODS: Registry[type[Pruner]] = Registry("method")


def register_method(cls: type[Pruner]) -> type[Pruner]:
    """Class decorator: registers a Pruner subclass under its `name`, with its settings group."""
    METHODS.register(cls.name)(cls)
    register_settings(cls.settings_group, "method", cls.name)
    return cls


def build_pruner(name: str, cfg: RunConfig) -> Pruner:
    """The pruner `name` for cfg's target sparsity and scope, with cfg's values of its settings."""
    cls = METHODS.get(name)
    group = cls.settings_group
    return cls(cfg.sparsity, cfg.scope, cfg.settings_of(group.name) if group else None)

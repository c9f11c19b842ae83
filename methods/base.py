"""The Pruner interface and the pruner registry.

A pruner owns everything between the pretrained model and the mask: the phases it trains in (with what
parameters, what regulariser and what fixed mask), and the mask it hands over. Only the Mask leaves a
pruner; the finetune that follows is the same for every method and is run by the runner (DESIGN.md,
property 1). The runner drives a pruner like this:

    pruner = build_pruner(name, cfg, workspace, pretrained_dir)
    for phase in pruner.phases():
        if pruner.restore(model, phase) is not None: continue   # cached (lottery rounds shared by targets)
        pruner.prepare(model, phase)
        train with pruner.trainable / regularize / training_mask / on_epoch_end, checkpointing state_dict
        pruner.finish_phase(model, phase, cost)
    mask = pruner.mask(model); pruner.release(model)
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from torch import Tensor, nn

from benchmark.core.config import RunConfig, TrainSettings
from benchmark.core.mask import Mask
from benchmark.core.registry import Registry


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


@dataclass(frozen=True)
class Phase:
    """A training phase a pruner asks for before its mask is taken."""

    name: str
    settings: TrainSettings


class Pruner:
    """Base class: a one-shot pruner with no training phases of its own. Override what differs.

    `cfg` is the run's effective config (sparsity, scope, the method's settings); `workspace` is a folder
    shared by the runs that may reuse this method's intermediate results (same pretrained model, seed and
    method settings), or None; `pretrained_dir` holds the pretrained model and its early-epoch states
    (`epoch_0.pt` = initialisation, `epoch_1.pt`, `epoch_2.pt`) for methods that rewind.
    """

    name: ClassVar[str]
    taxonomy: ClassVar[Taxonomy]
    description: ClassVar[str] = ""

    def __init__(self, cfg: RunConfig, workspace: Path | None = None, pretrained_dir: Path | None = None) -> None:
        self.cfg = cfg
        self.workspace = workspace
        self.pretrained_dir = pretrained_dir

    def phases(self) -> list[Phase]:
        """Training phases run before `mask` (the shared finetune is not one of them)."""
        return []

    def restore(self, model: nn.Module, phase: Phase) -> dict[str, Any] | None:
        """Load this phase's cached result into the model and return what it cost when it ran, or None to run it."""
        return None

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

    def finish_phase(self, model: nn.Module, phase: Phase, cost: dict[str, Any]) -> None:
        """After the phase's last epoch, with what it cost (lottery: keep the round's result)."""

    def state_dict(self) -> dict[str, Any]:
        """Pruner state outside the model (ADMM's Z, U and rho), saved with every epoch checkpoint."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass

    def mask(self, model: nn.Module) -> Mask:
        raise NotImplementedError

    def release(self, model: nn.Module) -> None:
        """Remove what `prepare` added, leaving a plain model with its original weights."""


METHODS: Registry[type[Pruner]] = Registry("method")


def register_method(cls: type[Pruner]) -> type[Pruner]:
    """Class decorator: registers a Pruner subclass under its `name`."""
    return METHODS.register(cls.name)(cls)


def build_pruner(name: str, cfg: RunConfig, workspace: Path | None = None,
                 pretrained_dir: Path | None = None) -> Pruner:
    return METHODS.get(name)(cfg, workspace, pretrained_dir)

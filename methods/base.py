"""The Pruner interface and the pruner registry.

A pruner owns everything between the pretrained model and the mask: the phases it trains in (with what
parameters and what regulariser), and the mask it hands over. What leaves a pruner is only the Mask; the
finetune that follows is the same for every method and is run by the runner (DESIGN.md, property 1).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import ClassVar

from torch import Tensor, nn

from benchmark.config import RunConfig, TrainSettings
from benchmark.registry import Registry
from methods.mask import Mask


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
    """Base class: a one-shot pruner with no training phases of its own. Override what differs."""

    name: ClassVar[str]
    taxonomy: ClassVar[Taxonomy]
    description: ClassVar[str] = ""

    def phases(self, cfg: RunConfig) -> list[Phase]:
        """Training phases run before `mask` (the shared finetune is not one of them)."""
        return []

    def prepare(self, model: nn.Module, phase: Phase, sparsity: float, scope: str) -> None:
        """Install whatever the phase trains (HYDRA: importance scores)."""

    def trainable(self, model: nn.Module, phase: Phase) -> Iterable[nn.Parameter]:
        return model.parameters()

    def regularize(self, model: nn.Module, phase: Phase) -> Tensor | None:
        """An extra loss term added to the objective's loss in this pruner's phases."""
        return None

    def on_epoch_end(self, model: nn.Module, phase: Phase, epoch: int) -> None:
        pass

    def mask(self, model: nn.Module, sparsity: float, scope: str) -> Mask:
        raise NotImplementedError

    def release(self, model: nn.Module) -> None:
        """Remove what `prepare` added, leaving a plain model with its original weights."""


METHODS: Registry[type[Pruner]] = Registry("method")


def register_method(cls: type[Pruner]) -> type[Pruner]:
    """Class decorator: registers a Pruner subclass under its `name`."""
    return METHODS.register(cls.name)(cls)


def build_pruner(name: str) -> Pruner:
    return METHODS.get(name)()

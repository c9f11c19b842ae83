"""The one training loop. Every phase (pretrain, a pruner's phases, finetune) and every objective runs here.

Per step: zero_grad, loss from the objective, plus the pruner's regulariser, backward, step, re-apply the
mask, callbacks. Per epoch: the scheduler, the pruner's epoch hook, and a checkpoint from which a killed
run resumes (DESIGN.md, property 4). The objective drives the model through DistributedDataParallel under
`--ddp` (benchmark/training/distributed.py) and under the fast path's options (fast_path.py).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

from benchmark.core.config import TrainSettings
from benchmark.core.errors import UserError
from benchmark.core.io import atomic_save, safe_load
from benchmark.core.mask import Mask, prunable_weights
from benchmark.core.progress import Progress
from benchmark.training import distributed
from benchmark.training.fast_path import FastPath
from benchmark.training.objectives import Objective

FP32 = FastPath()  # the plain path: fp32, the default memory format, not compiled


@dataclass
class PhaseCost:
    """What a phase cost: for equal-compute comparisons between methods (DESIGN.md, property 1)."""

    epochs: int = 0
    steps: int = 0
    forward_passes: int = 0  # batched forward passes through the model, attack steps included
    backward_passes: int = 0  # batched backward passes through the model, attack steps included
    seconds: float = 0.0


@contextmanager
def count_passes(model: nn.Module, cost: PhaseCost) -> Iterator[None]:
    """Count forward passes, and backward passes through the model's output, while the block runs."""

    def on_backward(grad: Tensor) -> None:
        cost.backward_passes += 1

    def on_forward(module: nn.Module, inputs: object, output: Tensor) -> None:
        cost.forward_passes += 1
        if output.requires_grad:
            output.register_hook(on_backward)

    handle = model.register_forward_hook(on_forward)
    try:
        yield
    finally:
        handle.remove()


@contextmanager
def effective_weights_once(model: nn.Module) -> Iterator[None]:
    """Form parametrized (masked) weights once for the block, not on every forward pass of every attack step.

    The cache is filled with autograd on, because an objective may start with a no_grad forward pass
    (TRADES' target) and the cached weights must still carry gradients to what the pruner trains.
    """
    with parametrize.cached(), torch.enable_grad():
        prunable_weights(model)
        yield


def make_optimizer(params: Iterable[nn.Parameter], s: TrainSettings) -> torch.optim.Optimizer:
    params = [p for p in params if p.requires_grad]
    if s.optimizer == "sgd":
        return torch.optim.SGD(params, lr=s.lr, momentum=s.momentum, weight_decay=s.weight_decay)
    if s.optimizer == "adam":
        return torch.optim.Adam(params, lr=s.lr, weight_decay=s.weight_decay)
    raise UserError(f"unknown optimizer {s.optimizer!r}; valid: adam, sgd")


def make_scheduler(opt: torch.optim.Optimizer, s: TrainSettings) -> torch.optim.lr_scheduler.LRScheduler:
    """Stepped once per epoch."""
    if s.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(s.epochs, 1))
    if s.schedule == "constant":
        return torch.optim.lr_scheduler.LambdaLR(opt, lambda epoch: 1.0)
    raise UserError(f"unknown schedule {s.schedule!r}; valid: constant, cosine")


@dataclass
class Phase:
    """One training phase. A pruner declares its phases by name and settings (and, for a phase whose result
    several target sparsities share, the name it is stored under); the runner fills in the rest for the loop:
    the objective, the parameters to train and where the per-epoch checkpoint goes."""

    name: str
    settings: TrainSettings
    shared_as: str | None = None  # the runner stores the result under this name and reuses it for other targets
    objective: Objective | None = None
    params: list[nn.Parameter] = field(default_factory=list)
    checkpoint: Path | None = None
    mask: Mask | None = None  # re-applied after every optimizer step
    regularize: Callable[[], Tensor | None] | None = None
    on_epoch_end: Callable[[int], None] | None = None
    step_callbacks: list[Callable[[nn.Module], None]] = field(default_factory=list)  # after each step
    extra_state: Any = None  # has state_dict() / load_state_dict(): state outside the model (a pruner's)


def run_phase(model: nn.Module, phase: Phase, loader: Iterable[tuple[Tensor, Tensor]], rng: torch.Generator,
              device: torch.device, progress: Progress, fast: FastPath = FP32) -> PhaseCost:
    """Train for phase.settings.epochs, resuming from phase.checkpoint if a previous attempt left one.

    Under --ddp each rank trains on its share of every batch (the loader's), its log counts its own share, and
    at the end the parameters and the pruner's state are checked to be the same on every rank."""
    assert phase.objective is not None and phase.checkpoint is not None, "the runner fills these in"
    s = phase.settings
    opt = make_optimizer(phase.params, s)
    sched = make_scheduler(opt, s)
    cost, start = PhaseCost(), 0
    if phase.checkpoint.exists():
        start, cost = _restore(phase, model, opt, sched, rng, device)
    if phase.mask is not None:
        phase.mask.apply_(model)
    net = fast.compiled(distributed.wrap(fast.lay_out(model), device))  # what the objective drives
    bar = progress.bar(total=s.epochs * len(loader), initial=start * len(loader), desc=phase.name)
    for epoch in range(start, s.epochs):
        began = time.perf_counter()
        phase.objective.on_epoch_start(epoch, s.epochs)
        model.train()
        seen = correct = 0
        loss_sum = 0.0
        with count_passes(model, cost):
            for step, (x, y) in enumerate(loader):
                x, y = fast.inputs(x.to(device, non_blocking=True)), y.to(device, non_blocking=True)
                phase.objective.on_batch_start(step, len(loader))
                opt.zero_grad(set_to_none=True)
                with effective_weights_once(model):
                    with fast.autocast(device):
                        loss, logits = phase.objective.loss(net, x, y)
                    extra = phase.regularize() if phase.regularize else None
                    if extra is not None:
                        loss = loss + extra
                loss.backward()
                opt.step()
                if phase.mask is not None:
                    phase.mask.apply_(model)
                for callback in phase.step_callbacks:
                    callback(model)
                cost.steps += 1
                seen += len(y)
                correct += int((logits.argmax(1) == y).sum())
                loss_sum += float(loss.detach()) * len(y)
                bar.update(1, loss=loss_sum / seen, acc=correct / seen, epoch=f"{epoch + 1}/{s.epochs}")
        sched.step()
        if phase.on_epoch_end:
            phase.on_epoch_end(epoch)
        cost.epochs += 1
        cost.seconds += time.perf_counter() - began
        progress.log(f"{phase.name} epoch {epoch + 1}/{s.epochs}: loss {loss_sum / max(seen, 1):.4f} "
                     f"train acc {correct / max(seen, 1):.4f} lr {sched.get_last_lr()[0]:.2e}")
        _save(phase, epoch + 1, cost, model, opt, sched, rng)
    bar.close()
    distributed.check_same(f"{phase.name}: the parameters", model.parameters())
    if phase.extra_state is not None:
        distributed.check_same(f"{phase.name}: the pruner's state",
                               distributed.state_tensors(phase.extra_state.state_dict()))
    return cost


def _save(phase: Phase, epoch: int, cost: PhaseCost, model: nn.Module, opt: torch.optim.Optimizer,
          sched: torch.optim.lr_scheduler.LRScheduler, rng: torch.Generator) -> None:
    extra = phase.extra_state.state_dict() if phase.extra_state is not None else {}
    atomic_save({"epoch": epoch, "cost": asdict(cost), "model": model.state_dict(), "extra": extra,
                 "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                 "torch_rng": torch.get_rng_state(), "loader_rng": rng.get_state()}, phase.checkpoint)


def _restore(phase: Phase, model: nn.Module, opt: torch.optim.Optimizer,
             sched: torch.optim.lr_scheduler.LRScheduler, rng: torch.Generator,
             device: torch.device) -> tuple[int, PhaseCost]:
    state = safe_load(phase.checkpoint, map_location=device)  # the pruner's state too, on the model's device
    model.load_state_dict(state["model"])
    if phase.extra_state is not None:
        phase.extra_state.load_state_dict(state["extra"])
    opt.load_state_dict(state["optimizer"])
    sched.load_state_dict(state["scheduler"])
    torch.set_rng_state(state["torch_rng"].cpu())
    rng.set_state(state["loader_rng"].cpu())
    return state["epoch"], PhaseCost(**state["cost"])

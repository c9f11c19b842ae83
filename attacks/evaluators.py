"""Evaluators: measure a trained model on a fixed set of test examples, per example.

Each evaluator returns one boolean per example (correct / robust), so metrics are fractions of the same
examples and a later report can take the worst case over evaluators.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable

import torch
from torch import Tensor, nn

from attacks.pgd import eval_mode, pgd_robust, predict
from benchmark.config import RunConfig
from benchmark.errors import UserError
from benchmark.registry import Registry

Evaluator = Callable[[nn.Module, Tensor, Tensor, RunConfig], Tensor]
EVALUATORS: Registry[Evaluator] = Registry("evaluator")


@EVALUATORS.register("clean")
def clean_correct(model: nn.Module, x: Tensor, y: Tensor, cfg: RunConfig) -> Tensor:
    """clean accuracy: the prediction on the unperturbed input"""
    return predict(model, x) == y


@EVALUATORS.register("pgd")
def pgd_correct(model: nn.Module, x: Tensor, y: Tensor, cfg: RunConfig) -> Tensor:
    """l-inf PGD robust accuracy (eval_attack: steps, step size, restarts; worst case over restarts)"""
    a = cfg.eval_attack
    return pgd_robust(model, x, y, a.eps, a.step_size, a.steps, a.restarts, a.norm, a.loss, a.targeted)


TORCHATTACKS = "torchattacks:"


def get_evaluator(name: str) -> Evaluator:
    """A registered evaluator, or `torchattacks:<Attack>` for any attack class of the torchattacks package."""
    if name.startswith(TORCHATTACKS):
        return torchattacks_evaluator(name.removeprefix(TORCHATTACKS))
    return EVALUATORS.get(name)


def torchattacks_evaluator(attack: str) -> Evaluator:
    """Robust accuracy under torchattacks' `attack`, built with the run's eval eps (and steps, step size)
    where its constructor takes them; everything else keeps torchattacks' defaults."""
    try:
        import torchattacks
    except ImportError:
        raise UserError("torchattacks evaluators need the torchattacks package: pip install torchattacks") from None
    cls = getattr(torchattacks, attack, None)
    if not isinstance(cls, type) or not issubclass(cls, torchattacks.attack.Attack):
        raise UserError(f"torchattacks has no attack {attack!r}")

    def correct(model: nn.Module, x: Tensor, y: Tensor, cfg: RunConfig) -> Tensor:
        a = cfg.eval_attack
        offered = {"eps": a.eps, "steps": a.steps, "alpha": a.step_size}
        accepted = inspect.signature(cls.__init__).parameters
        with eval_mode(model):
            x_adv = cls(model, **{k: v for k, v in offered.items() if k in accepted})(x, y)
        return (predict(model, x) == y) & (predict(model, x_adv) == y)

    return correct


METRIC_NAMES = {"clean": "clean_acc", "pgd": "pgd_acc"}


def evaluate(model: nn.Module, batches: Iterable[tuple[Tensor, Tensor]], cfg: RunConfig, device: torch.device,
             names: Iterable[str] = ("clean", "pgd")) -> dict[str, float]:
    """Accuracy per evaluator over all batches, as fractions in [0, 1]."""
    evaluators = {name: get_evaluator(name) for name in names}
    hits = dict.fromkeys(evaluators, 0)
    total = 0
    for x, y in batches:
        x, y = x.to(device), y.to(device)
        for name, fn in evaluators.items():
            hits[name] += int(fn(model, x, y, cfg).sum())
        total += len(y)
    return {METRIC_NAMES.get(name, f"{name.replace(TORCHATTACKS, 'ta_').lower()}_acc"): hits[name] / max(total, 1)
            for name in evaluators}


def describe(cfg: RunConfig, examples: int) -> str:
    a = cfg.eval_attack
    restarts = f" x {a.restarts} restarts" if a.restarts > 1 else ""
    loss = "" if a.loss == "ce" and not a.targeted else f" ({'targeted ' if a.targeted else ''}{a.loss} loss)"
    norm = "l-inf" if a.norm == "linf" else a.norm
    return (f"{norm} PGD-{a.steps}{restarts}{loss}, eps {a.eps:.4g}, step {a.step_size:.4g}, "
            f"{examples} test examples")

"""Evaluators: measure a trained model on a fixed set of test examples, per example.

Each evaluator returns one boolean per example (correct / robust), so metrics are fractions of the same
examples and a later report can take the worst case over evaluators.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import Tensor, nn

from attacks.pgd import pgd_robust, predict
from benchmark.config import RunConfig
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


METRIC_NAMES = {"clean": "clean_acc", "pgd": "pgd_acc"}


def evaluate(model: nn.Module, batches: Iterable[tuple[Tensor, Tensor]], cfg: RunConfig, device: torch.device,
             names: Iterable[str] = ("clean", "pgd")) -> dict[str, float]:
    """Accuracy per evaluator over all batches, as fractions in [0, 1]."""
    evaluators = {name: EVALUATORS.get(name) for name in names}
    hits = dict.fromkeys(evaluators, 0)
    total = 0
    for x, y in batches:
        x, y = x.to(device), y.to(device)
        for name, fn in evaluators.items():
            hits[name] += int(fn(model, x, y, cfg).sum())
        total += len(y)
    return {METRIC_NAMES.get(name, f"{name}_acc"): hits[name] / max(total, 1) for name in evaluators}


def describe(cfg: RunConfig, examples: int) -> str:
    a = cfg.eval_attack
    restarts = f" x {a.restarts} restarts" if a.restarts > 1 else ""
    loss = "" if a.loss == "ce" and not a.targeted else f" ({'targeted ' if a.targeted else ''}{a.loss} loss)"
    norm = "l-inf" if a.norm == "linf" else a.norm
    return (f"{norm} PGD-{a.steps}{restarts}{loss}, eps {a.eps:.4g}, step {a.step_size:.4g}, "
            f"{examples} test examples")

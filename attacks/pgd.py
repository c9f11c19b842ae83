"""l-inf projected gradient descent, used both inside training objectives and for evaluation."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import Tensor, nn

LossFn = Callable[[Tensor], Tensor]  # logits -> scalar loss to maximise


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """Run with the model in eval mode and restore its previous mode afterwards, even on error."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def pgd_linf(model: nn.Module, x: Tensor, loss_fn: LossFn, eps: float, step_size: float, steps: int,
             start: str = "uniform") -> Tensor:
    """Maximise loss_fn(model(x')) over the l-inf ball of radius eps around x, intersected with [0, 1].

    start: "uniform" (Madry's random start in the ball), "normal" (TRADES' x + 0.001 N(0, 1)) or "none".
    The model is put in eval mode for the attack; only the input gets gradients (parameters' .grad are
    left untouched).
    """
    x = x.detach()
    if start == "uniform":
        x_adv = x + torch.empty_like(x).uniform_(-eps, eps)
    elif start == "normal":
        x_adv = x + 0.001 * torch.randn_like(x)
    elif start == "none":
        x_adv = x.clone()
    else:
        raise ValueError(f"unknown PGD start {start!r}")
    x_adv = _project(x_adv, x, eps)
    with eval_mode(model), torch.enable_grad():
        for _ in range(steps):
            x_adv.requires_grad_(True)
            (grad,) = torch.autograd.grad(loss_fn(model(x_adv)), x_adv)
            x_adv = _project(x_adv.detach() + step_size * grad.sign(), x, eps)
    return x_adv.detach()


def _project(x_adv: Tensor, x: Tensor, eps: float) -> Tensor:
    return torch.min(torch.max(x_adv, x - eps), x + eps).clamp_(0.0, 1.0)


def cross_entropy_loss(y: Tensor) -> LossFn:
    return lambda logits: F.cross_entropy(logits, y, reduction="sum")


@torch.no_grad()
def predict(model: nn.Module, x: Tensor) -> Tensor:
    with eval_mode(model):
        return model(x).argmax(dim=1)


def pgd_robust(model: nn.Module, x: Tensor, y: Tensor, eps: float, step_size: float, steps: int,
               restarts: int = 1) -> Tensor:
    """Per example: True if classified correctly on x and on the PGD-`steps` point of every restart.

    Examples already broken (or misclassified clean) are not attacked again by later restarts.
    """
    robust = predict(model, x) == y
    for _ in range(restarts):
        idx = robust.nonzero().flatten()
        if idx.numel() == 0:
            break
        x_adv = pgd_linf(model, x[idx], cross_entropy_loss(y[idx]), eps, step_size, steps, start="uniform")
        robust[idx] = predict(model, x_adv) == y[idx]
    return robust

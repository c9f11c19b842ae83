"""Projected gradient descent in l-inf or l2, used inside training objectives and for evaluation.

Inputs are [0, 1] pixels and eps is in pixel units (the model normalises inside itself). Evaluation losses:
cross-entropy, the Carlini-Wagner margin, and Croce and Hein's difference-of-logits ratio (DLR), each
untargeted or targeted at the most likely wrong class of the clean input.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import Tensor, nn

LossFn = Callable[[Tensor], Tensor]  # logits -> scalar loss to maximise
NORMS = ("linf", "l2")
LOSSES = ("ce", "margin", "dlr")


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """Run with the model in eval mode and restore its previous mode afterwards, even on error."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def pgd(model: nn.Module, x: Tensor, loss_fn: LossFn, eps: float, step_size: float, steps: int,
        start: str = "uniform", norm: str = "linf") -> Tensor:
    """Maximise loss_fn(model(x')) over the eps-ball around x (l-inf or l2) intersected with [0, 1].

    start: "uniform" (a random point of the ball), "normal" (TRADES' x + 0.001 N(0, 1)) or "none".
    l-inf steps follow the gradient's sign; l2 steps its direction. The model is in eval mode for the
    attack; only the input gets gradients (parameters' .grad are left untouched).
    """
    if norm not in NORMS:
        raise ValueError(f"unknown norm {norm!r}; valid: {', '.join(NORMS)}")
    x = x.detach()
    x_adv = _project(x + _start(x, eps, start, norm), x, eps, norm)
    with eval_mode(model), torch.enable_grad():
        for _ in range(steps):
            x_adv.requires_grad_(True)
            (grad,) = torch.autograd.grad(loss_fn(model(x_adv)), x_adv)
            step = grad.sign() if norm == "linf" else grad / _l2(grad).clamp_min(1e-12)
            x_adv = _project(x_adv.detach() + step_size * step, x, eps, norm)
    return x_adv.detach()


def pgd_linf(model: nn.Module, x: Tensor, loss_fn: LossFn, eps: float, step_size: float, steps: int,
             start: str = "uniform") -> Tensor:
    """l-inf PGD (what the training objectives use)."""
    return pgd(model, x, loss_fn, eps, step_size, steps, start, "linf")


def _start(x: Tensor, eps: float, start: str, norm: str) -> Tensor:
    if start == "none":
        return torch.zeros_like(x)
    if start == "normal":
        return 0.001 * torch.randn_like(x)
    if start != "uniform":
        raise ValueError(f"unknown PGD start {start!r}")
    if norm == "linf":
        return torch.empty_like(x).uniform_(-eps, eps)
    direction = torch.randn_like(x)
    radius = eps * torch.rand(len(x), *[1] * (x.dim() - 1), device=x.device)
    return radius * direction / _l2(direction).clamp_min(1e-12)


def _l2(t: Tensor) -> Tensor:
    """Per-example l2 norm, shaped to broadcast over the example."""
    return t.flatten(1).norm(dim=1).view(-1, *[1] * (t.dim() - 1))


def _project(x_adv: Tensor, x: Tensor, eps: float, norm: str) -> Tensor:
    """Into the ball, then into [0, 1] (clipping only moves coordinates towards x, so it stays in the ball)."""
    if norm == "l2":
        delta = x_adv - x
        return (x + delta * (eps / _l2(delta).clamp_min(1e-12)).clamp(max=1.0)).clamp_(0.0, 1.0)
    return torch.min(torch.max(x_adv, x - eps), x + eps).clamp_(0.0, 1.0)


def cross_entropy_loss(y: Tensor) -> LossFn:
    return lambda logits: F.cross_entropy(logits, y, reduction="sum")


def attack_loss(name: str, y: Tensor, target: Tensor | None = None) -> LossFn:
    """The loss an evaluation attack maximises: untargeted on the true class y, or towards `target`."""
    if name not in LOSSES:
        raise ValueError(f"unknown attack loss {name!r}; valid: {', '.join(LOSSES)}")

    def loss(logits: Tensor) -> Tensor:
        true = logits.gather(1, y[:, None])[:, 0]
        if target is not None:
            other = logits.gather(1, target[:, None])[:, 0]
        else:
            other = logits.masked_fill(F.one_hot(y, logits.shape[1]).bool(), float("-inf")).amax(dim=1)
        if name == "ce":
            return (-F.cross_entropy(logits, target, reduction="sum") if target is not None
                    else F.cross_entropy(logits, y, reduction="sum"))
        margin = other - true  # > 0: misclassified (towards the target, if any)
        if name == "margin":
            return margin.sum()
        top = logits.sort(dim=1, descending=True).values  # DLR's scale: z_pi1 - z_pi3
        return (margin / (top[:, 0] - top[:, 2] + 1e-12)).sum()

    return loss


def most_likely_wrong_class(model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
    with torch.no_grad(), eval_mode(model):
        logits = model(x)
    return logits.masked_fill(F.one_hot(y, logits.shape[1]).bool(), float("-inf")).argmax(dim=1)


@torch.no_grad()
def predict(model: nn.Module, x: Tensor) -> Tensor:
    with eval_mode(model):
        return model(x).argmax(dim=1)


def pgd_attack(model: nn.Module, x: Tensor, y: Tensor, eps: float, step_size: float, steps: int,
               restarts: int = 1, norm: str = "linf", loss: str = "ce", targeted: bool = False) -> Tensor:
    """PGD with restarts: per example, the first point found that is misclassified (x itself if the clean
    input already is), else the last restart's point.

    Examples already broken (or misclassified clean) are not attacked again by later restarts.
    """
    x_adv = x.detach().clone()
    robust = predict(model, x) == y
    for _ in range(restarts):
        idx = robust.nonzero().flatten()
        if idx.numel() == 0:
            break
        target = most_likely_wrong_class(model, x[idx], y[idx]) if targeted else None
        loss_fn = attack_loss(loss, y[idx], target)
        x_adv[idx] = pgd(model, x[idx], loss_fn, eps, step_size, steps, start="uniform", norm=norm)
        robust[idx] = predict(model, x_adv[idx]) == y[idx]
    return x_adv


def pgd_robust(model: nn.Module, x: Tensor, y: Tensor, eps: float, step_size: float, steps: int,
               restarts: int = 1, norm: str = "linf", loss: str = "ce", targeted: bool = False) -> Tensor:
    """Per example: True if classified correctly on x and on the PGD point of every restart."""
    return predict(model, pgd_attack(model, x, y, eps, step_size, steps, restarts, norm, loss, targeted)) == y


def perturbation_norm(delta: Tensor, norm: str) -> Tensor:
    """Per-example size of a perturbation in the attack's norm (l-inf or l2)."""
    flat = delta.flatten(1)
    return flat.abs().amax(dim=1) if norm == "linf" else flat.norm(dim=1)

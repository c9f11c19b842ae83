"""The self-checks fire on models built to mask gradients (or on a weakened attack), and stay quiet on an
honest model evaluated with the same settings."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from benchmark.core.progress import Progress
from benchmark.evaluation.cascade import evaluate_model
from benchmark.evaluation.checks import beyond
from tests.conftest import smoke_config

CHECKS = ["randomness", "zero_gradients", "autoattack_vs_pgd", "black_box", "eps_monotone", "eps_falls",
          "large_eps"]


class _Blind(torch.autograd.Function):
    """Identity forward, zero gradient backward: the simplest gradient masking."""

    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        return torch.zeros_like(grad)


class ZeroGradient(nn.Module):
    def __init__(self, base: nn.Module) -> None:
        super().__init__()
        self.base = base

    def forward(self, x):
        return self.base(_Blind.apply(x))


class SnapBack(nn.Module):
    """Honest within `radius` (l-inf) of a known example; beyond it, classifies that example, with no gradient.

    Attacks at small eps work, at large eps they land in the masked region: robust accuracy rises with eps,
    stays up at any eps, and never falls."""

    def __init__(self, base: nn.Module, bank: torch.Tensor, radius: float) -> None:
        super().__init__()
        self.base, self.radius = base, radius
        self.register_buffer("bank", bank)

    def forward(self, x):
        distances = (x.detach().flatten(1)[:, None] - self.bank.flatten(1)[None]).abs().amax(dim=2)
        nearest = distances.argmin(dim=1)
        near = distances.gather(1, nearest[:, None])[:, 0] <= self.radius
        snapped = torch.where(near.view(-1, 1, 1, 1), x, self.bank[nearest])
        return self.base(snapped)


class Noisy(nn.Module):
    def __init__(self, base: nn.Module) -> None:
        super().__init__()
        self.base = base

    def forward(self, x):
        out = self.base(x)
        return out + 0.5 * torch.randn_like(out)


@pytest.fixture(scope="module")
def examples():
    from benchmark.core.data import DATASETS, load_dataset

    _, test = load_dataset(DATASETS.get("digits"), None, False)
    return TensorDataset(test.tensors[0][:200], test.tensors[1][:200])


def flags(model, examples, **settings) -> dict[str, bool]:
    cfg = smoke_config(**{"eval.evaluators": ["clean", "pgd", "autoattack"], "eval_attack.steps": 20,
                          "eval.check_examples": 100, "eval.square_queries": 300, **settings})
    result = evaluate_model(model.eval(), examples, cfg, torch.device("cpu"), None, Progress(quiet=True))
    checks = {c["name"]: c["flagged"] for c in result.checks}
    assert sorted(checks) == sorted(CHECKS)
    return checks


def test_an_honest_model_raises_no_flag(trained_digits_model, examples):
    assert flags(trained_digits_model, examples) == dict.fromkeys(CHECKS, False)


def test_zero_gradients_are_caught_by_the_gradient_black_box_and_large_eps_checks(trained_digits_model, examples):
    """With gradient attacks only (AutoAttack without its Square), as in a cheap evaluation."""
    fired = flags(ZeroGradient(trained_digits_model), examples, **{"eval.autoattack": "apgd-ce,apgd-t"})
    assert fired["zero_gradients"] and fired["black_box"] and fired["large_eps"]
    assert not fired["randomness"]


def test_robustness_that_rises_or_stays_with_eps_is_caught(trained_digits_model, examples):
    bank = examples.tensors[0]
    fired = flags(SnapBack(trained_digits_model, bank, radius=0.07), examples)
    assert fired["eps_monotone"] and fired["large_eps"]
    flat = flags(SnapBack(trained_digits_model, bank, radius=0.0), examples)
    assert flat["eps_falls"]


def test_a_randomized_model_is_caught(trained_digits_model, examples):
    assert flags(Noisy(trained_digits_model), examples)["randomness"]


def test_autoattack_weaker_than_pgd_is_caught(trained_digits_model, examples):
    """A misconfigured AutoAttack (Square with a single query) misses what PGD breaks."""
    fired = flags(trained_digits_model, examples, **{"eval.autoattack": "square", "eval.square_queries": 1})
    assert fired["autoattack_vs_pgd"]


def test_beyond_noise_is_a_one_sided_binomial_test():
    assert not beyond(0, 0, 0.05)
    assert not beyond(5, 100, 0.05) and not beyond(9, 100, 0.05)
    assert beyond(20, 100, 0.05) and beyond(3, 3, 0.05)

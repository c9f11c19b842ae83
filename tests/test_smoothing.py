"""Randomized smoothing: the confidence bound, CERTIFY against closed forms, the certified metrics, the
objectives, and reproducible radii."""

from __future__ import annotations

import math

import pytest
import torch
from scipy.stats import binom, binomtest, norm
from torch import nn
from torch.utils.data import TensorDataset

from attacks.smoothing import ABSTAIN, certify, class_counts, lower_confidence_bound
from benchmark.core.progress import Progress
from benchmark.evaluation.cascade import evaluate_model
from benchmark.evaluation.evaluators import _smoothing_metrics
from results.record import metric_value
from tests.conftest import smoke_config


@pytest.mark.parametrize("trials", [10, 100, 1000, 10_000])
@pytest.mark.parametrize("alpha", [0.001, 0.05])
def test_the_lower_bound_is_the_exact_one_sided_clopper_pearson_bound(trials, alpha):
    for successes in sorted({0, 1, trials // 3, trials // 2, trials - 1, trials}):
        lower = lower_confidence_bound(successes, trials, alpha)
        if successes == 0:
            assert lower == 0
            continue
        # by definition, P(X >= k) = alpha at the bound; and scipy's exact two-sided interval at 1 - 2 alpha
        assert binom.sf(successes - 1, trials, lower) == pytest.approx(alpha, rel=1e-6)
        exact = binomtest(successes, trials).proportion_ci(confidence_level=1 - 2 * alpha, method="exact")
        assert lower == pytest.approx(exact.low, rel=1e-9, abs=1e-12)


class Linear2(nn.Module):
    """Class 1 iff w.x + b > 0: P(f(x + delta) = c) is a normal CDF of the distance to the boundary."""

    def __init__(self, w: torch.Tensor, b: float) -> None:
        super().__init__()
        self.w, self.b = w, b

    def forward(self, x):
        score = x.flatten(1) @ self.w + self.b
        return torch.stack([torch.zeros_like(score), score], dim=1)


def linear_case(points: int, sigma: float):
    torch.manual_seed(0)
    w = torch.randn(16)
    x = torch.rand(points, 1, 4, 4)
    b = -float((x.flatten(1) @ w).median())
    distance = (x.flatten(1) @ w + b).abs() / w.norm()
    return Linear2(w, b), x, distance


def test_certified_radius_of_a_linear_classifier_is_within_sampling_error_of_the_analytic_one():
    sigma = 0.25
    model, x, distance = linear_case(64, sigma)
    torch.manual_seed(1)
    out = certify(model, x, n0=100, n=10_000, alpha=0.001, sigma=sigma, num_classes=2, max_batch=20_000)
    # the analytic radius sigma Phi^-1(p_A) is the distance to the boundary; CERTIFY uses a lower bound of p_A,
    # about 3.1 standard errors below it at alpha 0.001, plus the estimate's own error: allow 6, where p_A is
    # not so close to 1 that the bound's ceiling (alpha^(1/N)) decides
    p_a = norm.cdf((distance / sigma).numpy())
    low = p_a - 6 * (p_a * (1 - p_a) / 10_000) ** 0.5
    slack = torch.from_numpy(sigma * (norm.ppf(p_a) - norm.ppf(low.clip(0.5, None)))).float()
    checked = (out["certified_class"] != ABSTAIN) & torch.from_numpy(p_a < 0.999)
    assert checked.float().mean() > 0.6
    gap = distance - out["radius"]
    assert (gap[checked] >= 0).all() and (gap[checked] <= slack[checked] + 1e-4).all()


def test_the_radius_exceeds_the_true_one_no_more_often_than_alpha_allows():
    sigma, alpha, runs = 0.25, 0.05, 300
    model, x, distance = linear_case(1, sigma)
    x, distance = x.repeat(runs, 1, 1, 1), distance.repeat(runs)
    torch.manual_seed(2)
    out = certify(model, x, n0=50, n=300, alpha=alpha, sigma=sigma, num_classes=2, max_batch=50_000)
    above = int((out["radius"] > distance + 1e-6).sum())
    assert above <= binom.ppf(0.999, runs, alpha)


class Constant(nn.Module):
    def __init__(self, label: int, classes: int = 10) -> None:
        super().__init__()
        self.logits = torch.zeros(classes)
        self.logits[label] = 1.0

    def forward(self, x):
        return self.logits.expand(len(x), -1)


def test_a_constant_classifier_is_certified_everywhere_with_the_formula_radius():
    sigma, n, alpha = 0.5, 1000, 0.001
    out = certify(Constant(3), torch.rand(5, 1, 8, 8), n0=10, n=n, alpha=alpha, sigma=sigma, num_classes=10,
                  max_batch=999)
    assert (out["certified_class"] == 3).all() and (out["count"] == n).all()
    expected = sigma * norm.ppf(alpha ** (1 / n))  # p_A's lower bound with n of n successes is alpha^(1/n)
    assert torch.allclose(out["radius"], torch.full((5,), expected, dtype=torch.float32))
    assert (out["predicted_class"] == 3).all()


def test_counts_add_up_whatever_the_batching():
    x = torch.rand(7, 1, 8, 8)
    for max_batch in (1, 5, 64, 10_000):
        counts = class_counts(Constant(1), x, 33, 0.25, 10, max_batch)
        assert (counts.sum(1) == 33).all() and (counts[:, 1] == 33).all()


def test_certified_accuracy_falls_with_the_radius_and_abstentions_count_as_wrong():
    cfg = smoke_config(**{"certify.radii": [0.0, 0.1, 0.5, 1.0]})
    fields = {"robust": torch.tensor([True, True, False, False]), "radius": torch.tensor([0.2, 0.6, 0.0, 0.9]),
              "predicted_class": torch.tensor([1, 2, ABSTAIN, 0]), "label": torch.tensor([1, 2, 3, 1])}
    metrics = _smoothing_metrics(fields, cfg)
    assert [metric_value(metrics, "smoothing", "certified_acc", radius=r) for r in (0, 0.1, 0.5, 1)] == [
        0.5, 0.5, 0.25, 0.0]
    assert metric_value(metrics, "smoothing", "predict_acc") == 0.5  # the abstention is wrong
    assert metric_value(metrics, "smoothing", "acr") == pytest.approx((0.2 + 0.6) / 4)


def test_the_same_seed_gives_the_same_radii(trained_digits_model, digits_batch):
    cfg = smoke_config(**{"eval.evaluators": ["clean", "smoothing"], "eval.checks": False, "eval.eps_sweep": [1.0]})
    runs = [evaluate_model(trained_digits_model, TensorDataset(*digits_batch), cfg, torch.device("cpu"), None,
                           Progress(quiet=True)).metrics for _ in range(2)]
    at = {r: metric_value(runs[0], "smoothing", "certified_acc", radius=r) for r in (0.0, 0.25)}
    assert runs[0] == runs[1] and 0 < at[0.25] <= at[0.0]


@pytest.mark.parametrize("name", ["smoothing", "gaussian"])
def test_noise_objectives_use_sigma_and_draws(name, tiny_model, digits_batch):
    from benchmark.training.objectives import build_objective

    x, y = digits_batch
    losses = []
    for sigma in (0.0, 0.5):
        torch.manual_seed(0)
        cfg = smoke_config(**{"smoothing.sigma": sigma, "smoothing.draws": 2})
        loss, logits = build_objective(name, cfg).loss(tiny_model.train(), x, y)
        assert torch.isfinite(loss) and logits.shape == (len(y), 10)
        losses.append(loss.item())
    clean = torch.nn.functional.cross_entropy(tiny_model(x), y).item()
    assert losses[0] == pytest.approx(clean, rel=1e-4)  # no noise: the KL vanishes, the CE is the clean one
    assert losses[1] != pytest.approx(clean, rel=1e-3)


def test_smoothing_settings_key_only_the_runs_that_use_them():
    base = smoke_config()
    assert base.with_settings("smoothing", sigma=0.5).pretrain_key() == base.pretrain_key()
    smooth = smoke_config(objective="smoothing")
    assert smooth.with_settings("smoothing", sigma=0.5).pretrain_key() != smooth.pretrain_key()
    assert math.isclose(smooth.settings_of("smoothing").sigma, 0.25)
    # a run that trains with neither noise objective keeps its key whatever the noise settings
    assert base.with_settings("smoothing", sigma=0.5).key() == base.key()
    assert smooth.with_settings("smoothing", sigma=0.5).key() != smooth.key()

"""ADMM specifics: Z on the sparsity set, the dual update's formula, and W approaching Z over the phase."""

import copy

import pytest
import torch

from benchmark import runner
from benchmark.core.data import make_loader
from benchmark.core.mask import kept_count, magnitude_mask, prunable_weights
from benchmark.training.loop import Phase
from benchmark.training.objectives import build_objective
from methods import build_pruner
from tests.conftest import smoke_config


def z_on_sparsity_set(pruner, scope):
    if scope == "layer":
        return all(int((z != 0).sum()) <= kept_count(z.numel(), pruner.sparsity) for z in pruner.z.values())
    total = sum(z.numel() for z in pruner.z.values())
    return sum(int((z != 0).sum()) for z in pruner.z.values()) <= kept_count(total, pruner.sparsity)


@pytest.mark.parametrize("scope", ["layer", "global"])
def test_z_stays_on_the_sparsity_set_and_u_follows_the_formula(tiny_model, scope):
    cfg = smoke_config(scope=scope).replace(method="admm", sparsity=0.9)
    pruner = build_pruner("admm", cfg)
    pruner.prepare(tiny_model, Phase("admm", pruner.settings))
    assert z_on_sparsity_set(pruner, scope)
    assert all(torch.all(u == 0) for u in pruner.u.values())
    for _ in range(3):
        with torch.no_grad():
            for w in prunable_weights(tiny_model).values():
                w.add_(0.01 * torch.randn_like(w))
        weights = {n: w.detach().clone() for n, w in prunable_weights(tiny_model).items()}
        u_before, rho_before = {n: u.clone() for n, u in pruner.u.items()}, pruner.rho
        pruner.update(tiny_model)
        assert z_on_sparsity_set(pruner, scope)
        for name, w in weights.items():
            assert torch.equal(pruner.z[name], (w + u_before[name]) * pruner.z_support[name])
            assert torch.allclose(pruner.u[name], u_before[name] + w - pruner.z[name])
        assert pruner.rho == pytest.approx(rho_before * pruner.settings.rho_growth)


def test_regulariser_is_the_augmented_lagrangian_term(tiny_model):
    cfg = smoke_config().replace(method="admm", sparsity=0.5)
    pruner = build_pruner("admm", cfg)
    pruner.prepare(tiny_model, Phase("admm", pruner.settings))
    pruner.u = {n: torch.full_like(u, 0.1) for n, u in pruner.u.items()}
    expected = sum(((w - pruner.z[n] + 0.1) ** 2).sum() for n, w in prunable_weights(tiny_model).items())
    assert pruner.regularize(tiny_model, None).item() == pytest.approx(0.5 * pruner.settings.rho * expected.item())


def test_w_approaches_z_over_the_admm_phase(trained_digits_model):
    """From a trained model, ADMM training shrinks ||W - Z||: the weights move onto the sparse set."""
    tiny_model = copy.deepcopy(trained_digits_model).train()
    cfg = smoke_config().replace(method="admm", sparsity=0.9, objective="natural").with_settings(
        "admm", rho=1.0, rho_growth=1.3)
    pruner = build_pruner("admm", cfg)
    pruner.prepare(tiny_model, Phase("admm", pruner.settings))
    train_set, _ = runner.data_for(cfg, runner.Environment(out=None))
    objective = build_objective("natural", cfg)
    opt = torch.optim.SGD(tiny_model.parameters(), lr=0.02)

    def distance():
        weights = prunable_weights(tiny_model)
        return sum(float((w.detach() - pruner.z[n]).norm() ** 2) for n, w in weights.items()) ** 0.5

    distances = []
    for _ in range(12):
        for x, y in make_loader(train_set, 64, shuffle=True, generator=torch.Generator().manual_seed(0)):
            opt.zero_grad()
            loss, _ = objective.loss(tiny_model, x, y)
            (loss + pruner.regularize(tiny_model, None)).backward()
            opt.step()
        pruner.update(tiny_model)
        distances.append(distance())
    assert distances[-1] < 0.5 * distances[0], distances


@pytest.mark.parametrize("scope", ["layer", "global"])
def test_final_mask_is_the_magnitude_mask_of_the_trained_weights(tiny_model, scope):
    """Ye et al. hard-prune W by its own magnitude: with W held fixed through dual updates that move Z and U,
    the final mask is still exactly W's magnitude mask; `final_mask=z` keeps the last Z's support instead."""
    cfg = smoke_config(scope=scope).replace(method="admm", sparsity=0.9)
    pruner = build_pruner("admm", cfg)
    pruner.prepare(tiny_model, Phase("admm", pruner.settings))
    with torch.no_grad():
        for w in prunable_weights(tiny_model).values():
            w.add_(0.05 * torch.randn_like(w))
    for _ in range(2):
        pruner.update(tiny_model)  # W fixed: U grows by W - Z, so Z = proj(W + U) drifts from W's own top-k
    expected = magnitude_mask(tiny_model, 0.9, scope)
    final = pruner.mask(tiny_model)
    assert set(final) == set(expected)
    assert all(torch.equal(final[n], expected[n]) for n in expected)
    assert any(not torch.equal(pruner.z_support[n], expected[n]) for n in expected)  # the two rules differ here
    z_rule = build_pruner("admm", cfg.with_settings("admm", final_mask="z"))
    z_rule.load_state_dict(pruner.state_dict())
    assert all(torch.equal(z_rule.mask(tiny_model)[n], pruner.z_support[n]) for n in expected)

"""HYDRA specifics: scaled init, straight-through gradients, one mask computation per optimizer step."""

import math

import torch
import torch.nn.functional as F
from torch.nn.utils import parametrize

import methods.hydra as hydra
from benchmark.core.config import TrainSettings
from benchmark.core.mask import magnitude_mask, prunable_modules, prunable_weights
from benchmark.training.loop import Phase


def prepared(model, sparsity=0.9, scope="layer"):
    pruner = hydra.Hydra(sparsity, scope)
    phase = Phase("prune", TrainSettings(epochs=1))
    pruner.prepare(model, phase)
    return pruner, phase


def test_scaled_init_matches_formula_and_starts_at_the_magnitude_mask(tiny_model):
    originals = {n: w.detach().clone() for n, w in prunable_weights(tiny_model).items()}
    lwm = magnitude_mask(tiny_model, 0.9, "layer")
    pruner, _ = prepared(tiny_model)
    for name, module in prunable_modules(tiny_model).items():
        w = originals[f"{name}.weight"]
        scores = module.parametrizations.weight[0].scores
        expected = math.sqrt(6 / w[0].numel()) * w / w.abs().max()
        assert torch.allclose(scores, expected)
    hydra_mask = pruner.mask(tiny_model)
    assert all(torch.equal(hydra_mask[n], lwm[n]) for n in lwm)


def test_effective_weights_are_masked_and_weights_frozen(tiny_model):
    originals = {n: w.detach().clone() for n, w in prunable_weights(tiny_model).items()}
    pruner, phase = prepared(tiny_model)
    mask = pruner.mask(tiny_model)
    for name, w_eff in prunable_weights(tiny_model).items():
        assert torch.equal(w_eff.detach(), originals[name] * mask[name])
    trainable = list(pruner.trainable(tiny_model, phase))
    assert all(any(p is s for s in trainable) for p in pruner._score_set.scores.values())
    weights = [m.parametrizations.weight.original for m in prunable_modules(tiny_model).values()]
    assert not any(p.requires_grad for p in weights)


def test_straight_through_gradient_reaches_every_score(tiny_model, digits_batch):
    x, y = digits_batch
    originals = {n: w.detach().clone() for n, w in prunable_weights(tiny_model).items()}
    prepared(tiny_model)
    with parametrize.cached():  # so the effective weights read here are the ones the forward pass uses
        w_eff = prunable_weights(tiny_model)
        for w in w_eff.values():
            w.retain_grad()
        F.cross_entropy(tiny_model(x), y).backward()
    for name, module in prunable_modules(tiny_model).items():
        scores = module.parametrizations.weight[0].scores
        expected = w_eff[f"{name}.weight"].grad * originals[f"{name}.weight"] * scores.sign()
        assert torch.allclose(scores.grad, expected)
        pruned = w_eff[f"{name}.weight"].detach() == 0
        assert scores.grad[pruned].abs().sum() > 0, "pruned weights must get score gradients (they can come back)"


def test_mask_is_computed_once_per_optimizer_step(tiny_model, digits_batch, monkeypatch):
    x, y = digits_batch
    pruner, phase = prepared(tiny_model)
    calls = []
    real = hydra.topk_mask
    monkeypatch.setattr(hydra, "topk_mask", lambda *a, **k: calls.append(1) or real(*a, **k))
    opt = torch.optim.SGD(pruner.trainable(tiny_model, phase), lr=0.1)
    for _ in range(3):
        before = len(calls)
        for _ in range(5):  # e.g. attack steps: no score change, no new mask
            F.cross_entropy(tiny_model(x), y).backward()
        assert len(calls) - before <= 1
        opt.step()
        opt.zero_grad()
    assert len(calls) == 2  # at the first forward after each of the first two steps; none before any step


def test_release_restores_a_plain_model(tiny_model):
    originals = {n: w.detach().clone() for n, w in prunable_weights(tiny_model).items()}
    pruner, _ = prepared(tiny_model)
    pruner.release(tiny_model)
    assert not any("parametrizations" in k for k in tiny_model.state_dict())
    assert all(torch.equal(w, originals[n]) for n, w in prunable_weights(tiny_model).items())
    assert all(p.requires_grad for p in tiny_model.parameters())


def test_global_scope_is_exact(tiny_model):
    pruner, _ = prepared(tiny_model, 0.95, "global")
    from benchmark.core.mask import kept_count

    mask = pruner.mask(tiny_model)
    assert mask.kept == kept_count(mask.total, 0.95)

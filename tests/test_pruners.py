"""The pruner contract, parametrized over the registry: every pruner added later is checked too."""

from __future__ import annotations

import pytest
import torch

from benchmark import runner
from benchmark.core.io import safe_load
from benchmark.core.mask import kept_count, prunable_weights
from benchmark.runner import export_state, new_model, run_cell
from benchmark.training import loop as train
from methods import METHODS, build_pruner
from tests.conftest import smoke_config

ALL_METHODS = METHODS.names()


def pruned_without_training(cfg):
    """A fresh model through the pruner's own phases without training, its own state standing in for the
    pretraining state a pruner rewinds to; returns (released model, mask)."""
    torch.manual_seed(0)
    model = new_model(cfg)
    pruner = build_pruner(cfg.method, cfg)
    if pruner.rewind_epoch is not None:
        pruner.rewind_state = {k: v.clone() for k, v in model.state_dict().items()}
    for phase in pruner.phases():
        pruner.prepare(model, phase)
    mask = pruner.mask(model)
    pruner.release(model)
    return model, mask


@pytest.mark.parametrize("method", ALL_METHODS)
@pytest.mark.parametrize("scope", ["layer", "global"])
@pytest.mark.parametrize("sparsity", [0.5, 0.9, 0.99])
def test_mask_has_exact_target_sparsity(method, scope, sparsity):
    cfg = smoke_config(scope=scope).replace(method=method, sparsity=sparsity)
    model, mask = pruned_without_training(cfg)
    mask.validate(model)
    if scope == "layer":
        for name, keep in mask.items():
            assert int(keep.sum()) == kept_count(keep.numel(), sparsity), name
    else:
        assert mask.kept == kept_count(mask.total, sparsity)


@pytest.mark.parametrize("method", ALL_METHODS)
def test_exported_model_loads_strictly_and_computes_the_same(method, digits_batch):
    cfg = smoke_config().replace(method=method, sparsity=0.9)
    model, mask = pruned_without_training(cfg)
    mask.apply_(model)
    plain = new_model(cfg)
    plain.load_state_dict(export_state(model, mask), strict=True)
    x, _ = digits_batch
    model.eval()
    plain.eval()
    assert torch.equal(model(x), plain(x))
    for name, w in prunable_weights(plain).items():
        assert torch.all(w[~mask[name]] == 0)


@pytest.mark.parametrize("objective", ["trades", "smoothing", "ibp"])
@pytest.mark.parametrize("method", ALL_METHODS)
def test_masked_weights_stay_zero_after_every_step_of_every_phase(method, objective, env, monkeypatch):
    """Runs a whole smoke cell; after every optimizer step of every phase with a mask, masked weights are 0.

    Phases before the mask exists (a pruner's own) are checked against the mask the pruner would hand over
    now, for pruners whose effective weights already follow it (HYDRA's score masks).
    """
    checked = {"steps": 0}
    real_run_phase = train.run_phase

    def assert_zero(model, mask):
        for name, w in prunable_weights(model).items():
            assert torch.all(w.detach()[~mask[name]] == 0), f"masked weights of {name} are not zero"
        checked["steps"] += 1

    def run_phase_checked(model, phase, *args, **kwargs):
        if phase.mask is not None:
            phase.step_callbacks.append(lambda m: assert_zero(m, phase.mask))
        return real_run_phase(model, phase, *args, **kwargs)

    monkeypatch.setattr(runner.train, "run_phase", run_phase_checked)
    cfg = smoke_config(objective=objective).replace(method=method, sparsity=0.9)
    record = run_cell(cfg, env)
    assert record.status == "done" and record.objective == objective
    assert checked["steps"] > 0 or cfg.finetune.epochs == 0
    assert record.sparsity_actual == pytest.approx(0.9, abs=0.005)
    exported = safe_load(runner.run_dir(env, cfg) / "model.pt")
    plain = new_model(cfg)
    plain.load_state_dict(exported, strict=True)
    for name, w in prunable_weights(plain).items():
        assert int((w == 0).sum()) >= w.numel() - kept_count(w.numel(), 0.9), name


def test_hydra_prune_phase_effective_weights_follow_the_current_mask(env, monkeypatch):
    """HYDRA's phase: after each score update, the effective weights are zero where the current mask is."""
    checked = {"steps": 0}
    real_run_phase = train.run_phase

    def run_phase_checked(model, phase, *args, **kwargs):
        if phase.name == "prune":
            def check(m):
                mask = hydra_pruner["p"].mask(m)
                for name, w in prunable_weights(m).items():
                    assert torch.all(w.detach()[~mask[name]] == 0)
                checked["steps"] += 1
            phase.step_callbacks.append(check)
        return real_run_phase(model, phase, *args, **kwargs)

    hydra_pruner = {}
    real_build = runner.build_pruner

    def build_and_keep(*args):
        hydra_pruner["p"] = real_build(*args)
        return hydra_pruner["p"]

    monkeypatch.setattr(runner, "build_pruner", build_and_keep)
    monkeypatch.setattr(runner.train, "run_phase", run_phase_checked)
    run_cell(smoke_config().replace(method="hydra", sparsity=0.9), env)
    assert checked["steps"] > 0

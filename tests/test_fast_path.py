"""The fast path: --amp bf16 changes results and the run key; --channels-last and --compile change neither key."""

from __future__ import annotations

import dataclasses

import torch

from benchmark import runner
from benchmark.core.io import safe_load
from benchmark.core.progress import Progress
from benchmark.grid import resolve
from benchmark.runner import Environment
from benchmark.spec import spec_from
from benchmark.training import loop
from benchmark.training.fast_path import FastPath
from benchmark.training.objectives import build_objective
from tests.conftest import smoke_config


def test_amp_bf16_enters_the_training_keys_and_fp32_keeps_every_key():
    base = smoke_config().replace(method="hydra", sparsity=0.9)
    amp = smoke_config(amp="bf16").replace(method="hydra", sparsity=0.9)
    assert amp.amp == "bf16" and base.amp == "fp32"
    assert amp.key() != base.key() and amp.pretrain_key() != base.pretrain_key()
    assert amp.eval_key() == base.eval_key()  # the evaluation stays fp32
    fp32 = smoke_config(amp="fp32").replace(method="hydra", sparsity=0.9)
    assert (fp32.key(), fp32.pretrain_key()) == (base.key(), base.pretrain_key())


def test_channels_last_and_compile_are_run_options_outside_every_key():
    plain, _ = spec_from({"preset": "smoke"}, "test")
    fast, opts = spec_from({"preset": "smoke", "channels_last": True, "compile": True}, "test")
    assert opts.channels_last and opts.compile
    keys = [[(c.key(), c.pretrain_key(), c.eval_key()) for c in resolve(s).cells] for s in (plain, fast)]
    assert keys[0] == keys[1]


def test_the_loop_trains_under_bf16_autocast_and_leaves_the_model_fp32(tmp_path, tiny_model, smoke_cfg):
    seen: set[torch.dtype] = set()
    tiny_model.register_forward_hook(lambda m, i, out: seen.add(out.dtype))
    x, y = torch.rand(16, 1, 8, 8), torch.randint(0, 10, (16,))
    phase = loop.Phase("pretrain", dataclasses.replace(smoke_cfg.pretrain, epochs=1),
                       objective=build_objective("trades", smoke_cfg), params=list(tiny_model.parameters()),
                       checkpoint=tmp_path / "ckpt.pt")
    loop.run_phase(tiny_model, phase, [(x, y)], torch.Generator(), torch.device("cpu"), Progress(quiet=True),
                   FastPath(amp="bf16", channels_last=True))
    assert seen == {torch.bfloat16}  # every forward pass, TRADES' attack steps and target included
    assert all(p.dtype == torch.float32 for p in tiny_model.parameters())
    assert tiny_model(x).dtype == torch.float32  # outside the loop (the evaluation): fp32


def test_bound_propagation_stays_fp32_under_autocast(tiny_model):
    cfg = smoke_config(objective="ibp").with_settings("verifiable", kappa_start=0.0, kappa_end=0.0)
    objective = build_objective("ibp", cfg)  # kappa 0: the loss is the worst-case logits' alone
    x, y = torch.rand(8, 1, 8, 8), torch.randint(0, 10, (8,))
    fp32_loss, fp32_worst = objective.loss(tiny_model, x, y)
    with FastPath(amp="bf16").autocast(x.device):
        amp_loss, amp_worst = objective.loss(tiny_model, x, y)
    assert amp_worst.dtype == torch.float32
    assert torch.equal(amp_worst, fp32_worst) and torch.equal(amp_loss, fp32_loss)


def test_a_smoke_cell_trains_with_amp_bf16_and_channels_last_on_the_cpu(tmp_path):
    cfg = smoke_config(amp="bf16", eval=["clean", "pgd"], **{"eval.checks": False}).replace(method="hydra",
                                                                                          sparsity=0.9)
    env = Environment(out=tmp_path, quiet=True, channels_last=True)
    record = runner.run_cell(cfg, env)
    assert record.status == "done" and record.value("clean") > 0.3
    fp32 = cfg.replace(amp="fp32")
    runner.run_cell(fp32, env)
    amp_state, fp32_state = (safe_load(runner.run_dir(env, c) / "model.pt") for c in (cfg, fp32))
    assert any(not torch.equal(amp_state[k], fp32_state[k]) for k in fp32_state)  # bf16 changes the numbers

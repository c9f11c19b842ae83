"""Evaluate a checkpoint rpbench did not train (`python -m benchmark eval`), into the same store and tables.

The state_dict must fit a registered architecture exactly (strict loading, weights_only). Accepted layouts:
rpbench's export (normalisation layer included), a plain state_dict of the architecture's body as
torchvision and most papers save it (the dataset's mean/std are then used for the normalisation layer), either
one wrapped in {"state_dict": ...} or {"model": ...}, with or without DataParallel's "module." prefix.
"""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path
from typing import Any

import torch
from torch import nn

from benchmark.core.config import RunConfig, content_key
from benchmark.core.errors import UserError
from benchmark.core.io import safe_load
from benchmark.core.mask import prunable_weights
from benchmark.core.progress import Progress
from benchmark.runner import Environment, evaluate_on_test, new_model, record_for
from results.record import RunRecord

EXTERNAL = "external"


def unwrap(state: Any, path: Path) -> dict[str, torch.Tensor]:
    if isinstance(state, dict):
        for key in ("state_dict", "model"):
            if isinstance(state.get(key), dict):
                state = state[key]
                break
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UserError(f"{path} holds no state_dict of tensors")
    return {k.removeprefix("module."): v for k, v in state.items()}


def load_external(path: Path, cfg: RunConfig) -> nn.Module:
    """A fresh model of cfg's architecture with the checkpoint's weights, loaded strictly."""
    state = unwrap(safe_load(path), path)
    model = new_model(cfg)
    # our layout, then the body alone: a torchvision-style module, or a flat Sequential indexed from 0
    # (a view sharing the model's modules, so loading into it loads into the model)
    body = model[1] if len(model) == 2 else nn.Sequential(*model[1:])
    errors = []
    for target in (model, body):
        try:
            target.load_state_dict(state, strict=True)
            return model
        except RuntimeError as exc:
            errors.append(str(exc).strip().splitlines()[-1].strip())
    raise UserError(f"{path} does not fit arch {cfg.arch!r}: {errors[0]}")


def checkpoint_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def evaluate_checkpoint(path: Path, cfg: RunConfig, env: Environment, name: str) -> RunRecord:
    """Evaluate a foreign checkpoint under `name` with cfg's evaluation. The key hashes the file's content
    and the settings its model depends on; per-example results go to external/<key>/eval/, so evaluating the
    same file again with more evaluators computes only the new ones."""
    model = load_external(path, cfg).to(env.device)
    weights = prunable_weights(model)
    zeros = sum(int((w == 0).sum()) for w in weights.values())
    sparsity = zeros / sum(w.numel() for w in weights.values())
    cfg = cfg.replace(method=name, objective=EXTERNAL, sparsity=round(sparsity, 4))
    key = content_key({"checkpoint": checkpoint_digest(path), "model": cfg.key()})
    progress = Progress(env.quiet).for_run(env.out / EXTERNAL / key / "log.txt", name)
    evaluation = evaluate_on_test(model, cfg, env, progress, env.out / EXTERNAL / key / "eval")
    record = record_for(cfg, env, status="done", evaluation=evaluation, sparsity_actual=sparsity,
                        cost={"eval_seconds": evaluation.total_seconds})
    return dataclasses.replace(record, key=key)

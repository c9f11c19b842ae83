"""Evaluate a checkpoint rpbench did not train (`python -m benchmark eval`), into the same store and tables.

The state_dict must fit a registered architecture exactly (strict loading, weights_only) under one of the
layouts of `benchmark.core.layouts`: rpbench's export, the body alone (torchvision, flat Sequentials),
kuangliu/RobustBench ResNet-18 and PreAct ResNet-18, TRADES/RobustBench WideResNets, HYDRA's subnet
checkpoints (the mask their popup_scores imply at --hydra-k is applied); plain, or wrapped in {"net": ...},
{"state_dict": ...} or {"model": ...}, with or without DataParallel's "module." prefix.
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass
from pathlib import Path

from torch import nn

from benchmark.core.config import RunConfig, content_key
from benchmark.core.data import DATASETS
from benchmark.core.errors import UserError
from benchmark.core.io import safe_load
from benchmark.core.layouts import (
    Normalization,
    apply_popup_scores,
    has_popup_scores,
    load_into,
    parse_normalize,
    unwrap,
)
from benchmark.core.mask import prunable_weights
from benchmark.core.progress import Progress
from benchmark.runner import Environment, evaluate_on_test, new_model, record_for
from results.record import RunRecord

EXTERNAL = "external"


@dataclass(frozen=True)
class Loaded:
    """A foreign checkpoint in an rpbench model: the layout it fitted, the normalization it got (and the one
    its layout implies), the kept fraction its HYDRA scores were masked at."""

    model: nn.Sequential
    layout: str
    normalization: Normalization
    default_normalization: Normalization
    hydra_k: float | None = None

    def description(self) -> str:
        hydra = f", HYDRA mask at k={self.hydra_k:g}" if self.hydra_k is not None else ""
        return f"checkpoint layout {self.layout}{hydra}, input normalization {self.normalization.describe()}"


def requested_normalization(text: str | None, dataset: str) -> Normalization | None:
    """`--normalize`'s value for the dataset (None: not given, the layout's default applies)."""
    if text is None:
        return None
    info = DATASETS.get(dataset)
    return parse_normalize(text, info.mean, info.std)


def load_external(path: Path, cfg: RunConfig, normalization: Normalization | None = None,
                  hydra_k: float | None = None) -> Loaded:
    """A fresh model of cfg's architecture with the checkpoint's weights, loaded strictly, its input layer set
    to `normalization` (None: what the layout implies: the file's own buffers, none, or the dataset's)."""
    state = unwrap(safe_load(path), path)
    scored = has_popup_scores(state)
    if scored and hydra_k is None:
        raise UserError(f"{path} is a HYDRA subnet checkpoint (popup_scores) and does not store its kept fraction: "
                        f"pass --hydra-k, HYDRA's --k (e.g. 0.01 for 99% sparsity)")
    if hydra_k is not None and not scored:
        raise UserError(f"--hydra-k was given, but {path} holds no popup_scores (HYDRA's subnet layers)")
    if scored:
        state = apply_popup_scores(state, hydra_k, path)
    model = new_model(cfg)
    layout = load_into(model, state, cfg.arch, path)
    info = DATASETS.get(cfg.dataset)
    if layout.normalization == "checkpoint":
        default = Normalization.of(model[0])
    elif layout.normalization == "none" or scored:  # HYDRA's CIFAR/SVHN code feeds raw [0, 1] inputs
        default = Normalization.identity(len(info.mean))
    else:
        default = Normalization(tuple(info.mean), tuple(info.std))
    chosen = normalization or default
    chosen.install(model[0])
    return Loaded(model, layout.name, chosen, default, hydra_k)


def checkpoint_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def evaluate_checkpoint(path: Path, cfg: RunConfig, env: Environment, name: str,
                        normalization: Normalization | None = None, hydra_k: float | None = None) -> RunRecord:
    """Evaluate a foreign checkpoint under `name` with cfg's evaluation. The key hashes the file's content
    and the settings its model depends on (the file fixes its layout, so a normalization enters the key only
    where it is not the layout's default); per-example results go to external/<key>/eval/, so evaluating the
    same file again with more evaluators computes only the new ones."""
    loaded = load_external(path, cfg, normalization, hydra_k)
    model = loaded.model.to(env.device)
    weights = prunable_weights(model)
    zeros = sum(int((w == 0).sum()) for w in weights.values())
    sparsity = zeros / sum(w.numel() for w in weights.values())
    cfg = cfg.replace(method=name, objective=EXTERNAL, sparsity=round(sparsity, 4))
    chosen = loaded.normalization
    extra = {"normalization": [chosen.mean, chosen.std]} if chosen != loaded.default_normalization else {}
    if hydra_k is not None:
        extra["hydra_k"] = hydra_k
    key = content_key({"checkpoint": checkpoint_digest(path), "model": cfg.key(), **extra})
    progress = Progress(env.quiet).for_run(env.out / EXTERNAL / key / "log.txt", name)
    evaluation = evaluate_on_test(model, cfg, env, progress, env.out / EXTERNAL / key / "eval")
    record = record_for(cfg, env, status="done", evaluation=evaluation, sparsity_actual=sparsity,
                        cost={"eval_seconds": evaluation.total_seconds})
    checkpoint = {"layout": loaded.layout, "mean": list(chosen.mean), "std": list(chosen.std), "hydra_k": hydra_k}
    return dataclasses.replace(record, key=key, eval_desc=f"{record.eval_desc}; {loaded.description()}",
                               evaluation={**(record.evaluation or {}), "checkpoint": checkpoint})

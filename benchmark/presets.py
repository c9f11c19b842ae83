"""Presets: named bundles of budgets and hyperparameters, resolved against a dataset.

`smoke` is for tests (seconds). `quick` is a meaningful small experiment on a laptop CPU: small data is used
whole, large data is subsampled. `paper` is HYDRA's published protocol (../shared/reference/hydra_protocol.md):
pretrain 100 epochs at lr 0.1, prune 20 at lr 0.1, finetune 100 at lr 0.01, SGD 0.9 / 1e-4, cosine, batch 128,
TRADES beta 6 with 10 attack steps, evaluation with PGD-50. The bound-based objectives (ibp, crown-ibp,
mixtrain) get their own budgets and Adam, as HYDRA's verifiable-training configs (section 5 of the protocol).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from benchmark.core.config import RunConfig
from benchmark.core.data import DatasetInfo
from benchmark.core.registry import Registry
from benchmark.training.objectives import OBJECTIVES

SMALL_DATASETS = ("digits",)  # used whole by `quick`; anything larger is subsampled


@dataclass(frozen=True)
class Preset:
    name: str
    description: str
    overrides: Callable[[DatasetInfo, RunConfig], dict[str, Any]]  # (dataset, the run's objective and arch)


PRESETS: Registry[Preset] = Registry("preset")


def _bound_based(cfg: RunConfig) -> bool:
    return any(OBJECTIVES.get(name).bound_based for name in (cfg.objective, cfg.effective_pretrain_objective))


VERIFIED_EVALUATORS = ["clean", "pgd", "ibp", "crown", "sym"]


def _smoke(info: DatasetInfo, cfg: RunConfig) -> dict[str, Any]:
    return {
        "verifiable": {"ramp_epochs": 2},
        "pretrain": {"epochs": 3, "batch_size": 32},
        "prune": {"epochs": 1, "batch_size": 32},
        "finetune": {"epochs": 1, "batch_size": 32},
        "train_attack": {"steps": 2},
        "eval_attack": {"steps": 5, "restarts": 1},
        "eval": {"evaluators": ["clean", "pgd"], "eps_sweep": [0.5, 1.0, 2.0], "check_examples": 32,
                 "square_queries": 100},
        "certify": {"n0": 20, "n": 200, "examples": 32},
        "admm": {"epochs": 1, "batch_size": 32},
        "lottery": {"epochs": 1, "batch_size": 32},
        "lottery_rate": 0.7,
        "train_examples": 512,
        "eval_examples": 128,
    }


def _quick(info: DatasetInfo, cfg: RunConfig) -> dict[str, Any]:
    if _bound_based(cfg):
        return _quick_bound_based(info)
    if info.name in SMALL_DATASETS:
        return {"certify": {"n": 1000}}  # otherwise RunConfig's defaults are the quick preset on digits
    return {
        "pretrain": {"epochs": 15},
        "prune": {"epochs": 5},
        "finetune": {"epochs": 10},
        "admm": {"epochs": 5},
        "lottery": {"epochs": 3},
        "train_attack": {"steps": 5},
        "train_examples": 10000,
        "eval_examples": 1000,
        "certify": {"n": 1000, "examples": 500},
    }


def _quick_bound_based(info: DatasetInfo) -> dict[str, Any]:
    """About 30 minutes on 2 CPU cores for the dense model and three methods at three sparsities (README)."""
    adam = {"optimizer": "adam", "weight_decay": 0.0}
    subset = {} if info.name in SMALL_DATASETS else {"train_examples": 10000, "eval_examples": 1000}
    return {
        "pretrain": {"epochs": 10, "lr": 1e-3, **adam},
        "prune": {"epochs": 3, "lr": 1e-3, **adam},  # HYDRA's 1e-5 moves scores too little in 3 short epochs
        "finetune": {"epochs": 5, "lr": 5e-4, **adam},
        "admm": {"epochs": 3},
        "lottery": {"epochs": 2},
        "verifiable": {"ramp_epochs": 6},
        "eval": {"evaluators": VERIFIED_EVALUATORS},
        "verify": {"examples": 500},
        **subset,
    }


def _paper(info: DatasetInfo, cfg: RunConfig) -> dict[str, Any]:
    if _bound_based(cfg):
        return _paper_bound_based(cfg)
    return {
        "pretrain": {"epochs": 100, "lr": 0.1},
        "prune": {"epochs": 20, "lr": 0.1},
        "finetune": {"epochs": 100, "lr": 0.01},
        "admm": {"epochs": 20, "lr": 0.01},
        "admm_rho": 1e-3,
        "lottery": {"epochs": 20, "lr": 0.1},
        "train_attack": {"steps": 10},
        "eval_attack": {"steps": 50, "restarts": 5},
        "eval": {"autoattack": "standard", "check_examples": 500, "square_queries": 5000},
    }


def _paper_bound_based(cfg: RunConfig) -> dict[str, Any]:
    """HYDRA's MixTrain and CROWN-IBP configs (hydra_protocol.md, section 5); `ibp` takes CROWN-IBP's."""
    adam = {"optimizer": "adam", "weight_decay": 1e-4}
    evaluation = {"eval_attack": {"steps": 50, "restarts": 5},
                  "eval": {"evaluators": ["clean", "pgd", "autoattack", "ibp", "sym"], "autoattack": "standard"}}
    if cfg.objective == "mixtrain":
        batch = {"batch_size": 50, **adam}
        return {"pretrain": {"epochs": 60, "lr": 1e-3, **batch}, "prune": {"epochs": 20, "lr": 1e-5, **batch},
                "finetune": {"epochs": 60, "lr": 5e-4, **batch},
                "verifiable": {"ramp_epochs": 15, "mixtrain_examples": 1 if cfg.arch == "cnn-large" else 5},
                **evaluation}
    return {"pretrain": {"epochs": 200, "lr": 1e-3, **adam}, "prune": {"epochs": 20, "lr": 1e-5, **adam},
            "finetune": {"epochs": 100, "lr": 1e-5, **adam},
            "verifiable": {"ramp_epochs": 120, "kappa_start": 0.0, "kappa_end": 0.0}, **evaluation}


PRESETS.add("smoke", Preset("smoke", "seconds: 3+1+1 epochs on 512 examples, PGD-2 training, PGD-5 eval on 128",
                            _smoke))
PRESETS.add("quick", Preset("quick", "minutes on a CPU: 40+10+20 epochs on digits (15+5+10 on a 10,000-example "
                            "subset elsewhere), TRADES-10 (5 elsewhere); eval PGD-20 x 2 restarts then AutoAttack "
                            "APGD-CE + APGD-T + Square 1,000 queries (1,000 examples); bound-based objectives: "
                            "10+3+5 epochs with Adam, PGD, IBP, CROWN and symbolic verification on 500",
                            _quick))
PRESETS.add("paper", Preset("paper", "HYDRA's protocol: 100+20+100 epochs, lr 0.1/0.1/0.01, TRADES-10; eval PGD-50 x 5 "
                            "restarts then AutoAttack standard, full test set; bound-based objectives: HYDRA's "
                            "MixTrain/CROWN-IBP configs (Adam, prune lr 1e-5), IBP and symbolic verification",
                            _paper))

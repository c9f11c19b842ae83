"""Presets: named bundles of budgets. This module holds the budgets of the core sections (pretrain, finetune,
attacks, evaluation, data); each plug-in's settings group holds its own (`SettingsGroup.budget`), so a new
pruner brings its smoke/quick/paper values in its own file.

`smoke` is for tests (seconds). `quick` is a meaningful small experiment on a laptop CPU: small data is used
whole, large data is subsampled. `paper` is HYDRA's published protocol (../shared/reference/hydra_protocol.md):
pretrain 100 epochs at lr 0.1, finetune 100 at lr 0.01, SGD 0.9 / 1e-4, cosine, batch 128, TRADES-10,
evaluation with PGD-50 x 5 and AutoAttack. The bound-based objectives (ibp, crown-ibp, mixtrain) get their
own budgets and Adam, as HYDRA's verifiable-training configs (section 5 of the protocol).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from benchmark.core.data import DatasetInfo
from benchmark.core.registry import Registry

SMALL_DATASETS = ("digits",)  # used whole by `quick`; anything larger is subsampled
VERIFIED_EVALUATORS = ["clean", "pgd", "ibp", "crown", "sym"]


@dataclass(frozen=True)
class PresetContext:
    """What a budget may depend on: the preset, the dataset, the arch and the run's objectives."""

    preset: str
    dataset: DatasetInfo
    arch: str
    objective: str
    bound_based: bool  # the run's objective (or pretrain objective) trains on certified bounds

    @property
    def small(self) -> bool:
        return self.dataset.name in SMALL_DATASETS

    @property
    def batch(self) -> dict[str, Any]:
        """The batch size of every phase, where the preset sets one (smoke: 32; MixTrain's paper configs: 50)."""
        if self.preset == "smoke":
            return {"batch_size": 32}
        if self.preset == "paper" and self.objective == "mixtrain":
            return {"batch_size": 50}
        return {}

    @property
    def adam(self) -> dict[str, Any]:
        """The optimizer of the bound-based budgets (HYDRA's configs: Adam; weight decay only in `paper`)."""
        if not self.bound_based or self.preset == "smoke":
            return {}
        return {"optimizer": "adam", "weight_decay": 1e-4 if self.preset == "paper" else 0.0}


@dataclass(frozen=True)
class Preset:
    name: str
    description: str
    budget: Callable[[PresetContext], dict[str, Any]]  # the core sections' values


PRESETS: Registry[Preset] = Registry("preset")


def _smoke(ctx: PresetContext) -> dict[str, Any]:
    return {
        "pretrain": {"epochs": 3, "lr": 0.1, **ctx.batch},
        "finetune": {"epochs": 1, "lr": 0.01, **ctx.batch},
        "train_attack": {"steps": 2},
        "eval_attack": {"steps": 5, "restarts": 1},
        "eval": {"evaluators": ["clean", "pgd"], "eps_sweep": [0.5, 1.0, 2.0], "check_examples": 32,
                 "square_queries": 100},
        "train_examples": 512,
        "eval_examples": 128,
    }


def _quick(ctx: PresetContext) -> dict[str, Any]:
    subset = {} if ctx.small else {"train_examples": 10000, "eval_examples": 1000}
    evaluation = {"eval_attack": {"steps": 20, "restarts": 2}}
    if ctx.bound_based:  # about 30 minutes on 2 CPU cores for the dense model and three methods at three sparsities
        return {"pretrain": {"epochs": 10, "lr": 1e-3, **ctx.adam}, "finetune": {"epochs": 5, "lr": 5e-4, **ctx.adam},
                "train_attack": {"steps": 10}, "eval": {"evaluators": VERIFIED_EVALUATORS}, **evaluation, **subset}
    return {
        "pretrain": {"epochs": 40 if ctx.small else 15, "lr": 0.1},
        "finetune": {"epochs": 20 if ctx.small else 10, "lr": 0.01},
        "train_attack": {"steps": 10 if ctx.small else 5},
        **evaluation,
        **subset,
    }


def _paper(ctx: PresetContext) -> dict[str, Any]:
    evaluation = {"eval_attack": {"steps": 50, "restarts": 5}}
    if ctx.bound_based:  # HYDRA's MixTrain and CROWN-IBP configs (hydra_protocol.md, section 5); ibp takes CROWN-IBP's
        mixtrain = ctx.objective == "mixtrain"
        return {"pretrain": {"epochs": 60 if mixtrain else 200, "lr": 1e-3, **ctx.adam, **ctx.batch},
                "finetune": {"epochs": 60 if mixtrain else 100, "lr": 5e-4 if mixtrain else 1e-5, **ctx.adam,
                             **ctx.batch},
                "eval": {"evaluators": ["clean", "pgd", "autoattack", "ibp", "sym"], "autoattack": "standard"},
                **evaluation}
    return {
        "pretrain": {"epochs": 100, "lr": 0.1},
        "finetune": {"epochs": 100, "lr": 0.01},
        "train_attack": {"steps": 10},
        "eval": {"autoattack": "standard", "check_examples": 500, "square_queries": 5000},
        **evaluation,
    }


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

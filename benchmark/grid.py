"""Grid resolution: a `GridSpec` (benchmark/spec.py: from flags, a YAML file and `--set`) into validated cells.

`resolve` builds each cell's effective config once: the preset's values (the core sections' and every plug-in
group's budgets), then the settings, then the dataset's eps, then every check that would otherwise fail cell
by cell (names, types and ranges, evaluators, bound-propagation support, each pruner's own settings).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from attacks.autoattack import parse_version
from attacks.bounds import layers_of
from benchmark.core.config import SETTINGS, RunConfig
from benchmark.core.data import DATASETS, DatasetInfo
from benchmark.core.errors import UserError
from benchmark.core.mask import check_sparsity
from benchmark.core.models import ARCHS, model_for
from benchmark.core.overrides import apply_settings
from benchmark.core.presets import PRESETS, PresetContext
from benchmark.evaluation import verification
from benchmark.evaluation.evaluators import TORCHATTACKS, get_evaluator, torchattacks_norm
from benchmark.spec import GridSpec
from benchmark.training.loop import Phase
from benchmark.training.objectives import OBJECTIVES
from methods import METHODS, build_pruner

DENSE = "dense"
FULL_TRAIN_STEPS = 10  # the dataset's training step (eps/4) is for attacks this long: 2.5 eps of travel


@dataclass
class Grid:
    """The resolved grid: the dense model of each seed first (its pretraining is shared by the cells of that
    seed), then every method at every sparsity."""

    base: RunConfig
    methods: list[str]
    sparsities: list[float]
    seeds: list[int]
    cells: list[RunConfig]


# -------------------------------------------------------------------------------------------- resolution


def resolve(spec: GridSpec) -> Grid:
    """Validate every name and number and build the grid's cells (see the module docstring)."""
    methods = list(spec.methods) if spec.methods is not None else METHODS.names()
    for name in methods:
        METHODS.get(name)
    sparsities = [check_sparsity(s) for s in spec.sparsity]
    base = base_config(spec)
    for name in methods:  # a pruner checks its own settings when built: fail now, not cell by cell
        for sparsity in sparsities:
            build_pruner(name, base.replace(method=name, sparsity=sparsity))
    cells = cells_of(base, methods, sparsities, spec.seeds)
    if spec.budget == "equal-passes":
        cells = equal_passes(cells)
    return Grid(base, methods, sparsities, list(spec.seeds), cells)


def cells_of(base: RunConfig, methods: list[str], sparsities: list[float], seeds: list[int]) -> list[RunConfig]:
    """The dense model of each seed first (its pretraining is shared by the cells of that seed), then every
    method at every sparsity."""
    cells = []
    for seed in seeds:
        cells.append(base.replace(method=DENSE, sparsity=0.0, seed=seed))
        cells += [base.replace(method=m, sparsity=s, seed=seed) for m in methods for s in sparsities]
    return cells


def planned_epochs(cfg: RunConfig) -> int:
    """The epochs a cell trains beyond the shared pretraining: its pruner's phases, then the finetune."""
    return _planned(cfg, _pruner_phases(cfg))


def _pruner_phases(cfg: RunConfig) -> list[Phase]:
    return [] if cfg.method == DENSE else build_pruner(cfg.method, cfg).phases()


def _planned(cfg: RunConfig, phases: list[Phase]) -> int:
    return 0 if cfg.method == DENSE else sum(p.settings.epochs for p in phases) + cfg.finetune.epochs


def equal_passes(cells: list[RunConfig]) -> list[RunConfig]:
    """Every method's training raised to the epochs of the costliest method at the same sparsity and seed.

    All of a grid's methods train with the same objective, batch size and examples, so an epoch costs the same
    forward and backward passes in each, and equal epochs are equal passes. A method's extra epochs are spread
    over its own phases and the finetune in proportion to their preset lengths (HYDRA's prune and finetune
    grow alike); one without phases of its own (LWM, random) gets them all in the finetune. A raised cell is
    marked `budget="equal-passes"`, a run of its own in the store. A cell the view leaves as it was (the dense
    model, and the costliest method: lottery in practice) keeps its preset key, so it is the same run as in
    the preset view and is not trained twice; the report counts it in both views (`results.frame`).
    """
    phases = [_pruner_phases(cfg) for cfg in cells]
    planned = [_planned(cfg, p) for cfg, p in zip(cells, phases, strict=True)]
    target: dict[tuple[float, int], int] = {}
    for cfg, epochs in zip(cells, planned, strict=True):
        target[cfg.sparsity, cfg.seed] = max(target.get((cfg.sparsity, cfg.seed), 0), epochs)
    return [_raised_to(cfg, len(p), e, target[cfg.sparsity, cfg.seed])
            for cfg, p, e in zip(cells, phases, planned, strict=True)]


def _raised_to(cfg: RunConfig, phases: int, planned: int, epochs: int) -> RunConfig:
    """cfg with `epochs` in all, its `phases` pruner phases (sharing their group's epochs) and the finetune, and
    marked as the equal-passes view's; cfg itself where nothing is raised."""
    if cfg.method == DENSE or planned >= epochs:
        return cfg
    cfg = cfg.replace(budget="equal-passes")
    group = METHODS.get(cfg.method).settings_group
    if group is not None and phases:
        own = cfg.settings_of(group.name).epochs
        raised = max(own, round(own * epochs / planned))
        cfg = cfg.with_settings(group.name, epochs=raised)
        epochs -= phases * raised
    return cfg.replace(finetune=dataclasses.replace(cfg.finetune, epochs=max(epochs, 0)))


def base_config(spec: GridSpec) -> RunConfig:
    """The dense cell of seed 0 with every settings group filled: the preset's values, then the settings."""
    info = DATASETS.get(spec.data)
    preset = PRESETS.get(spec.preset)
    arch = spec.arch or info.default_arch
    ARCHS.get(arch)
    objectives = [OBJECTIVES.get(name) for name in dict.fromkeys(filter(None, (spec.objective,
                                                                                 spec.pretrain_objective)))]
    bound_based = any(o.bound_based for o in objectives)
    cfg = RunConfig(dataset=info.name, arch=arch, objective=spec.objective, pretrain_objective=spec.pretrain_objective,
                    method=DENSE, scope=spec.scope, preset=preset.name,
                    groups={name: SETTINGS.get(name).cls() for name in SETTINGS.names()})
    ctx = PresetContext(preset.name, info, arch, spec.objective, bound_based)
    cfg = apply_settings(cfg, preset.budget(ctx), f"preset {preset.name}")
    for name in SETTINGS.names():
        budget = SETTINGS.get(name).budget
        if budget is not None:
            cfg = apply_settings(cfg, {name: budget(ctx)}, f"preset {preset.name}")
    settings = dict(spec.settings)
    if spec.eval is not None:
        settings["eval.evaluators"] = spec.eval
    if spec.amp is not None:
        settings["amp"] = spec.amp
    cfg = apply_settings(cfg, settings, "settings")
    cfg = resolve_attacks(cfg, info, bound_based)
    certify = cfg.settings_of("certify")
    if certify.sigma is None:  # certify at the training sigma
        cfg = cfg.with_settings("certify", sigma=cfg.settings_of("smoothing").sigma)
    check_evaluation(cfg)
    check_bound_support(cfg, [o.name for o in objectives if o.bound_based])
    return cfg


def resolve_attacks(cfg: RunConfig, info: DatasetInfo, bound_based: bool) -> RunConfig:
    """Fill the dataset's l-inf eps (its verification eps under a bound-based objective) where the config
    leaves it open. Training steps default to the dataset's step (eps/4, scaled with eps), made longer where
    the attack has fewer than 10 steps so that it still travels 2.5 eps, as HYDRA's 10 x 2/255 at 8/255 does (a
    short attack that cannot cross the ball invites gradient masking); evaluation steps default to
    2.5 eps / steps."""
    eps = info.verify_eps if bound_based else info.eps
    train = cfg.train_attack
    if train.norm != "linf" or train.loss != "ce" or train.targeted:
        raise UserError("train_attack is l-inf with the objective's own loss; norm, loss and targeted are "
                        "eval_attack settings")
    train_eps = train.eps if train.eps is not None else eps
    lengthen = max(1.0, FULL_TRAIN_STEPS / max(train.steps, 1))
    train_step = train.step_size or info.step_size * train_eps / info.eps * lengthen
    train = dataclasses.replace(train, eps=train_eps, step_size=train_step)
    ev = cfg.eval_attack
    if ev.eps is None and ev.norm != "linf":
        raise UserError("an l2 evaluation needs its radius: --set eval_attack.eps=...")
    eval_eps = ev.eps if ev.eps is not None else eps
    ev = dataclasses.replace(ev, eps=eval_eps, step_size=ev.step_size or 2.5 * eval_eps / max(ev.steps, 1))
    return cfg.replace(train_attack=train, eval_attack=ev)


def check_evaluation(cfg: RunConfig) -> None:
    """Every evaluator name and the AutoAttack version, before any training."""
    for name in cfg.eval.evaluators:
        get_evaluator(name)
        if name.startswith(TORCHATTACKS) and torchattacks_norm(name) != cfg.eval_attack.norm:
            raise UserError(f"{name} attacks in {torchattacks_norm(name)}, but eval_attack.norm is "
                            f"{cfg.eval_attack.norm}; use a torchattacks attack of that norm (e.g. PGDL2 for l2)")
    parse_version(cfg.eval.autoattack)
    if any(m <= 0 for m in cfg.eval.eps_sweep):
        raise UserError(f"eval.eps_sweep multiples must be positive, got {cfg.eval.eps_sweep}")


def check_bound_support(cfg: RunConfig, bound_objectives: list[str]) -> None:
    """Bound-based objectives and verification evaluators need a model bound propagation supports: fail here,
    before any training, with the layer and what needs it."""
    evaluators = [n for n in cfg.eval.evaluators if n in verification.CERTIFIERS]
    if evaluators and cfg.eval_attack.norm != "linf":
        raise UserError(f"evaluators {', '.join(evaluators)} verify l-inf boxes; eval_attack.norm is "
                        f"{cfg.eval_attack.norm}")
    needed = [f"objective {', '.join(bound_objectives)}" * bool(bound_objectives),
              f"evaluators {', '.join(evaluators)}" * bool(evaluators)]
    if bound_objectives or evaluators:
        layers_of(model_for(cfg.dataset, cfg.arch), needed_by=" and ".join(filter(None, needed)))


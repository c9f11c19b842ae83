"""`python -m benchmark {run,list,report}`: the command line."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

import yaml

from attacks.pgd import LOSSES, NORMS
from benchmark.core.config import RunConfig, apply_overrides
from benchmark.core.errors import UserError
from benchmark.core.registry import Registry

DEFAULT_SPARSITIES = (0.9, 0.95, 0.99)
GRID_KEYS = {"methods", "data", "arch", "objective", "pretrain_objective", "sparsity", "seeds", "scope", "preset"}


class _Parser(argparse.ArgumentParser):
    """argparse that reports bad input as one line (no usage dump) with exit code 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"error: {message}\n")


def _split(values: Sequence[str] | None) -> list[str]:
    """Accept both `--x a b` and `--x a,b`."""
    return [part for value in values or [] for part in value.split(",") if part]


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m benchmark", description="rpbench: robustness-aware pruning, side by side.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    run = sub.add_parser("run", help="run a grid of methods x sparsities x seeds and print the comparison table",
                         description="Run a grid: the dense model and every method at every sparsity and seed, "
                                     "under one objective and preset. Finished work is never redone.")
    run.add_argument("--methods", nargs="+", help="pruning methods (comma or space separated; default: all)")
    run.add_argument("--data", help="dataset (default: digits)")
    run.add_argument("--arch", help="architecture (default: the dataset's)")
    run.add_argument("--objective", help="training objective of every phase (default: trades)")
    run.add_argument("--pretrain-objective", help="objective of the dense pretraining, if different")
    run.add_argument("--sparsity", nargs="+", help="target sparsities in [0, 1) (default: 0.9 0.95 0.99)")
    run.add_argument("--seeds", nargs="+", help="seeds (default: 0)")
    run.add_argument("--scope", choices=["layer", "global"], help="same sparsity per layer, or one global threshold")
    run.add_argument("--preset", help="smoke | quick | paper (default: quick)")
    run.add_argument("--config", type=Path, help="YAML file with any of these options and any setting")
    _add_shared_options(run)
    run.add_argument("--workers", type=int, default=0,
                     help="data-loading worker processes (for augmented image datasets on a GPU; default 0)")
    run.add_argument("--dry-run", action="store_true", help="print the grid and what is done; run nothing")

    ev = sub.add_parser("eval", help="evaluate a checkpoint rpbench did not train, into the same store and tables",
                        description="Evaluate a state_dict that fits a registered architecture (strict loading, "
                                    "weights_only): rpbench's export, or a plain torchvision-style state_dict.")
    ev.add_argument("--checkpoint", type=Path, required=True, help="the state_dict file")
    ev.add_argument("--arch", required=True, help="registered architecture it fits")
    ev.add_argument("--data", required=True, help="dataset to evaluate on")
    ev.add_argument("--name", help="the row label in tables (default: the file name without its suffix)")
    ev.add_argument("--preset", help="evaluation budget: smoke | quick | paper (default: quick)")
    _add_shared_options(ev)

    lister = sub.add_parser("list", help="list what is registered",
                            description="List registered methods, datasets, archs, objectives or presets.")
    lister.add_argument("what", nargs="?", default="all",
                        choices=["all", "methods", "datasets", "archs", "objectives", "presets", "evaluators"])

    report = sub.add_parser("report", help="rebuild the tables and plots from the store",
                            description="Rebuild tables (Markdown, CSV, LaTeX), plots and results.csv from --out.")
    report.add_argument("--out", type=Path, default=Path("runs"), help="the folder given to `run --out`")
    report.add_argument("--sweep-sparsity", type=float,
                        help="the sparsity whose eps sweep is plotted, e.g. 0.99 (default: the highest)")
    report.add_argument("--cert-radius", type=float, default=0.435,
                        help="the l2 radius of the certified-accuracy-against-sparsity plot (default 0.435)")
    return parser


def _add_shared_options(parser: argparse.ArgumentParser) -> None:
    """Options `run` and `eval` share: settings, where results and data are, the device, verbosity."""
    parser.add_argument("--eval", nargs="+",
                        help="evaluators in cascade order, also torchattacks:<Attack> for any torchattacks attack "
                             "(default: the preset's, e.g. clean pgd autoattack)")
    parser.add_argument("--set", dest="settings", action="append", default=[], metavar="KEY=VALUE",
                        help="override one setting, e.g. --set pretrain.epochs=5 (repeatable)")
    parser.add_argument("--out", type=Path, default=Path("runs"), help="store and run folders (default: ./runs)")
    parser.add_argument("--data-dir", type=Path, help="where datasets are (or are downloaded to)")
    parser.add_argument("--download", action="store_true", help="download the dataset if it is not found")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    parser.add_argument("--quiet", action="store_true", help="no progress bars or status lines")


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return {"run": cmd_run, "eval": cmd_eval, "list": cmd_list, "report": cmd_report}[args.command](args)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


# --------------------------------------------------------------------------------------------------- run


def grid_options(args: argparse.Namespace) -> dict[str, Any]:
    """Grid options and settings from the YAML file, then flags on top."""
    options: dict[str, Any] = {}
    if args.config:
        try:
            loaded = yaml.safe_load(args.config.read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise UserError(f"cannot read config {args.config}: {str(exc).splitlines()[0]}") from None
        if not isinstance(loaded, dict):
            raise UserError(f"config {args.config} must be a mapping of options")
        options.update(loaded)
    flags = {"methods": _split(args.methods), "data": args.data, "arch": args.arch, "objective": args.objective,
             "pretrain_objective": args.pretrain_objective, "sparsity": _split(args.sparsity),
             "seeds": _split(args.seeds), "scope": args.scope, "preset": args.preset}
    options.update({k: v for k, v in flags.items() if v not in (None, [])})
    options.update(parse_settings(args.settings))
    return {**options, **eval_option(args)}


def eval_option(args: argparse.Namespace) -> dict[str, Any]:
    """`--eval a,b` as the eval.evaluators setting."""
    return {"eval.evaluators": _split(args.eval)} if args.eval else {}


def parse_settings(items: Sequence[str]) -> dict[str, Any]:
    """`--set KEY=VALUE` items; values are read as YAML scalars (numbers, booleans, null, strings)."""
    settings = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise UserError(f"--set needs KEY=VALUE, got {item!r}")
        settings[key.strip()] = yaml.safe_load(value)
    return settings


def _as_list(value: Any) -> list[Any]:
    if isinstance(value, str):
        return _split([value])
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _numbers(values: Any, kind: type, what: str) -> list[Any]:
    try:
        return [kind(v) for v in _as_list(values)]
    except (TypeError, ValueError):
        raise UserError(f"{what} must be {kind.__name__}s, got {values!r}") from None


def plan(options: dict[str, Any]) -> tuple[RunConfig, list[str], list[float], list[int]]:
    """Validate every name and number, resolve preset and dataset defaults; return the grid."""
    from benchmark.core.data import DATASETS
    from benchmark.core.mask import check_sparsity
    from benchmark.core.models import ARCHS
    from benchmark.presets import PRESETS
    from benchmark.training.objectives import OBJECTIVES
    from methods import METHODS, build_pruner

    info = DATASETS.get(options.get("data", "digits"))
    preset = PRESETS.get(options.get("preset", "quick"))
    methods = _as_list(options.get("methods", METHODS.names()))
    for name in methods:
        METHODS.get(name)
    sparsities = [check_sparsity(s) for s in _numbers(options.get("sparsity", DEFAULT_SPARSITIES), float,
                                                        "sparsities")]
    seeds = _numbers(options.get("seeds", [0]), int, "seeds")
    arch = options.get("arch") or info.default_arch
    ARCHS.get(arch)
    objective = options.get("objective", "trades")
    pretrain_objective = options.get("pretrain_objective")
    for name in filter(None, (objective, pretrain_objective)):
        OBJECTIVES.get(name)
    scope = options.get("scope", "layer")
    if scope not in ("layer", "global"):
        raise UserError(f"unknown scope {scope!r}; valid: global, layer")

    cfg = RunConfig(dataset=info.name, arch=arch, objective=objective, pretrain_objective=pretrain_objective,
                    scope=scope, preset=preset.name)
    cfg = apply_overrides(cfg, preset.overrides(info, cfg), f"preset {preset.name}")
    cfg = apply_overrides(cfg, {k: v for k, v in options.items() if k not in GRID_KEYS}, "settings")
    eps = info.verify_eps if OBJECTIVES.get(cfg.objective).bound_based else info.eps
    cfg = resolve_attacks(cfg, eps, info.step_size * eps / info.eps)
    check_evaluation(cfg)
    check_bound_support(cfg)
    for name in methods:  # a pruner checks its own settings when built: fail now, not cell by cell
        for sparsity in sparsities:
            build_pruner(name, cfg.replace(method=name, sparsity=sparsity))
    return cfg, methods, sparsities, seeds


def resolve_attacks(cfg: RunConfig, eps: float, train_step: float) -> RunConfig:
    """Fill the dataset's l-inf eps where the config leaves it open. Evaluation steps default to 2.5 eps / steps."""
    train = cfg.train_attack
    if train.norm != "linf" or train.loss != "ce" or train.targeted:
        raise UserError("train_attack is l-inf with the objective's own loss; norm, loss and targeted are "
                        "eval_attack settings")
    train_eps = train.eps if train.eps is not None else eps
    train = dataclasses.replace(train, eps=train_eps, step_size=train.step_size or train_step * train_eps / eps)
    ev = cfg.eval_attack
    if ev.norm not in NORMS or ev.loss not in LOSSES:
        raise UserError(f"eval_attack: norm must be one of {', '.join(NORMS)} and loss one of {', '.join(LOSSES)}")
    if ev.eps is None and ev.norm != "linf":
        raise UserError("an l2 evaluation needs its radius: --set eval_attack.eps=...")
    eval_eps = ev.eps if ev.eps is not None else eps
    ev = dataclasses.replace(ev, eps=eval_eps, step_size=ev.step_size or 2.5 * eval_eps / max(ev.steps, 1))
    return cfg.replace(train_attack=train, eval_attack=ev)


def check_evaluation(cfg: RunConfig) -> None:
    """Every evaluator name, the AutoAttack version and the sweep, before any training."""
    from attacks.autoattack import parse_version
    from benchmark.evaluation.evaluators import get_evaluator

    for name in cfg.eval.evaluators:
        get_evaluator(name)
    parse_version(cfg.eval.autoattack)
    if any(m <= 0 for m in cfg.eval.eps_sweep) or cfg.eval.check_examples < 1 or cfg.eval.batch_size < 1:
        raise UserError("eval: eps_sweep multiples must be positive, check_examples and batch_size at least 1")


def check_bound_support(cfg: RunConfig) -> None:
    """Bound-based objectives and verification evaluators need a model bound propagation supports: fail here,
    before any training, with the layer and what needs it."""
    from attacks.bounds import layers_of
    from benchmark.evaluation.verification import CERTIFIERS
    from benchmark.runner import new_model
    from benchmark.training.objectives import OBJECTIVES

    objectives = [n for n in dict.fromkeys((cfg.objective, cfg.effective_pretrain_objective))
                  if OBJECTIVES.get(n).bound_based]
    evaluators = [n for n in cfg.eval.evaluators if n in CERTIFIERS]
    if evaluators and cfg.eval_attack.norm != "linf":
        raise UserError(f"evaluators {', '.join(evaluators)} verify l-inf boxes; eval_attack.norm is "
                        f"{cfg.eval_attack.norm}")
    needed = [f"objective {', '.join(objectives)}" * bool(objectives),
              f"evaluators {', '.join(evaluators)}" * bool(evaluators)]
    if objectives or evaluators:
        layers_of(new_model(cfg), needed_by=" and ".join(filter(None, needed)))


def pick_device(choice: str) -> str:
    import torch

    if choice == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if choice == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda was asked for, but torch sees no CUDA device")
    return choice


def cmd_run(args: argparse.Namespace) -> int:
    from benchmark import runner
    from results.report import write_report
    from results.store import Store

    base, methods, sparsities, seeds = plan(grid_options(args))
    env = runner.Environment(out=args.out, device=pick_device(args.device), data_dir=args.data_dir,
                             download=args.download, quiet=args.quiet, workers=args.workers)
    cells = runner.expand_grid(base, methods, sparsities, seeds)
    store = Store(args.out / "runs.db")
    if args.dry_run:
        for cfg in cells:
            print(f"{cfg.key()}  {cfg.dataset} {cfg.arch} {cfg.objective} {cfg.method:>8} "
                  f"sparsity {cfg.sparsity:<5g} seed {cfg.seed}: {runner.phase_status(cfg, env, store)}")
        return 0
    runner.check_inputs(base, env)
    records = runner.run_grid(cells, env, store)
    print(write_report(records, args.out / "report"))
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from benchmark import runner
    from benchmark.external import evaluate_checkpoint
    from results.report import write_report
    from results.store import Store

    if not args.checkpoint.is_file():
        raise UserError(f"checkpoint not found: {args.checkpoint}")
    options = {"data": args.data, "arch": args.arch, "preset": args.preset or "quick", "methods": [],
               **parse_settings(args.settings), **eval_option(args)}
    cfg, _, _, _ = plan(options)
    env = runner.Environment(out=args.out, device=pick_device(args.device), data_dir=args.data_dir,
                             download=args.download, quiet=args.quiet)
    runner.check_inputs(cfg, env)
    store = Store(args.out / "runs.db")
    record = evaluate_checkpoint(args.checkpoint, cfg, env, args.name or args.checkpoint.stem)
    store.put(record)
    same_table = [r for r in store.all() if (r.dataset, r.arch, r.objective) ==
                  (record.dataset, record.arch, record.objective)]
    print(write_report(same_table, args.out / "report"))
    return 0


# -------------------------------------------------------------------------------------------------- list


def _registries() -> dict[str, tuple[Registry[Any], Any]]:
    from benchmark.core.data import DATASETS
    from benchmark.core.models import ARCHS
    from benchmark.evaluation.evaluators import EVALUATORS
    from benchmark.presets import PRESETS
    from benchmark.training.objectives import OBJECTIVES
    from methods import METHODS

    return {
        "methods": (METHODS, lambda c: f"{c.description} [{c.taxonomy.line()}]"),
        "datasets": (DATASETS, lambda d: f"{d.description} ({'x'.join(map(str, d.input_shape))}, "
                                         f"{d.num_classes} classes, eps {d.eps:.4g}, verification eps "
                                         f"{d.verify_eps:.4g}, arch {d.default_arch})"),
        "archs": (ARCHS, lambda a: a.description),
        "objectives": (OBJECTIVES, lambda o: o.description),
        "presets": (PRESETS, lambda p: p.description),
        "evaluators": (EVALUATORS, lambda e: e.description),
    }


def cmd_list(args: argparse.Namespace) -> int:
    registries = _registries()
    for kind, (registry, line) in registries.items():
        if args.what not in ("all", kind):
            continue
        print(f"{kind}:")
        width = max(len(n) for n in registry.names())
        for name in registry.names():
            print(f"  {name:<{width}}  {line(registry.get(name))}")
    return 0


# ------------------------------------------------------------------------------------------------ report


def cmd_report(args: argparse.Namespace) -> int:
    from results.report import write_report
    from results.store import Store

    db = args.out / "runs.db"
    if not db.exists():
        raise UserError(f"no store at {db}; run `python -m benchmark run --out {args.out}` first")
    print(write_report(Store(db).all(), args.out / "report", args.sweep_sparsity, args.cert_radius))
    return 0

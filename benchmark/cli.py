"""`python -m benchmark {run,eval,list,report}`: the command line.

Options come from the typed grid spec (benchmark/spec.py); resolution, validation and running live in the
library (benchmark/grid.py, benchmark/runner.py). Heavy modules are imported by the command that needs them,
so `--help` imports no torch.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

from benchmark.core.errors import UserError
from benchmark.spec import GridSpec, RunOptions, add_arguments, option_fields, spec_from

LISTS = ("all", "methods", "datasets", "archs", "objectives", "presets", "evaluators", "settings")
REPORT_FORMATS = ("tables", "html")  # results.report.DEFAULT_FORMATS, named here so `--help` imports no pandas
KNOWN_FORMATS = ("tables", "html", "json")


class _Parser(argparse.ArgumentParser):
    """argparse that reports bad input as one line (no usage dump) with exit code 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m benchmark", description="rpbench: robustness-aware pruning, side by side.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    run = sub.add_parser("run", help="run a grid of methods x sparsities x seeds and print the comparison table",
                         description="Run a grid: the dense model and every method at every sparsity and seed, "
                                     "under one objective and preset. Finished work is never redone.")
    add_arguments(run, GridSpec)
    _add_settings_options(run, config=True)
    add_arguments(run, RunOptions)

    ev = sub.add_parser("eval", help="evaluate a checkpoint rpbench did not train, into the same store and tables",
                        description="Evaluate a state_dict that fits a registered architecture (strict loading, "
                                    "weights_only): rpbench's export, torchvision's, kuangliu/RobustBench "
                                    "ResNet-18, PreAct ResNet-18 and WideResNets, HYDRA's subnet checkpoints.")
    ev.add_argument("--checkpoint", type=Path, required=True, help="the state_dict file")
    ev.add_argument("--name", help="the row label in tables (default: the file name without its suffix)")
    ev.add_argument("--normalize", metavar="dataset|none|MEAN,STD",
                    help="the model's input normalization: dataset (its mean/std), none, or MEAN,STD (two numbers "
                         "for every channel, or the C means then the C stds) (default: what the checkpoint's "
                         "layout implies: its own buffers, none for kuangliu/RobustBench and HYDRA, else the "
                         "dataset's)")
    ev.add_argument("--hydra-k", type=float, metavar="K",
                    help="a HYDRA subnet checkpoint's kept fraction (HYDRA's --k; 0.01 is 99%% sparsity): the "
                         "weights are masked by the top-K |popup_scores| of each layer")
    add_arguments(ev, GridSpec, only=("data", "arch", "preset", "eval"))
    _add_settings_options(ev, config=False)
    add_arguments(ev, RunOptions, only=("out", "data_dir", "download", "device", "quiet"))

    lister = sub.add_parser("list", help="list what is registered",
                            description="List registered methods, datasets, archs, objectives, presets, "
                                        "evaluators, or every setting with its help line.")
    lister.add_argument("what", nargs="?", default="all", choices=LISTS)

    report = sub.add_parser("report", help="rebuild the tables, plots and HTML page from the store",
                            description="Rebuild the report from --out into --out/report: tables (Markdown, CSV, "
                                        "LaTeX), plots and results.csv, the HTML page index.html, and with "
                                        "--format json one leaderboard-style record per run (runs.jsonl).")
    report.add_argument("--out", type=Path, default=Path("runs"), help="the folder given to `run --out`")
    report.add_argument("--format", dest="formats", type=_formats, default=list(REPORT_FORMATS),
                        metavar="FORMATS", help="comma-separated, any of tables (Markdown, CSV, LaTeX, PNG and "
                                                "results.csv), html (index.html), json (runs.jsonl) "
                                                f"(default: {','.join(REPORT_FORMATS)})")
    report.add_argument("--sweep-sparsity", type=float,
                        help="the sparsity whose eps sweep is plotted, e.g. 0.99 (default: the highest)")
    report.add_argument("--cert-radius", type=float, default=0.435,
                        help="the l2 radius of the certified-accuracy-against-sparsity plot (default 0.435)")
    return parser


def _formats(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in KNOWN_FORMATS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"unknown format {', '.join(unknown) or repr(text)}; "
                                         f"choose from {', '.join(KNOWN_FORMATS)}")
    return names


def _add_settings_options(parser: argparse.ArgumentParser, config: bool) -> None:
    if config:
        parser.add_argument("--config", type=Path, help="YAML file with any of these options and any setting")
    parser.add_argument("--set", dest="settings", action="append", default=[], metavar="KEY=VALUE",
                        help="override one setting, e.g. --set finetune.epochs=5 --set admm.rho=0.01 "
                             "(repeatable; `list settings` lists them)")


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return {"run": cmd_run, "eval": cmd_eval, "list": cmd_list, "report": cmd_report}[args.command](args)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


# --------------------------------------------------------------------------------------------------- run


def options_of(args: argparse.Namespace) -> tuple[GridSpec, RunOptions]:
    """The YAML file's options and settings, then the flags, then `--set`: later wins."""
    options: dict[str, Any] = read_config(args.config) if getattr(args, "config", None) else {}
    for name in [*option_fields(GridSpec), *option_fields(RunOptions)]:
        if getattr(args, name, None) is not None:
            options[name] = getattr(args, name)
    return spec_from({**options, **parse_settings(args.settings)}, "options")


def read_config(path: Path) -> dict[str, Any]:
    import yaml

    try:
        loaded = yaml.safe_load(path.read_text()) or {}
    except OSError as exc:
        raise UserError(f"cannot read config {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise UserError(f"config {path}{where}: {problem}") from None
    if not isinstance(loaded, dict):
        raise UserError(f"config {path} must be a mapping of options")
    return loaded


def parse_settings(items: Sequence[str]) -> dict[str, Any]:
    """`--set KEY=VALUE` items; values are read as YAML scalars (numbers, booleans, null, strings)."""
    import yaml

    settings = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise UserError(f"--set needs KEY=VALUE, got {item!r}")
        try:
            settings[key.strip()] = yaml.safe_load(value)
        except yaml.YAMLError:
            settings[key.strip()] = value
    return settings


def pick_device(choice: str) -> str:
    import torch

    if choice == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if choice == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda was asked for, but torch sees no CUDA device")
    return choice


def device_of(opts: RunOptions) -> str:
    """Where cells train: --device, or with --executor ray a GPU when each task gets one."""
    if opts.executor != "ray":
        return pick_device(opts.device)
    from benchmark.executors import ray_device

    return ray_device(opts.device, opts.gpus_per_cell)


def cmd_run(args: argparse.Namespace) -> int:
    from benchmark import runner
    from benchmark.grid import resolve
    from benchmark.training import distributed
    from results.store import Store

    spec, opts = options_of(args)
    opts.check_executor()
    grid = resolve(spec)
    device = device_of(opts)
    if opts.ddp:
        if opts.executor == "ray":
            raise UserError("--ddp trains one cell on the processes torchrun starts; it does not combine with "
                            "--executor ray")
        device = distributed.init_from_env(device)
    try:
        main = distributed.is_main()
        env = runner.Environment(out=opts.out, device=device, data_dir=opts.data_dir, download=opts.download,
                                 quiet=opts.quiet or not main, workers=opts.workers,
                                 channels_last=opts.channels_last, compile=opts.compile)
        store = Store(opts.out / "runs.db")
        if main:
            note_older_runs(store)
        if opts.dry_run:
            for cfg in grid.cells if main else []:
                print(f"{cfg.key()}  {cfg.dataset} {cfg.arch} {cfg.objective} {cfg.method:>8} "
                      f"sparsity {cfg.sparsity:<5g} seed {cfg.seed}: {runner.phase_status(cfg, env, store)}")
            return 0
        executor = None
        if runner.pending(grid.cells, store):  # a finished grid loads no data and starts no executor
            runner.check_inputs(grid.base, env)
            if opts.executor == "ray":
                from benchmark.executors import ray_executor

                executor = ray_executor(opts, env.device)
        records = runner.run_grid(grid.cells, env, store, executor)
        if not main:  # rank 0 reports
            return 0
        print(report_of_run(records, opts.out / "report"))
        print(f"HTML report: {opts.out / 'report' / 'index.html'}")
        failed = sum(r.status != "done" for r in records)
        if failed:
            print(f"error: {failed} of {len(records)} cells failed (their errors are above and in the report)",
                  file=sys.stderr)
        return 1 if failed else 0
    finally:
        distributed.close()


def note_older_runs(store: Any) -> None:
    """Say how many stored runs were computed under an older key rule: kept, never reused, not reported."""
    from benchmark.core.config import KEY_VERSION

    for version, count in store.older(KEY_VERSION).items():
        print(f"note: {count} runs in {store.path} were computed under key version {version}; they are kept, "
              f"but not reused (their cells run again under key version {KEY_VERSION}) and not reported",
              file=sys.stderr)


def current_runs(store: Any) -> list[Any]:
    """The stored runs made under the current key rule (the report's input)."""
    from benchmark.core.config import KEY_VERSION

    return [r for r in store.all() if (r.key_version or 1) == KEY_VERSION]


def report_of_run(records: list[Any], out_dir: Path) -> str:
    """The report of the grid's records, rewritten only when a record changed since `run` last wrote it
    (a finished grid then imports neither pandas nor matplotlib); `report` always rebuilds it."""
    import hashlib
    import json

    blob = json.dumps(records, sort_keys=True, default=lambda o: dataclasses.asdict(o)
                      if dataclasses.is_dataclass(o) else str(o))
    digest = hashlib.sha256(blob.encode()).hexdigest()
    summary, stamp = out_dir / "summary.md", out_dir / ".records.sha256"
    page = out_dir / "index.html"  # a report written before the page existed is rewritten once
    if summary.exists() and page.exists() and stamp.exists() and stamp.read_text() == digest:
        return summary.read_text()
    from benchmark.core.io import atomic_write_text
    from results.report import write_report

    text = write_report(records, out_dir)
    atomic_write_text(text, summary)
    atomic_write_text(digest, stamp)
    return text


def cmd_eval(args: argparse.Namespace) -> int:
    from benchmark import runner
    from benchmark.external import evaluate_checkpoint, requested_normalization
    from benchmark.grid import resolve
    from results.report import write_report
    from results.store import Store

    if not args.checkpoint.is_file():
        raise UserError(f"checkpoint not found: {args.checkpoint}")
    if args.data is None or args.arch is None:
        raise UserError("eval needs --data and --arch (the architecture the checkpoint fits)")
    spec, opts = options_of(args)
    grid = resolve(dataclasses.replace(spec, methods=[]))
    normalization = requested_normalization(args.normalize, grid.base.dataset)
    env = runner.Environment(out=opts.out, device=pick_device(opts.device), data_dir=opts.data_dir,
                             download=opts.download, quiet=opts.quiet)
    runner.check_inputs(grid.base, env)
    store = Store(opts.out / "runs.db")
    record = evaluate_checkpoint(args.checkpoint, grid.base, env, args.name or args.checkpoint.stem,
                                 normalization, args.hydra_k)
    store.put(record)
    same_table = [r for r in current_runs(store) if (r.dataset, r.arch, r.objective) ==
                  (record.dataset, record.arch, record.objective)]
    print(write_report(same_table, opts.out / "report"))
    return 0


# -------------------------------------------------------------------------------------------------- list


def cmd_list(args: argparse.Namespace) -> int:
    from benchmark.catalogue import registries, settings_lines

    for kind, (registry, line) in registries().items():
        if args.what not in ("all", kind):
            continue
        print(f"{kind}:")
        width = max(len(n) for n in registry.names())
        for name in registry.names():
            print(f"  {name:<{width}}  {line(registry.get(name))}")
    if args.what == "settings":
        print("\n".join(settings_lines()))
    return 0


# ------------------------------------------------------------------------------------------------ report


def cmd_report(args: argparse.Namespace) -> int:
    from results.report import JSONL, PAGE, write_report
    from results.store import Store

    db = args.out / "runs.db"
    if not db.exists():
        raise UserError(f"no store at {db}; run `python -m benchmark run --out {args.out}` first")
    store = Store(db)
    note_older_runs(store)
    folder = args.out / "report"
    text = write_report(current_runs(store), folder, args.sweep_sparsity, args.cert_radius, args.formats)
    if "tables" in args.formats:
        print(text)
    for name, what, file in (("html", "HTML report", PAGE), ("json", "JSON records", JSONL)):
        if name in args.formats:
            print(f"{what}: {folder / file}")
    return 0

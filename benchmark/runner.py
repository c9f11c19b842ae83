"""The runner: expands a grid into cells, runs each cell's phases with caching and resume, and records results.

A cell is one run (dataset x arch x objective x method x sparsity x seed). `run_cell` needs only the cell's
effective config and the folders it reads and writes; it never touches the store. The driver (`run_grid`)
decides what is left to do, hands cells to an executor (`SequentialExecutor`, in-process, or one of
benchmark/executors.py, e.g. on Ray), and is the only writer of the store (DESIGN.md, property 11).

Files, under --out:
  runs.db                       the store
  pretrained/<pretrain key>/    model.pt (dense state_dict), epoch_{0,1,2}.pt (rewind points), config.json,
                                pretrain.ckpt.pt while running
  shared/<method>/<key>/        a method's results shared by its target sparsities (lottery rounds)
  runs/<run key>/               config.json, mask.pt, model.pt (pruned, plain state_dict), log.txt,
                                pruned.pt (state after the pruner, before finetune), trained.pt (training
                                cost), eval/ (per-example results, one file per evaluator), *.ckpt.pt while
                                running
"""

from __future__ import annotations

import dataclasses
import functools
import platform
import random
import time
import traceback
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from benchmark.core.config import KEY_VERSION, RunConfig
from benchmark.core.data import DATASETS, load_dataset, make_loader, subset
from benchmark.core.errors import UserError
from benchmark.core.io import atomic_save, atomic_write_json, safe_load
from benchmark.core.mask import Mask, dense_mask
from benchmark.core.metrics import BEST, WORST
from benchmark.core.models import model_for
from benchmark.core.overrides import flatten
from benchmark.core.progress import Progress
from benchmark.evaluation.cascade import Evaluation, evaluate_model
from benchmark.grid import DENSE
from benchmark.training import distributed
from benchmark.training import loop as train
from benchmark.training.fast_path import FastPath
from benchmark.training.loop import Phase
from benchmark.training.objectives import OBJECTIVES, build_objective
from methods import Pruner, build_pruner
from results.record import RunRecord
from results.store import Store

REWIND_EPOCHS = (1, 2)  # early pretraining states kept beside the pretrained model (epoch 0 = init too)


@dataclass(frozen=True)
class Environment:
    """Where a cell runs and reads data; not part of any key."""

    out: Path
    device: str = "cpu"
    data_dir: Path | None = None
    download: bool = False
    quiet: bool = False
    workers: int = 0  # DataLoader worker processes for datasets that decode or augment per item
    channels_last: bool = False  # the fast path's speed-only options (benchmark/training/fast_path.py)
    compile: bool = False


def pretrained_dir(env: Environment, cfg: RunConfig) -> Path:
    return env.out / "pretrained" / cfg.pretrain_key()


def run_dir(env: Environment, cfg: RunConfig) -> Path:
    return env.out / "runs" / cfg.key()


def workspace_dir(env: Environment, cfg: RunConfig) -> Path:
    """Shared by the cells of one method that differ only in target sparsity (lottery rounds live here)."""
    return env.out / "shared" / cfg.method / cfg.replace(sparsity=0.0).key()


# ----------------------------------------------------------------------------------------------- data, model


@functools.lru_cache(maxsize=4)
def _splits(dataset: str, data_dir: Path | None, download: bool) -> tuple[Dataset, Dataset]:
    return load_dataset(DATASETS.get(dataset), data_dir, download)


def data_for(cfg: RunConfig, env: Environment) -> tuple[Dataset, Dataset]:
    """(training examples, evaluation examples) as the config selects them."""
    train_set, test_set = _splits(cfg.dataset, env.data_dir, env.download)
    eval_set = subset(test_set, cfg.eval_examples, seed=0)  # the same examples for every run
    return subset(train_set, cfg.train_examples, seed=cfg.seed), eval_set


def train_loader(cfg: RunConfig, env: Environment, batch_size: int, rng: torch.Generator) -> Iterable[Any]:
    """Shuffled training batches, in an order drawn from rng (saved with every checkpoint)."""
    train_set, _ = data_for(cfg, env)
    return make_loader(train_set, batch_size, shuffle=True, generator=rng, num_workers=env.workers,
                       shard=distributed.shard())


def fast_path(cfg: RunConfig, env: Environment) -> FastPath:
    return FastPath(cfg.amp, env.channels_last, env.compile)


def new_model(cfg: RunConfig) -> nn.Module:
    return model_for(cfg.dataset, cfg.arch)


def seed_everything(seed: int) -> torch.Generator:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


# ------------------------------------------------------------------------------------------------ one cell


def ensure_pretrained(cfg: RunConfig, env: Environment, progress: Progress) -> tuple[Path, dict[str, Any]]:
    """Train (or resume) the dense model this cell starts from, once per pretrain key. Returns (path, cost)."""
    folder = pretrained_dir(env, cfg)
    model_path = folder / "model.pt"
    if model_path.exists():
        return model_path, safe_load(folder / "cost.pt")
    device = torch.device(env.device)
    rng = seed_everything(cfg.seed)
    model = new_model(cfg).to(device)
    loader = train_loader(cfg, env, cfg.pretrain.batch_size, rng)
    atomic_write_json(cfg.pretrain_settings(), folder / "config.json")
    if not (folder / "epoch_0.pt").exists():
        atomic_save(model.state_dict(), folder / "epoch_0.pt")

    def keep_rewind_point(epoch: int) -> None:
        if epoch + 1 in REWIND_EPOCHS:
            atomic_save(model.state_dict(), folder / f"epoch_{epoch + 1}.pt")

    objective = build_objective(cfg.effective_pretrain_objective, cfg, ramped=True)
    phase = Phase("pretrain", cfg.pretrain, objective=objective, params=list(model.parameters()),
                  checkpoint=folder / "pretrain.ckpt.pt", on_epoch_end=keep_rewind_point)
    cost = train.run_phase(model, phase, loader, rng, device, progress.for_run(folder / "log.txt", f"seed {cfg.seed}"),
                           fast_path(cfg, env))
    atomic_save(dataclasses.asdict(cost), folder / "cost.pt")
    atomic_save(model.state_dict(), model_path)
    phase.checkpoint.unlink(missing_ok=True)
    distributed.barrier()  # under --ddp the other ranks read model.pt next
    return model_path, dataclasses.asdict(cost)


def load_state(model: nn.Module, path: Path) -> nn.Module:
    state = safe_load(path)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise UserError(f"checkpoint {path} does not fit the architecture: {str(exc).splitlines()[0]}") from None
    return model


def run_cell(cfg: RunConfig, env: Environment) -> RunRecord:
    """Run one cell to completion (resuming what a killed attempt left) and return its record.

    Training ends with model.pt and trained.pt (its cost); a later invocation with other evaluation settings
    only evaluates, reusing every per-example result already in eval/.
    """
    folder = run_dir(env, cfg)
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_json(cfg.only_active().to_dict(), folder / "config.json")
    progress = Progress(env.quiet).for_run(folder / "log.txt", f"{cfg.method}@{cfg.sparsity:g}")
    if not (folder / "trained.pt").exists():
        _train(cfg, env, folder, progress)
    trained = safe_load(folder / "trained.pt")
    model = load_state(new_model(cfg), folder / "model.pt").to(env.device)
    evaluation = evaluate_on_test(model, cfg, env, progress, folder / "eval")
    cost = {**trained["cost"], "eval_seconds": evaluation.total_seconds}
    return record_for(cfg, env, status="failed" if evaluation.failure else "done", evaluation=evaluation,
                      cost=cost, sparsity_actual=trained["sparsity_actual"], error=evaluation.failure,
                      kept_per_layer=trained.get("kept_per_layer"))  # absent in a run trained before it was kept


def _train(cfg: RunConfig, env: Environment, folder: Path, progress: Progress) -> None:
    """Pretrain (shared), prune and finetune; write the plain pruned model and what it cost."""
    device = torch.device(env.device)
    started = time.perf_counter()
    pretrained, pretrain_cost = ensure_pretrained(cfg, env, progress)
    cost: dict[str, Any] = {"pretrain": pretrain_cost}
    model = load_state(new_model(cfg), pretrained).to(device)
    if cfg.method == DENSE:
        mask = dense_mask(model)
    else:
        model, mask, cost["pruner"] = _prune(cfg, env, model, folder, device, progress)
        cost["finetune"] = _finetune(cfg, env, model, mask, folder, device, progress)
        mask.save(folder / "mask.pt")
    atomic_save(export_state(model, mask), folder / "model.pt")
    cost["train_seconds"] = time.perf_counter() - started
    atomic_save({"cost": cost, "sparsity_actual": mask.sparsity(), "kept_per_layer": mask.kept_per_layer()},
                folder / "trained.pt")
    for stale in folder.glob("*.ckpt.pt"):
        stale.unlink(missing_ok=True)  # under --ddp every rank removes them
    distributed.barrier()  # ... and reads trained.pt and model.pt next


def evaluate_on_test(model: nn.Module, cfg: RunConfig, env: Environment, progress: Progress,
                     folder: Path | None) -> Evaluation:
    """The configured evaluation on the config's evaluation examples; per-example results kept in `folder`."""
    _, eval_set = data_for(cfg, env)
    return evaluate_model(model, eval_set, cfg, torch.device(env.device), folder, progress)


def _prune(cfg: RunConfig, env: Environment, model: nn.Module, folder: Path, device: torch.device,
           progress: Progress) -> tuple[nn.Module, Mask, list[dict[str, Any]]]:
    """Run the pruner's phases and take its mask, once: the result is kept in pruned.pt.

    Returns a fresh plain model with the pruned state (so a resumed run and an uninterrupted one finetune
    the very same module, parameter order included), its mask and the pruner's cost.
    """
    done = folder / "pruned.pt"
    if not done.exists():
        rng = seed_everything(cfg.seed)
        pruner = build_pruner(cfg.method, cfg)
        if pruner.rewind_epoch is not None:
            pruner.rewind_state = rewind_state(cfg, env, pruner.rewind_epoch, device)
        costs = [_run_pruner_phase(cfg, env, pruner, phase, model, folder, device, rng, progress)
                 for phase in pruner.phases()]
        mask = pruner.mask(model).to(device)  # a pruner may build it elsewhere (random draws on the CPU)
        distributed.check_same("the mask", [keep for _, keep in sorted(mask.items())])
        pruner.release(model)
        mask.validate(model)
        mask.apply_(model)
        atomic_save({"model": model.state_dict(), "mask": {n: t.cpu() for n, t in mask.items()}, "cost": costs},
                    done)
        distributed.barrier()
    state = safe_load(done)
    pruned = new_model(cfg)
    pruned.load_state_dict(state["model"], strict=True)
    return pruned.to(device), Mask(state["mask"]).to(device), state["cost"]


def _run_pruner_phase(cfg: RunConfig, env: Environment, pruner: Pruner, phase: Phase, model: nn.Module,
                      folder: Path, device: torch.device, rng: torch.Generator, progress: Progress) -> dict[str, Any]:
    """One of the pruner's phases through the loop, or its stored result where the phase is shared with another
    target sparsity and already ran (it then counts in the cost, marked shared unless a killed attempt of this
    cell stored it, and is not rerun).

    A shared result keeps the random state its phase ended with (torch's and the loader's), and restoring it
    is part of taking the result: the next phase then draws exactly what it would have drawn after training
    this one itself, so a cell's weights do not depend on whether a sibling target, or a killed attempt of
    the same cell, stored the phase first. A result stored without that state is trained again."""
    shared = workspace_dir(env, cfg) / f"{phase.shared_as}.pt" if phase.shared_as else None
    state = safe_load(shared, map_location=device) if shared is not None and shared.exists() else None
    if state is not None and "loader_rng" in state:
        model.load_state_dict(state["model"])
        pruner.load_state_dict(state["pruner"])
        torch.set_rng_state(state["torch_rng"].cpu())
        rng.set_state(state["loader_rng"].cpu())
        own = state["trained_by"] == cfg.key()  # stored by a killed attempt of this very cell
        return {"phase": phase.name, **state["cost"], **({} if own else {"shared": True})}
    pruner.prepare(model, phase)
    model.to(device)
    loop_phase = dataclasses.replace(
        phase, objective=build_objective(cfg.objective, cfg), params=list(pruner.trainable(model, phase)),
        checkpoint=folder / f"{phase.name}.ckpt.pt", mask=pruner.training_mask(model, phase),
        regularize=lambda: pruner.regularize(model, phase),
        on_epoch_end=lambda epoch: pruner.on_epoch_end(model, phase, epoch), extra_state=pruner)
    loader = train_loader(cfg, env, phase.settings.batch_size, rng)
    cost = dataclasses.asdict(train.run_phase(model, loop_phase, loader, rng, device, progress, fast_path(cfg, env)))
    if shared is not None:
        atomic_save({"model": model.state_dict(), "pruner": pruner.state_dict(), "cost": cost,
                     "torch_rng": torch.get_rng_state(), "loader_rng": rng.get_state(), "trained_by": cfg.key()},
                    shared)
    return {"phase": phase.name, **cost}


def rewind_state(cfg: RunConfig, env: Environment, epoch: int, device: torch.device) -> dict[str, torch.Tensor]:
    """The dense model's state after `epoch` pretraining epochs (0: the initialisation), kept beside it."""
    path = pretrained_dir(env, cfg) / f"epoch_{epoch}.pt"
    if not path.exists():
        raise UserError(f"no rewind point for epoch {epoch}: the pretrained model keeps epochs 0, 1 and 2 "
                        f"that it ran (pretrain.epochs is {cfg.pretrain.epochs}); missing {path}")
    return safe_load(path, map_location=device)


def _finetune(cfg: RunConfig, env: Environment, model: nn.Module, mask: Mask, folder: Path,
              device: torch.device, progress: Progress) -> dict[str, Any]:
    rng = seed_everything(cfg.seed + 1)
    phase = Phase("finetune", cfg.finetune, objective=build_objective(cfg.objective, cfg),
                  params=list(model.parameters()), checkpoint=folder / "finetune.ckpt.pt", mask=mask)
    loader = train_loader(cfg, env, cfg.finetune.batch_size, rng)
    return dataclasses.asdict(train.run_phase(model, phase, loader, rng, device, progress, fast_path(cfg, env)))


def export_state(model: nn.Module, mask: Mask) -> dict[str, torch.Tensor]:
    """A plain state_dict of the architecture, pruned weights exact zeros: loads with strict=True anywhere."""
    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    for name, keep in mask.items():
        state[name] = state[name] * keep.cpu()
    return state


def record_for(cfg: RunConfig, env: Environment, *, status: str, evaluation: Evaluation | None = None,
               cost: dict[str, Any] | None = None, sparsity_actual: float | None = None,
               error: str | None = None, kept_per_layer: dict[str, list[int]] | None = None) -> RunRecord:
    return RunRecord(
        key=cfg.key(), dataset=cfg.dataset, arch=cfg.arch, objective=cfg.objective,
        pretrain_objective=cfg.effective_pretrain_objective, method=cfg.method, scope=cfg.scope,
        sparsity=cfg.sparsity, sparsity_actual=sparsity_actual, kept_per_layer=kept_per_layer, seed=cfg.seed,
        preset=cfg.preset, budget=cfg.budget, settings=record_settings(cfg),
        metrics=evaluation.metrics if evaluation else [], cost=cost,
        eval_desc=evaluation.description if evaluation else None,
        evaluation=evaluation.summary() if evaluation else None,
        checks=evaluation.checks if evaluation else None, eval_key=cfg.eval_key(), key_version=KEY_VERSION,
        device=env.device,
        versions={"python": platform.python_version(), "torch": torch.__version__},
        status=status, error=error, finished_at=datetime.now(UTC).isoformat(timespec="seconds"))


def record_settings(cfg: RunConfig) -> dict[str, Any]:
    """What the run's key hashes, flat, under the names `--set` takes (`finetune.lr`, `hydra.lr`)."""
    return {name.removeprefix("groups."): value for name, value in flatten(cfg.key_settings()).items()}


def execute_cell(cfg: RunConfig, env: Environment) -> RunRecord:
    """run_cell, with any failure turned into a failed record (the grid goes on); Ctrl-C still stops.
    Under --ddp a failure stops the process (torchrun then stops the others): a rank cannot tell whether the
    others failed too, and one that went on alone would wait for them forever."""
    try:
        return run_cell(cfg, env)
    except Exception as exc:
        if distributed.active():
            raise
        return record_for(cfg, env, status="failed", error=_logged_failure(exc, run_dir(env, cfg) / "log.txt"))


def execute_pretrain(cfg: RunConfig, env: Environment) -> str | None:
    """Pretraining as a unit of work of its own, for an executor that runs it before the cells that need it
    (`_train` would otherwise do it, the same way, in the first cell of the pretrain key). Returns None, or
    the error (its traceback goes to the pretrained model's log)."""
    try:
        ensure_pretrained(cfg, env, Progress(env.quiet))
    except Exception as exc:
        return f"pretraining failed: {_logged_failure(exc, pretrained_dir(env, cfg) / 'log.txt')}"
    return None


def _logged_failure(exc: Exception, log: Path) -> str:
    """Append the traceback being handled to `log`; return the error as one line."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("a") as f:
        f.write(traceback.format_exc())
    message = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {message}"


# ------------------------------------------------------------------------------------------------- the grid


CellFn = Callable[[RunConfig, Environment], RunRecord]


class Executor(Protocol):
    """What the driver needs of an executor (benchmark/executors.py has the graph executor and its pools)."""

    running: int  # cells started and not finished, for the progress line

    def map(self, fn: CellFn, cells: list[RunConfig], env: Environment) -> Iterator[RunRecord]:
        """Run fn on every cell, each one exactly once, and yield each record as it arrives, in any order."""
        ...


class SequentialExecutor:
    """Runs cells one after another in this process (the first cell of a pretrain key trains it)."""

    running = 0

    def map(self, fn: CellFn, cells: list[RunConfig], env: Environment) -> Iterator[RunRecord]:
        for cfg in cells:
            yield fn(cfg, env)


def pending(cells: list[RunConfig], store: Store) -> list[RunConfig]:
    """Cells not done, or done under other evaluation settings (those are only evaluated again)."""
    def finished(record: RunRecord | None, cfg: RunConfig) -> bool:
        return record is not None and record.status == "done" and record.eval_key == cfg.eval_key()

    return [cfg for cfg in cells if not finished(store.get(cfg.key()), cfg)]


def run_grid(cells: list[RunConfig], env: Environment, store: Store,
             executor: Executor | None = None) -> list[RunRecord]:
    """Run every cell not already done; write each record as it arrives. Returns all the grid's records."""
    executor = executor or SequentialExecutor()
    todo = pending(cells, store)
    progress = Progress(env.quiet)
    progress.say(f"{len(cells)} cells, {len(cells) - len(todo)} already done, {len(todo)} to run")
    started, failed = time.perf_counter(), 0
    for i, record in enumerate(executor.map(execute_cell, todo, env), 1):
        if distributed.is_main():
            store.put(record)
        failed += record.status != "done"
        verified = record.value(BEST, "verified_acc", eps_multiple=1.0)
        outcome = record.status if record.status != "done" else (
            f"clean {record.value('clean'):.3f} worst-case robust {record.value(WORST):.3f}"
            + (f" verified {verified:.3f}" if verified is not None else ""))
        counts = tally(i - failed, failed, executor.running, len(todo) - i, time.perf_counter() - started)
        progress.say(f"[{counts}] {record.method} sparsity {record.sparsity:g} seed {record.seed}: "
                     f"{outcome}" + (f" ({record.error})" if record.error else ""))
    return [store.get(cfg.key()) for cfg in cells]


def tally(done: int, failed: int, running: int, unfinished: int, elapsed: float) -> str:
    """The progress line's counts (left: not started); the ETA assumes the unfinished cells go at the pace
    of those finished so far, which counts the executor's parallelism in."""
    finished = done + failed
    eta = f", ETA {_duration(elapsed / finished * unfinished)}" if finished and unfinished else ""
    return f"{done} done, {running} running, {failed} failed, {unfinished - running} left{eta}"


def _duration(seconds: float) -> str:
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m" if hours else f"{minutes}m {secs:02d}s"


def phase_status(cfg: RunConfig, env: Environment, store: Store) -> str:
    """For --dry-run: which phases of a cell are done (pretrain / prune / finetune / eval)."""
    record = store.get(cfg.key())
    if record and record.status == "done" and record.eval_key == cfg.eval_key():
        return "done"
    if (run_dir(env, cfg) / "trained.pt").exists():
        return "trained; evaluation to run"
    parts = ["pretrain" if (pretrained_dir(env, cfg) / "model.pt").exists() else ""]
    folder = run_dir(env, cfg)
    if cfg.method != DENSE and (folder / "pruned.pt").exists():
        parts.append("prune")
    partial = sorted(p.name.removesuffix(".ckpt.pt") for p in folder.glob("*.ckpt.pt"))
    done = "+".join(p for p in parts if p) or "nothing"
    state = f"done: {done}" + (f"; in progress: {', '.join(partial)}" if partial else "")
    if record and record.status == "failed":
        state += f"; last attempt failed: {record.error}"
    return state


def check_inputs(cfg: RunConfig, env: Environment) -> None:
    """Fail fast, before any training, on what would fail every cell: missing data, an arch that cannot
    take the input."""
    _splits(cfg.dataset, env.data_dir, env.download)
    new_model(cfg)
    bound_based = [o for o in (cfg.objective, cfg.effective_pretrain_objective) if OBJECTIVES.get(o).bound_based]
    if distributed.active() and bound_based:
        raise UserError(f"--ddp does not train bound-based objectives ({', '.join(dict.fromkeys(bound_based))}): "
                        "their bound propagation reads the layers without DDP's forward pass, which its "
                        "gradient averaging needs")

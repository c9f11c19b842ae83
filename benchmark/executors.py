"""The grid as a graph of units of work, run on a pool of workers (Ray's in benchmark/ray_pool.py).

`plan` turns the pending cells into units: one pretraining per pretrain key that a cell still needs (so the
dense model of a dataset, arch, pretrain objective, seed and budget is trained once, by one task), then the
cells, each waiting for its pretraining. The cells of a method whose phases are shared between target
sparsities (`Phase.shared_as`: lottery rounds, stored by the runner under shared/<method>/<key>/) form a
chain in grid order, each waiting for the one before. So no two tasks train the same round, and every round
is trained or reused exactly as in the sequential run. A chain rather than a lock: a lock would hold a
worker idle while another trains the round, and could let targets take rounds in another order than the
sequential run does; a chain costs only the parallelism between targets of one lottery path.

`GraphExecutor` submits the units whose dependencies have finished, in grid order and as many as the pool
has slots for; yields each cell's record as it arrives (the driver writes it to the store); and runs a unit
again when its worker was lost (`retries`), else records its cells as failed: the grid goes on. A pool is
the only engine-specific part: a third engine is one small class with `slots`, `submit`, `wait`, `result`
and `close` (the `Pool` protocol).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from benchmark.core.config import RunConfig
from benchmark.core.errors import UserError
from benchmark.core.progress import Progress
from benchmark.grid import DENSE
from benchmark.runner import (
    CellFn,
    Environment,
    execute_pretrain,
    pretrained_dir,
    record_for,
    run_dir,
    workspace_dir,
)
from benchmark.spec import RunOptions
from methods import build_pruner
from results.record import RunRecord


class WorkerLost(Exception):
    """A unit's worker died or its task raised past the runner's own error handling (crash, kill, lost node)."""


class Pool(Protocol):
    """Workers that run functions: what GraphExecutor needs of an engine."""

    def submit(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Start fn(*args) on a worker; return a handle."""
        ...

    def slots(self) -> int:
        """How many units can run at once now (at least 1): no more are submitted, so each one submitted is
        running, and the graph, not the engine's queue, decides which starts next."""
        ...

    def wait(self, handles: list[Any]) -> list[Any]:
        """Block until at least one of the handles has finished; return the finished ones."""
        ...

    def result(self, handle: Any) -> Any:
        """The finished handle's return value; raises WorkerLost if its worker died or its task raised."""
        ...

    def close(self) -> None:
        ...


@dataclass(eq=False)
class Unit:
    """A pretraining or a cell, and the units that must finish first."""

    cfg: RunConfig
    pretrain: bool
    needs: list[Unit] = field(default_factory=list)

    @property
    def name(self) -> str:
        what = "pretraining" if self.pretrain else f"{self.cfg.method} sparsity {self.cfg.sparsity:g}"
        return f"{what} seed {self.cfg.seed}"


def plan(cells: list[RunConfig], env: Environment) -> list[Unit]:
    """The units of work of `cells`, each after the units it needs (see the module docstring)."""
    units: list[Unit] = []
    pretrainings: dict[str, Unit] = {}
    chains: dict[str, Unit] = {}  # shared folder -> the last cell on that path so far
    for cfg in cells:
        cell = Unit(cfg, pretrain=False)
        needs_model = not (run_dir(env, cfg) / "trained.pt").exists()
        if needs_model and not (pretrained_dir(env, cfg) / "model.pt").exists():
            if cfg.pretrain_key() not in pretrainings:
                pretrainings[cfg.pretrain_key()] = Unit(cfg, pretrain=True)
                units.append(pretrainings[cfg.pretrain_key()])
            cell.needs.append(pretrainings[cfg.pretrain_key()])
        if shares_phases(cfg):
            path = str(workspace_dir(env, cfg))
            if path in chains:
                cell.needs.append(chains[path])
            chains[path] = cell
        units.append(cell)
    return units


def shares_phases(cfg: RunConfig) -> bool:
    """Whether the cell's pruner has phases shared with its other target sparsities (lottery rounds)."""
    return cfg.method != DENSE and any(p.shared_as for p in build_pruner(cfg.method, cfg).phases())


class GraphExecutor:
    """Runs the plan's units on a pool: each as soon as the units it needs have finished (see the module
    docstring). `retries`: how many times a unit whose worker was lost runs again."""

    def __init__(self, pool: Pool, retries: int = 0) -> None:
        self.pool = pool
        self.retries = retries
        self.running = 0

    def map(self, fn: CellFn, cells: list[RunConfig], env: Environment) -> Iterator[RunRecord]:
        env = dataclasses.replace(env, out=env.out.resolve(),  # workers may start in another folder
                                  data_dir=env.data_dir.resolve() if env.data_dir else None)
        run = _Run(self, fn, env, plan(cells, env))
        try:
            while run.waiting or run.in_flight:
                arrived = run.start_ready()
                if run.in_flight:
                    arrived += run.collect()
                    arrived += run.start_ready()  # the freed slots are filled before the records are reported
                yield from arrived
        finally:
            self.pool.close()


class _Run:
    """The state of one `GraphExecutor.map`: units waiting, in flight (handle -> unit, attempt), finished
    (a pretraining's error or None; a cell's None)."""

    def __init__(self, executor: GraphExecutor, fn: CellFn, env: Environment, units: list[Unit]) -> None:
        self.executor, self.fn, self.env = executor, fn, env
        self.waiting = units
        self.in_flight: dict[Any, tuple[Unit, int]] = {}
        self.finished: dict[Unit, str | None] = {}
        self.progress = Progress(env.quiet)

    def start_ready(self) -> list[RunRecord]:
        """Submit the units whose needs have finished, in plan order, while the pool has room; return the
        failed records of cells whose pretraining failed (they never start)."""
        blocked, room = [], self.executor.pool.slots() - len(self.in_flight)
        for unit in [u for u in self.waiting if all(n in self.finished for n in u.needs)]:
            error = next((self.finished[n] for n in unit.needs if self.finished[n]), None)
            if error is None and room <= 0:
                break
            self.waiting.remove(unit)
            if error is None:
                self.submit(unit, 0)
                room -= 1
            else:  # a pretraining needs nothing, so this is a cell
                self.finished[unit] = None
                blocked.append(record_for(unit.cfg, self.env, status="failed", error=error))
        return blocked

    def submit(self, unit: Unit, attempt: int) -> None:
        fn = execute_pretrain if unit.pretrain else self.fn
        self.in_flight[self.executor.pool.submit(fn, unit.cfg, self.env)] = (unit, attempt)
        self.executor.running += not unit.pretrain

    def collect(self) -> list[RunRecord]:
        """Wait for some units to finish; return the records of the cells among them. A lost worker's unit
        runs again while it has retries left, else it fails (a pretraining's error fails its cells)."""
        records = []
        for handle in self.executor.pool.wait(list(self.in_flight)):
            unit, attempt = self.in_flight.pop(handle)
            self.executor.running -= not unit.pretrain
            try:
                outcome = self.executor.pool.result(handle)
            except WorkerLost as lost:
                if attempt < self.executor.retries:
                    self.progress.say(f"{unit.name}: worker lost ({lost}); running it again "
                                      f"(retry {attempt + 1} of {self.executor.retries})")
                    self.submit(unit, attempt + 1)
                    continue
                outcome = (f"pretraining failed: worker lost: {lost}" if unit.pretrain else
                           record_for(unit.cfg, self.env, status="failed", error=f"worker lost: {lost}"))
            self.finished[unit] = outcome if unit.pretrain else None
            if not unit.pretrain:
                records.append(outcome)
        return records


def ray_device(device: str, gpus_per_cell: float | None) -> str:
    """The device of cells run as Ray tasks: --device, where auto means a GPU when each task asks for one
    (by default it does when the driver sees CUDA)."""
    import torch

    if device == "cuda" and gpus_per_cell == 0:
        raise UserError("--device cuda with --gpus-per-cell 0: the Ray tasks would get no GPU")
    if device != "auto":
        return device
    return "cuda" if (gpus_per_cell > 0 if gpus_per_cell is not None else torch.cuda.is_available()) else "cpu"


def ray_executor(opts: RunOptions, device: str) -> GraphExecutor:
    """The Ray executor of the run options; each task asks for a GPU by default when cells train on one."""
    from benchmark.ray_pool import RayPool

    gpus = opts.gpus_per_cell if opts.gpus_per_cell is not None else float(device == "cuda")
    if gpus > 1 and gpus != int(gpus):
        raise UserError(f"--gpus-per-cell above 1 must be a whole number (Ray's rule), got {gpus:g}")
    pool = RayPool(opts.ray_address, cpus=opts.cpus_per_cell or 1, gpus=gpus, out=opts.out.resolve())
    return GraphExecutor(pool, retries=opts.retries or 0)

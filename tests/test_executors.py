"""Executors: the grid as a graph of units (one pretraining per key, lottery chains), run on a pool; on a
local Ray cluster the store holds exactly the sequential run's metrics, a killed worker fails (or retries)
only its own cell, and --out must be visible from every node."""

from __future__ import annotations

import logging
import os
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from benchmark import runner
from benchmark.core.config import RunConfig
from benchmark.core.errors import UserError
from benchmark.executors import GraphExecutor, WorkerLost, plan
from benchmark.grid import cells_of
from benchmark.runner import Environment, run_grid
from results.record import RunRecord
from results.store import Store
from tests.conftest import smoke_config

# 2 dense + 2 x 2 x 2 cells; without the self-checks and the eps sweep (three quarters of a smoke cell's time)
FAST = smoke_config(**{"eval.checks": False, "eval.eps_sweep": [1.0]})
CELLS = cells_of(FAST, ["hydra", "lwm"], [0.9, 0.95], [0, 1])


def env_at(out: Path) -> Environment:
    return Environment(out=out, device="cpu", quiet=True)


# --------------------------------------------------------------------------------- the plan, without Ray


def test_cells_that_need_one_pretrained_model_wait_for_one_pretraining(tmp_path):
    units = plan(CELLS, env_at(tmp_path))
    pretrainings = [u for u in units if u.pretrain]
    assert [u.cfg.seed for u in pretrainings] == [0, 1]
    for unit in units:
        if not unit.pretrain:
            assert unit.needs == [pretrainings[unit.cfg.seed]]
    model = runner.pretrained_dir(env_at(tmp_path), CELLS[0]) / "model.pt"
    model.parent.mkdir(parents=True)
    model.touch()  # seed 0's model exists: its cells need nothing
    assert [u.cfg.seed for u in plan(CELLS, env_at(tmp_path)) if u.pretrain] == [1]


def test_lottery_targets_on_one_path_form_a_chain_so_no_round_is_trained_twice(tmp_path):
    cells = cells_of(FAST, ["lottery", "lwm"], [0.9, 0.95, 0.99], [0])
    units = {(u.cfg.method, u.cfg.sparsity): u for u in plan(cells, env_at(tmp_path)) if not u.pretrain}
    assert units["lottery", 0.95].needs[1:] == [units["lottery", 0.9]]
    assert units["lottery", 0.99].needs[1:] == [units["lottery", 0.95]]
    assert all(len(units["lwm", s].needs) == 1 for s in (0.9, 0.95, 0.99))  # the pretraining only


class ScriptedPool:
    """Runs each unit when it is waited for, in this process; `lose` names units whose worker dies (once per
    listed entry), and pretraining is replaced by `pretrain` so nothing trains."""

    def __init__(self, slots: int, lose: list[str], pretrain: Callable[[RunConfig], str | None]) -> None:
        self._slots, self.lose, self.pretrain = slots, lose, pretrain
        self.started: list[str] = []
        self.most_at_once = 0
        self._open: list[tuple[Callable[..., Any], tuple[Any, ...]]] = []

    def slots(self) -> int:
        return self._slots

    def submit(self, fn: Callable[..., Any], *args: Any) -> int:
        self._open.append((fn, args))
        self.started.append(name_of(fn, args[0]))
        self.most_at_once = max(self.most_at_once, sum(t is not None for t in self._open))
        return len(self._open) - 1

    def wait(self, handles: list[int]) -> list[int]:
        return handles[:1]

    def result(self, handle: int) -> Any:
        fn, args = self._open[handle]
        self._open[handle] = None
        name = name_of(fn, args[0])
        if name in self.lose:
            self.lose.remove(name)
            raise WorkerLost("WorkerCrashedError: killed")
        return self.pretrain(args[0]) if fn is runner.execute_pretrain else fn(*args)

    def close(self) -> None:
        pass


def name_of(fn: Callable[..., Any], cfg: RunConfig) -> str:
    return f"pretrain {cfg.seed}" if fn is runner.execute_pretrain else f"{cfg.method}@{cfg.sparsity:g}/{cfg.seed}"


def fake_cell(cfg: RunConfig, env: Environment) -> RunRecord:
    return runner.record_for(cfg, env, status="done")


def test_the_graph_runs_each_unit_after_its_needs_within_the_slots_and_retries_lost_workers(tmp_path):
    pool = ScriptedPool(slots=2, lose=["lwm@0.9/0", "lwm@0.9/0", "hydra@0.9/1"], pretrain=lambda cfg: None)
    records = list(GraphExecutor(pool, retries=1).map(fake_cell, CELLS, env_at(tmp_path)))
    assert sorted(r.key for r in records) == sorted(c.key() for c in CELLS)  # each cell exactly once
    status = {f"{r.method}@{r.sparsity:g}/{r.seed}": (r.status, r.error) for r in records}
    assert status["lwm@0.9/0"] == ("failed", "worker lost: WorkerCrashedError: killed")  # lost twice
    assert status["hydra@0.9/1"] == ("done", None)  # lost once, retried
    assert sum(s == "done" for s, _ in status.values()) == len(CELLS) - 1
    assert pool.started.count("pretrain 0") == pool.started.count("pretrain 1") == 1
    assert pool.started.index("pretrain 1") < pool.started.index("dense@0/1") and pool.most_at_once == 2


def test_a_failed_pretraining_fails_the_cells_that_need_it_and_the_grid_goes_on(tmp_path):
    pool = ScriptedPool(slots=4, lose=[], pretrain=lambda cfg: "pretraining failed: boom" if cfg.seed else None)
    records = list(GraphExecutor(pool).map(fake_cell, CELLS, env_at(tmp_path)))
    assert {(r.seed, r.status) for r in records} == {(0, "done"), (1, "failed")}
    assert {r.error for r in records if r.seed == 1} == {"pretraining failed: boom"}
    assert not any(name.endswith("/1") for name in pool.started)  # no cell of seed 1 started


def test_ray_options_are_refused_with_the_local_executor(capsys, tmp_path):
    from benchmark.cli import main

    assert main(["run", "--preset", "smoke", "--retries", "1", "--out", str(tmp_path), "--dry-run"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: --retries is for --executor ray"]


def test_help_and_the_local_path_do_not_import_ray():
    code = ("import sys; import benchmark.cli, benchmark.runner, benchmark.executors; "
            "benchmark.cli.build_parser(); assert 'ray' not in sys.modules, 'ray was imported'")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parents[1])


# ------------------------------------------------------------------------------ on a local Ray cluster


@pytest.fixture(scope="module")
def ray_cluster():
    ray = pytest.importorskip("ray")
    from benchmark import ray_pool

    ray.init(num_cpus=2, include_dashboard=False, runtime_env=ray_pool.runtime_env(), logging_level=logging.WARNING)
    yield ray_pool
    ray.shutdown()


@pytest.fixture(scope="module")
def sequential(tmp_path_factory) -> dict[str, RunRecord]:
    """The grid run by the sequential executor: the reference every Ray run must match exactly."""
    out = tmp_path_factory.mktemp("sequential")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as each Ray task (--cpus-per-cell 1): another thread count sums in another order
    try:
        return {r.key: r for r in run_grid(CELLS, env_at(out), Store(out / "runs.db"))}
    finally:
        torch.set_num_threads(threads)


def on_ray(ray_pool, out: Path, retries: int = 0) -> GraphExecutor:
    return GraphExecutor(ray_pool.RayPool(None, cpus=1, gpus=0, out=out), retries=retries)


def assert_same_metrics(records: list[RunRecord], reference: dict[str, RunRecord]) -> None:
    for record in records:
        assert record.status == "done", record.error
        assert record.metrics == reference[record.key].metrics, f"{record.method}@{record.sparsity}"
        assert record.sparsity_actual == reference[record.key].sparsity_actual


def test_a_grid_on_ray_stores_exactly_the_sequential_metrics_with_one_pretraining_per_seed(
        ray_cluster, sequential, tmp_path):
    store = Store(tmp_path / "runs.db")
    records = run_grid(CELLS, env_at(tmp_path), store, on_ray(ray_cluster, tmp_path))
    assert_same_metrics(records, sequential)
    assert len(store.all()) == len(CELLS)  # one row per cell
    with sqlite3.connect(tmp_path / "runs.db") as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    logs = sorted((tmp_path / "pretrained").glob("*/log.txt"))
    assert len(logs) == 2 and all(log.read_text().count("pretrain epoch 1/") == 1 for log in logs)


def dying_once(victim: str, marker: Path) -> Callable[[RunConfig, Environment], RunRecord]:
    """A cell function that SIGKILLs its own worker at the victim's first finetune step, the first time."""
    execute = runner.execute_cell

    def cell(cfg: RunConfig, env: Environment) -> RunRecord:
        if cfg.key() == victim and not marker.exists():
            marker.write_text(str(os.getpid()))
            real = runner.train.run_phase

            def run_phase(model, phase, *args, **kwargs):
                if phase.name == "finetune":
                    phase.step_callbacks.append(lambda _model: os.kill(os.getpid(), signal.SIGKILL))
                return real(model, phase, *args, **kwargs)

            runner.train.run_phase = run_phase
        return execute(cfg, env)

    return cell


@pytest.mark.parametrize("retries", [0, pytest.param(1, marks=pytest.mark.slow)])  # the graph test retries too
def test_a_worker_killed_mid_cell_fails_or_retries_only_its_cell_and_a_rerun_finishes_it(
        ray_cluster, sequential, tmp_path, monkeypatch, retries):
    cells = CELLS[:1] + [c for c in CELLS[:5] if c.method == "lwm"]  # seed 0: dense, lwm at 90 and 95%
    victim, marker = cells[1].key(), tmp_path / "killed.pid"
    store = Store(tmp_path / "runs.db")
    with monkeypatch.context() as patch:
        patch.setattr(runner, "execute_cell", dying_once(victim, marker))
        records = {r.key: r for r in run_grid(cells, env_at(tmp_path), store, on_ray(ray_cluster, tmp_path, retries))}
    assert marker.exists() and int(marker.read_text()) != os.getpid()  # a worker died, not the driver
    others = [r for key, r in records.items() if key != victim]
    assert_same_metrics(others, sequential)
    if retries:
        assert_same_metrics([records[victim]], sequential)
        return
    assert records[victim].status == "failed" and records[victim].error.startswith("worker lost: ")
    assert runner.pending(cells, store) == [cells[1]]
    rerun = run_grid(cells, env_at(tmp_path), store, on_ray(ray_cluster, tmp_path))
    assert_same_metrics(rerun, sequential)


def test_an_out_folder_the_workers_cannot_see_is_one_line(ray_cluster, tmp_path):
    with pytest.raises(UserError) as error:
        ray_cluster.RayPool(None, cpus=1, gpus=0, out=tmp_path, probe=lambda path, expected: False)
    assert str(error.value).startswith(f"--out {tmp_path} is not visible from the Ray node(s) at ")
    assert "\n" not in str(error.value) and list(tmp_path.iterdir()) == []  # the token is gone
    ray_cluster.RayPool(None, cpus=1, gpus=0, out=tmp_path)  # the real probe sees it

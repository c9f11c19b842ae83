"""A grid killed with SIGKILL in every phase and re-run ends with exactly what a fresh run ends with.

The in-process resume tests (test_runner.py) stop a phase with an exception and resume in the same process; here
`python -m benchmark run` is a real subprocess, killed with SIGKILL (nothing is flushed, no handler runs) a
seeded random moment after a file of the phase it should die in appears: pretraining, the dense cell's
evaluation (between its batches), HYDRA's prune phase, the finetune, a lottery round stored for other targets.
Each kill is followed by a re-run that resumes and dies at the next point, and a last re-run that finishes.
Every record (metrics, evaluation, checks, cost without wall times), every model, mask, rewind point, shared
round and per-example result must then equal a fresh run's, tensor for tensor.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from benchmark.core.io import safe_load
from results.store import Store

ROOT = Path(__file__).resolve().parents[1]
GRID = ["--methods", "hydra,lwm,lottery", "--sparsity", "0.9", "--preset", "smoke", "--quiet",
        "--set", "pretrain.epochs=2", "--set", "hydra.epochs=2", "--set", "lottery.epochs=2",
        "--set", "finetune.epochs=2", "--set", "train_examples=256", "--set", "eval_examples=64",
        "--set", "eval.batch_size=32"]  # several epochs a phase, several batches an evaluator
FAST = ["--set", "eval.checks=false"]  # the default suite's version; the slow one runs the self-checks too
# Where to die, in the order the grid gets there (cells run dense, hydra, lwm, lottery): a delay after the attempt
# first writes a file matching the pattern.
KILL_POINTS = ["pretrained/*/pretrain.ckpt.pt", "runs/*/eval/pgd-*.pt", "runs/*/prune.ckpt.pt",
               "runs/*/finetune.ckpt.pt", "shared/lottery/*/round1_*.pt"]
MAX_DELAY_S = 0.4  # after the file appears: into the next epoch, batch or phase
WALL_TIMES = ("seconds", "eval_seconds", "train_seconds")


def command(out: Path, extra: list[str]) -> list[str]:
    return [sys.executable, "-m", "benchmark", "run", *GRID, *extra, "--out", str(out)]


def environment() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1"}


def run_to_completion(out: Path, extra: list[str]) -> None:
    done = subprocess.run(command(out, extra), cwd=ROOT, env=environment(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]


def start(out: Path, extra: list[str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(command(out, extra), cwd=ROOT, env=environment(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)


def versions(out: Path, pattern: str) -> set[tuple[Path, int]]:
    """The files matching `pattern`, each with its modification time (a checkpoint rewritten is a new version)."""
    found = set()
    for path in out.glob(pattern):
        with contextlib.suppress(FileNotFoundError):  # deleted between glob and stat
            found.add((path, path.stat().st_mtime_ns))
    return found


def run_until_killed(out: Path, extra: list[str], pattern: str, delay: float, before_next: str | None = None) -> bool:
    """Start the grid, SIGKILL it `delay` seconds after a file matching `pattern` is written, or sooner if a file
    of the next kill point (`before_next`) appears meanwhile, so that a fast machine cannot run past it. False if
    it finished first."""
    before = versions(out, pattern)
    later = versions(out, before_next) if before_next else set()
    process = start(out, extra)
    try:
        while process.poll() is None:
            if versions(out, pattern) - before:
                deadline = time.perf_counter() + delay
                while time.perf_counter() < deadline and not (before_next and versions(out, before_next) - later):
                    time.sleep(0.002)
                process.send_signal(signal.SIGKILL)
                return process.wait(timeout=60) == -signal.SIGKILL
            time.sleep(0.005)
        return False
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def without_wall_times(value: object) -> object:
    if isinstance(value, dict):
        return {k: without_wall_times(v) for k, v in value.items() if k not in WALL_TIMES}
    if isinstance(value, list):
        return [without_wall_times(v) for v in value]
    return value


def records(out: Path) -> dict[str, dict[str, object]]:
    store = Store(out / "runs.db")
    try:
        return {r.key: {"status": r.status, "error": r.error, "metrics": r.metrics, "checks": r.checks,
                        "sparsity_actual": r.sparsity_actual, "cost": without_wall_times(r.cost),
                        "evaluation": without_wall_times(r.evaluation)} for r in store.all()}
    finally:
        store.close()


def assert_same_content(a: object, b: object, where: str) -> None:
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and a.shape == b.shape, where
        torch.testing.assert_close(a, b, rtol=0, atol=0, equal_nan=True, msg=where)  # NaN: no distance
    elif isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), where
        for k in a:
            if k not in WALL_TIMES:
                assert_same_content(a[k], b[k], f"{where}[{k}]")
    elif isinstance(a, list | tuple):
        assert isinstance(b, list | tuple) and len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_same_content(x, y, f"{where}[{i}]")
    else:
        assert a == b, where


def assert_same_results(killed: Path, fresh: Path) -> None:
    """The same records, and the same .pt files (no checkpoint left behind) with the same tensors."""
    assert records(killed) == records(fresh)
    files = sorted(p.relative_to(fresh) for p in fresh.rglob("*.pt"))
    assert sorted(p.relative_to(killed) for p in killed.rglob("*.pt")) == files
    assert any(f.name == "model.pt" for f in files) and any(f.parts[0] == "shared" for f in files)
    for f in files:
        assert_same_content(safe_load(killed / f), safe_load(fresh / f), str(f))


def test_a_grid_killed_in_every_phase_ends_exactly_as_a_fresh_run(tmp_path):
    fresh, killed = tmp_path / "fresh", tmp_path / "killed"
    run_to_completion(fresh, FAST)
    rng = random.Random(14)
    kills = [run_until_killed(killed, FAST, pattern, rng.uniform(0.0, MAX_DELAY_S), following)
             for pattern, following in zip(KILL_POINTS, [*KILL_POINTS[1:], None], strict=True)]
    assert sum(kills) >= len(KILL_POINTS) - 1, f"the grid finished before most kill points: {kills}"
    run_to_completion(killed, FAST)
    assert_same_results(killed, fresh)


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(3))
def test_a_grid_killed_at_random_moments_ends_exactly_as_a_fresh_run(tmp_path, seed):
    """Four attempts, each killed at a seeded random fraction of a measured fresh run's duration, wherever that
    falls (training, evaluation, a checkpoint or store write, start-up), then a re-run to the end."""
    fresh, killed = tmp_path / "fresh", tmp_path / "killed"
    began = time.perf_counter()
    run_to_completion(fresh, [])
    duration = time.perf_counter() - began
    rng = random.Random(seed)
    for _ in range(4):
        process = start(killed, [])
        try:
            process.wait(timeout=rng.uniform(0.05, 0.6) * duration)
        except subprocess.TimeoutExpired:
            process.send_signal(signal.SIGKILL)
            process.wait()
    run_to_completion(killed, [])
    assert_same_results(killed, fresh)

"""The Ray executor against the local one: its overhead per cell, and what a second CPU worker buys.

    python -m benchmarks.executor_overhead [--parts smoke quick] [--repeats 3] [--quick-repeats 1]

1. Overhead: 4 smoke cells (lwm and random at 90 and 99%, digits, seed 0) run by the local executor and by
   Ray with one slot (one task at a time, cpus-per-cell 1), interleaved; (ray - local) / 4 per cell.
2. Scaling: 4 quick digits cells (the same methods and sparsities) on Ray with one slot and with two,
   interleaved.

Every repetition starts from a fresh --out holding only the pretrained model (trained once, up front, not
timed), so each one trains and evaluates the same 4 cells. The Ray runtime is started once (its start-up is
printed apart: a grid pays it once). Prints median and minimum wall seconds over the repetitions.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import ray
import torch

from benchmark.core.config import RunConfig
from benchmark.executors import GraphExecutor
from benchmark.grid import resolve
from benchmark.ray_pool import RayPool, runtime_env
from benchmark.runner import Environment, pretrained_dir, run_grid
from benchmark.spec import spec_from
from results.store import Store


class Slots(RayPool):
    """A Ray pool that runs at most `n` tasks at once, whatever the cluster holds."""

    def __init__(self, n: int, out: Path) -> None:
        super().__init__(None, cpus=1, gpus=0, out=out)
        self.n = n

    def slots(self) -> int:
        return self.n


def grid(preset: str) -> list[RunConfig]:
    spec, _ = spec_from({"preset": preset, "methods": ["lwm", "random"], "sparsity": [0.9, 0.99]}, "benchmark")
    resolved = resolve(spec)
    return [c for c in resolved.cells if c.method != "dense"]


def timed(cells: list[RunConfig], pretrained: Path, executor: Callable[[Path], GraphExecutor | None]) -> float:
    """Wall seconds of the cells from a fresh --out that holds only their pretrained model."""
    out = Path(tempfile.mkdtemp(prefix="rpbench-executors-"))
    try:
        shutil.copytree(pretrained, pretrained_dir(Environment(out=out), cells[0]))
        env = Environment(out=out, quiet=True)
        started = time.perf_counter()
        records = run_grid(cells, env, Store(out / "runs.db"), executor(out))
        elapsed = time.perf_counter() - started
        assert all(r.status == "done" for r in records), [r.error for r in records]
        return elapsed
    finally:
        shutil.rmtree(out)


def pretrain(cells: list[RunConfig]) -> Path:
    """Train the cells' dense model once (its folder is copied into every repetition's --out)."""
    out = Path(tempfile.mkdtemp(prefix="rpbench-pretrained-"))
    dense = cells[0].replace(method="dense", sparsity=0.0)
    run_grid([dense], Environment(out=out, quiet=True), Store(out / "runs.db"))
    return pretrained_dir(Environment(out=out), dense)


def compare(label: str, cells: list[RunConfig], variants: dict[str, Callable[[Path], GraphExecutor | None]],
            repeats: int) -> dict[str, list[float]]:
    pretrained = pretrain(cells)
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(repeats):
        for name, executor in variants.items():  # interleaved: the machine's load drifts
            times[name].append(timed(cells, pretrained, executor))
    shutil.rmtree(pretrained.parents[1])
    for name, values in times.items():
        print(f"{label} {name:>12}: median {statistics.median(values):7.2f} s, min {min(values):7.2f} s "
              f"({len(values)} runs: {', '.join(f'{v:.2f}' for v in values)})")
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", nargs="+", choices=("smoke", "quick"), default=["smoke", "quick"])
    parser.add_argument("--repeats", type=int, default=3, help="repetitions of the smoke comparison")
    parser.add_argument("--quick-repeats", type=int, default=1,
                        help="repetitions of the quick comparison (minutes each on a 2-core CPU)")
    args = parser.parse_args()
    torch.set_num_threads(1)  # the local executor's cell gets one thread, as a Ray task with cpus-per-cell 1
    print(f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at the start")
    started = time.perf_counter()
    ray.init(num_cpus=2, include_dashboard=False, runtime_env=runtime_env(), logging_level=logging.WARNING)
    one, two = (lambda out: GraphExecutor(Slots(1, out))), (lambda out: GraphExecutor(Slots(2, out)))
    ray.get([ray.remote(num_cpus=1)(lambda: __import__("torch").__version__).remote() for _ in range(2)])
    print(f"Ray start-up (runtime and two workers with torch imported): {time.perf_counter() - started:.1f} s")

    if "smoke" in args.parts:
        smoke = grid("smoke")
        times = compare("smoke, 4 cells", smoke, {"local": lambda out: None, "ray 1 slot": one}, args.repeats)
        overhead = [(r - loc) / len(smoke) for r, loc in zip(times["ray 1 slot"], times["local"], strict=True)]
        print(f"ray overhead per smoke cell: median {statistics.median(overhead):.2f} s, min {min(overhead):.2f} s "
              "(the first repetition's includes the workers' first imports and data loading)")
    if "quick" in args.parts:
        quick = compare("quick, 4 cells", grid("quick"), {"ray 1 slot": one, "ray 2 slots": two},
                        args.quick_repeats)
        speedup = [a / b for a, b in zip(quick["ray 1 slot"], quick["ray 2 slots"], strict=True)]
        print(f"2 workers against 1: median speed-up {statistics.median(speedup):.2f}x, min {min(speedup):.2f}x")
    print(f"load average {os.getloadavg()[0]:.1f} at the end")
    ray.shutdown()


if __name__ == "__main__":
    main()

"""Ray as the graph executor's pool: one Ray task per unit of work, asking for the cell's CPUs and GPUs.

Imported only for `--executor ray`, so `--help` and the local path never import ray. The workers run the
driver's own copy of rpbench (shipped as `py_modules` of the job's runtime environment); torch and the other
dependencies must be installed on every node. Ray's own task retries are off: the graph executor decides
(`--retries`), so a lost worker is reported and counted.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

import attacks
import benchmark
import methods
import results
from benchmark.core.errors import UserError
from benchmark.executors import WorkerLost

TOKEN = ".rpbench-visible-{}"  # written in --out by the driver, read back by a task on every node


def runtime_env() -> dict[str, Any]:
    """What every worker of the job needs beyond the node's environment: this copy of rpbench's packages."""
    return {"py_modules": [benchmark, methods, attacks, results]}


def can_read(path: str, expected: str) -> bool:
    """Whether the token the driver wrote is at `path` as this worker sees it."""
    try:
        return Path(path).read_text() == expected
    except OSError:
        return False


def _in_worker(threads: int, fn: Callable[..., Any], *args: Any) -> Any:
    """fn(*args) with torch using as many threads as the task has CPUs (not every core of the node)."""
    import torch

    torch.set_num_threads(threads)
    return fn(*args)


class RayPool:
    """Ray tasks with `cpus` CPUs and `gpus` GPUs each. Starts a local Ray runtime when `address` is None and
    Ray is not running in this process yet, else joins `address` ("auto" or HOST:PORT); shuts down only a
    runtime it started. On start it checks that every node sees `out` (`probe` reads the driver's token)."""

    def __init__(self, address: str | None, cpus: int, gpus: float, out: Path,
                 probe: Callable[[str, str], bool] = can_read) -> None:
        self._started = False
        if not ray.is_initialized():
            try:
                ray.init(address=address, include_dashboard=False, runtime_env=runtime_env(),
                         logging_level=logging.WARNING)
            except ConnectionError as exc:
                raise UserError(f"cannot join the Ray cluster at {address}: {str(exc).splitlines()[0]}") from None
            self._started = True
        self._threads, self._cpus, self._gpus = max(1, int(cpus)), cpus, gpus
        self._task = ray.remote(_in_worker).options(num_cpus=cpus, num_gpus=gpus, max_retries=0)
        try:
            check_visible(out, probe)
        except BaseException:
            self.close()
            raise

    def slots(self) -> int:
        """Tasks of this size the cluster holds now (it may grow or shrink while the grid runs)."""
        total = ray.cluster_resources()
        fits = [total.get("CPU", 0) // self._cpus] + ([total.get("GPU", 0) // self._gpus] if self._gpus else [])
        return max(1, int(min(fits)))

    def submit(self, fn: Callable[..., Any], *args: Any) -> ray.ObjectRef:
        return self._task.remote(self._threads, fn, *args)

    def wait(self, handles: list[ray.ObjectRef]) -> list[ray.ObjectRef]:
        ready, _ = ray.wait(handles, num_returns=1)
        return ready

    def result(self, handle: ray.ObjectRef) -> Any:
        try:
            return ray.get(handle)
        except ray.exceptions.RayError as exc:  # WorkerCrashedError, NodeDiedError, OutOfMemoryError, ...
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            raise WorkerLost(f"{type(exc).__name__}: {first}") from None

    def close(self) -> None:
        if self._started:
            ray.shutdown()
            self._started = False


def check_visible(out: Path, probe: Callable[[str, str], bool] = can_read) -> None:
    """One line naming the nodes that cannot see `out` (run folders live there: on a cluster it must be a
    shared file system), by a tiny task pinned to each alive node. A node that joins later is not checked."""
    token, expected = out / TOKEN.format(uuid.uuid4().hex), uuid.uuid4().hex
    out.mkdir(parents=True, exist_ok=True)
    token.write_text(expected)
    try:
        nodes = [n for n in ray.nodes() if n["Alive"]]
        check = ray.remote(num_cpus=0, max_retries=0)(probe)
        seen = ray.get([check.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False))
                        .remote(str(token), expected) for n in nodes])
    finally:
        token.unlink(missing_ok=True)
    blind = [n["NodeManagerAddress"] for n, ok in zip(nodes, seen, strict=True) if not ok]
    if blind:
        raise UserError(f"--out {out} is not visible from the Ray node(s) at {', '.join(blind)}: workers write "
                        f"the run folders there, so on a cluster it must be on a file system every node shares")

"""--ddp: one cell trained by DistributedDataParallel over 2 CPU processes (gloo) against the same cell in one process.

The cells train with the natural objective on cnn-small (no BatchNorm, no random attack starts), so the two runs
compute the same thing: every step's gradient is the mean over the same batch, formed on 2 ranks as the average of
two halves' means. What may differ is floating-point rounding (the order of the sums), which a few hundred SGD
steps carry into the weights at the 1e-5 level. With BatchNorm the ranks would normalise with their own half's
statistics, and with a robust objective each rank draws its own attack starts: those runs differ more (README,
"One cell on many processes").
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from benchmark import cli, runner
from benchmark.core.io import safe_load
from benchmark.runner import Environment
from benchmark.training import distributed
from tests.conftest import smoke_config

METHODS = ("hydra", "admm")  # HYDRA's scores are trained parameters; ADMM keeps Z and U beside the weights
WORLD = 2
WEIGHT_TOLERANCE = 1e-5  # largest |w_ddp - w_single| of the exported pruned model (measured: 1.5e-7)
METRIC_TOLERANCE = 1 / 128  # one of the smoke preset's 128 evaluation examples (measured: the same metrics)


def cell(method: str):
    return smoke_config(objective="natural", eval=["clean", "pgd"], **{"eval.checks": False}).replace(
        method=method, sparsity=0.9)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, port: int, out: str, results: str) -> None:
    """One rank as torchrun starts it: the cells, and what this rank saw of every cross-rank check."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(WORLD),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    distributed.init_from_env("cpu")
    seen: list[tuple[str, str]] = []
    check_same = distributed.check_same

    def recording(what, tensors):
        tensors = list(tensors)
        seen.append((what, distributed.digest(tensors)))
        check_same(what, tensors)

    distributed.check_same = recording
    try:
        env = Environment(out=Path(out), quiet=True)
        metrics = {m: [(x.evaluator, x.value) for x in runner.run_cell(cell(m), env).metrics] for m in METHODS}
        distributed.check_same = check_same
        try:
            check_same("a tensor that differs", [torch.tensor([rank])])
            caught = False
        except RuntimeError:
            caught = True
        Path(results, f"rank{rank}.json").write_text(json.dumps({"seen": seen, "metrics": metrics,
                                                                 "caught": caught}))
    finally:
        distributed.close()


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory) -> tuple[Path, list[dict]]:
    """The ranks are forked from this process after it loaded the data and imported what the optimizer imports
    (torch._dynamo): spawned ranks would each spend most of the test importing."""
    root = tmp_path_factory.mktemp("ddp")
    runner.data_for(cell("hydra"), Environment(out=root))
    torch.optim.SGD([torch.zeros(1, requires_grad=True)])
    mp.start_processes(_worker, args=(_free_port(), str(root / "out"), str(root)), nprocs=WORLD, join=True,
                       start_method="fork")
    return root / "out", [json.loads((root / f"rank{r}.json").read_text()) for r in range(WORLD)]


def test_every_rank_holds_the_same_mask_parameters_and_pruner_state(ddp_run):
    _, ranks = ddp_run
    assert ranks[0]["seen"] == ranks[1]["seen"]
    checked = [what for what, _ in ranks[0]["seen"]]
    assert checked.count("the mask") == len(METHODS)
    assert "admm: the pruner's state" in checked and "prune: the parameters" in checked
    assert all(r["caught"] for r in ranks)  # the check does fail when a tensor differs


def test_ddp_cell_matches_the_single_process_cell(ddp_run, tmp_path):
    out, ranks = ddp_run
    assert ranks[0]["metrics"] == ranks[1]["metrics"]  # the sharded evaluation is gathered on every rank
    env = Environment(out=tmp_path, quiet=True)
    for method in METHODS:
        single = runner.run_cell(cell(method), env)
        assert single.status == "done"
        parallel = dict((e, v) for e, v in ranks[0]["metrics"][method])
        for metric in single.metrics:
            assert abs(parallel[metric.evaluator] - metric.value) <= METRIC_TOLERANCE, (method, metric)
        key = cell(method).key()
        ddp_state, single_state = (safe_load(o / "runs" / key / "model.pt") for o in (out, tmp_path))
        worst = max((ddp_state[k] - single_state[k]).abs().max().item() for k in single_state)
        assert worst <= WEIGHT_TOLERANCE, (method, worst)


def test_ddp_without_torchrun_is_a_one_line_error(monkeypatch, capsys, tmp_path):
    for name in distributed.TORCHRUN_ENV:
        monkeypatch.delenv(name, raising=False)
    assert cli.main(["run", "--preset", "smoke", "--methods", "hydra", "--out", str(tmp_path), "--ddp"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "torchrun --nproc-per-node N" in err

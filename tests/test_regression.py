"""A tiny fixed-seed pipeline whose metrics must stay inside a stored band (tests/regression_band.json)."""

import json
from pathlib import Path

import pytest
import torch

from benchmark import runner
from benchmark.grid import cells_of
from results.store import Store
from tests.conftest import smoke_config

BAND = json.loads((Path(__file__).parent / "regression_band.json").read_text())


@pytest.fixture(scope="module")
def smoke_records(tmp_path_factory):
    """The pipeline on one torch thread, which reproduces the band; with two threads the floating-point sums
    change (on the 2026-12-03 development machine LWM's smoke clean accuracy moved by 11 points)."""
    out = tmp_path_factory.mktemp("regression")
    env = runner.Environment(out=out, quiet=True)
    cells = cells_of(smoke_config(), ["hydra", "lwm"], [0.9], [0])
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return {f"{r.method}@{r.sparsity:g}": r for r in runner.run_grid(cells, env, Store(out / "runs.db"))}
    finally:
        torch.set_num_threads(threads)


@pytest.mark.parametrize("cell", sorted(BAND["expected"]))
def test_smoke_metrics_stay_in_band(smoke_records, cell):
    record = smoke_records[cell]
    assert record.status == "done", record.error
    for metric, expected in BAND["expected"][cell].items():
        assert record.by_column()[metric] == pytest.approx(expected, abs=BAND["tolerance"]), f"{cell} {metric}"


def test_hydra_beats_lwm_at_90_percent_in_the_smoke_pipeline(smoke_records):
    assert smoke_records["hydra@0.9"].value("pgd") > smoke_records["lwm@0.9"].value("pgd")

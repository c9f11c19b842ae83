"""The cost table: what each method spent beyond the shared pretrained model, relative to HYDRA."""

import dataclasses

import pytest

from results.cost import cost_table, method_cost
from results.frame import records_frame
from results.record import Metric, RunRecord
from results.report import write_report


def phase(epochs, passes, seconds):
    return {"epochs": epochs, "steps": 1, "forward_passes": passes, "backward_passes": passes, "seconds": seconds}


def record(method, sparsity, pruner, finetune, pretrain_objective=None):
    return RunRecord(key=f"{method}-{sparsity}", dataset="digits", arch="cnn-small", objective="trades",
                     pretrain_objective=pretrain_objective, method=method, scope="layer", sparsity=sparsity, seed=0,
                     status="done", metrics=[Metric("clean", "acc", 0.9), Metric("pgd", "acc", 0.5)],
                     cost={"pretrain": phase(40, 1000, 20.0), "pruner": pruner, "finetune": finetune})


RECORDS = [
    dataclasses.replace(record("dense", 0.0, [], None), cost={"pretrain": phase(40, 1000, 20.0)}),
    record("hydra", 0.9, [{"phase": "prune", **phase(10, 100, 5.0)}], phase(20, 200, 10.0)),
    record("lwm", 0.9, [], phase(20, 200, 10.0)),
]


def test_method_cost_sums_own_phases_and_finetune_but_not_pretraining():
    assert method_cost(RECORDS[1]) == {"cost_epochs": 30.0, "cost_passes": 600.0, "cost_seconds": 15.0}
    assert method_cost(RECORDS[0]) == {"cost_epochs": 40.0, "cost_passes": 2000.0, "cost_seconds": 20.0}
    no_cost = RunRecord(key="k", method="lwm", status="done")
    assert method_cost(no_cost) == {"cost_epochs": None, "cost_passes": None, "cost_seconds": None}


def test_cost_table_is_relative_to_hydra():
    table = cost_table(records_frame(RECORDS))
    assert table.loc["hydra", "90%"] == "30 ep, 1.00x HYDRA's passes, 15 s"
    assert table.loc["lwm", "90%"] == "20 ep, 0.67x HYDRA's passes, 10 s"


def test_report_shows_cost_and_a_different_pretrain_objective(tmp_path):
    records = [dataclasses.replace(r, pretrain_objective="natural") for r in RECORDS]
    text = write_report(records, tmp_path)
    assert "### digits · cnn-small · trades on natural-pretrained" in text
    assert "#### cost: digits" in text and "shared dense pretraining took 40 epochs" in text
    assert (tmp_path / "digits_cnn-small_trades-on-natural-pretrained_cost.csv").exists()
    assert "pretrain_objective" in (tmp_path / "results.csv").read_text().splitlines()[0]


@pytest.mark.parametrize("missing", [None, {}])
def test_records_without_cost_do_not_break_the_report(tmp_path, missing):
    records = [dataclasses.replace(r, cost=missing) for r in RECORDS]
    assert "### digits" in write_report(records, tmp_path)

"""The report's evaluation part: a column per attack, the worst case, the check flags and the eps sweep."""

from __future__ import annotations

import dataclasses

import pandas as pd

from results.frame import records_frame
from results.record import Metric, RunRecord
from results.report import write_report
from results.tables import comparison_tables

KEY = ("digits", "cnn-small", "trades")


def record(method: str, sparsity: float, seed: int, worst: float, flagged: tuple[str, ...] = ()) -> RunRecord:
    metrics = [Metric("clean", "acc", 0.9), Metric("pgd", "acc", worst + 0.05), Metric("autoattack", "acc", worst),
               Metric("worst", "acc", worst)]
    checks = [{"name": name, "flagged": name in flagged, "detail": f"{name} detail"}
              for name in ("black_box", "zero_gradients")]
    sweep = [{"multiple": m, "eps": 0.1 * m, "acc": worst / m} for m in (0.5, 1.0, 2.0)]
    return RunRecord(key=f"{method}-{sparsity}-{seed}", dataset=KEY[0], arch=KEY[1], objective=KEY[2], method=method,
                     scope="layer", sparsity=sparsity, seed=seed, status="done", metrics=metrics, checks=checks,
                     evaluation={"eps_sweep": sweep, "seconds": {}}, eval_desc="PGD then AutoAttack")


def grid() -> list[RunRecord]:
    out = []
    for seed in (0, 1):
        out.append(record("dense", 0.0, seed, 0.6))
        out += [record("hydra", s, seed, 0.5 - s / 10) for s in (0.9, 0.99)]
        out += [record("lwm", s, seed, 0.4 - s / 10, ("black_box",) if (s, seed) == (0.99, 1) else ())
                for s in (0.9, 0.99)]
    return out


def test_the_comparison_shows_the_worst_case_over_attacks():
    table = comparison_tables(records_frame(grid()))[KEY]
    assert table.loc["hydra", "90%"] == "90.0 ± 0.0 / 41.0 ± 0.0"


def test_attack_columns_worst_case_flags_and_sweep_are_written(tmp_path):
    text = write_report(grid(), tmp_path)
    attacks = pd.read_csv(tmp_path / "digits_cnn-small_trades_attacks.csv", index_col=0)
    assert list(attacks.columns) == ["sparsity", "clean", "pgd", "autoattack", "worst", "flags"]
    lwm = attacks.loc["lwm"].set_index("sparsity")
    assert lwm.loc["99%", "flags"] == "black_box" and lwm.loc["90%", "flags"] == "none"
    assert lwm.loc["99%", "worst"] == "30.1 ± 0.0" and lwm.loc["99%", "pgd"] == "35.1 ± 0.0"
    assert "- lwm 99% seed 1: **black_box**: black_box detail" in text
    sweep = pd.read_csv(tmp_path / "digits_cnn-small_trades_eps.csv", index_col=0)
    assert list(sweep.index) == ["dense", "hydra", "lwm"] and list(sweep.columns) == ["0.05", "0.1", "0.2"]
    assert sweep.loc["hydra", "0.2"] == f"{100 * (0.5 - 0.099) / 2:.1f} ± 0.0"  # the highest sparsity by default
    assert (tmp_path / "digits_cnn-small_trades_eps.png").read_bytes()[:4] == b"\x89PNG"


def test_the_sweep_sparsity_can_be_chosen(tmp_path):
    write_report(grid(), tmp_path, sweep_sparsity=0.9)
    sweep = pd.read_csv(tmp_path / "digits_cnn-small_trades_eps.csv", index_col=0)
    assert sweep.loc["hydra", "0.1"] == f"{100 * 0.41:.1f} ± 0.0"


def test_records_without_evaluation_details_still_report(tmp_path):
    old = [dataclasses.replace(r, checks=None, evaluation=None,
                               metrics=[Metric("clean", "acc", 0.9), Metric("pgd", "acc", 0.5)]) for r in grid()]
    text = write_report(old, tmp_path)
    assert "| hydra | 90.0 ± 0.0 / 50.0 ± 0.0" in text  # PGD is the robust number where no worst case exists
    assert not (tmp_path / "digits_cnn-small_trades_eps.png").exists()

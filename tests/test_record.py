"""The typed run record: store round trip, long-form metrics and their pivot, and the migration of older stores."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pandas as pd
import pytest

from results.frame import metrics_frame, records_frame
from results.legacy import long_metrics
from results.record import Metric, RunRecord
from results.report import write_report
from results.store import SCHEMA_VERSION, Store

HERE = Path(__file__).parent
V2 = json.loads((HERE / "store_v2.json").read_text())

# the results.csv columns before the long form (commit 0212837) for the hand-made grid below, less
# smoothing_acc: that number is smoothing_r0_acc, certified accuracy at radius 0
CSV_COLUMNS = [
    "dataset", "arch", "objective", "pretrain_objective", "method", "scope", "sparsity", "sparsity_actual", "seed",
    "preset", "budget", "variant", "clean_acc", "pgd_acc", "robust_acc", "flags", "status", "error", "eval_desc",
    "cost_epochs", "cost_passes", "cost_seconds", "autoattack_acc", "ta_square_acc", "worst_acc",
    "smoothing_predict_acc", "smoothing_r0_acc", "smoothing_r0.25_acc", "smoothing_r0.5_acc", "smoothing_acr",
    "crown_verified_acc", "crown_verified_x2_acc", "ibp_verified_acc", "ibp_verified_x2_acc", "verified_acc",
    "verified_x2_acc",
]


def hand_made_metrics(method: str, seed: int) -> list[Metric]:
    """Every kind of metric, with irregular values (the grid behind tests/report_before_long_form.md)."""
    b = {"dense": 0.9, "hydra": 0.8, "lwm": 0.7}[method] + 0.01 * seed
    ibp, crown = b - 0.4, b - 0.35
    return [Metric("clean", "acc", b), Metric("pgd", "acc", b - 0.2), Metric("autoattack", "acc", b - 0.25),
            Metric("torchattacks:Square", "acc", b - 0.27), Metric("worst", "acc", b - 0.27),
            *(Metric("smoothing", "certified_acc", b - drop, radius=r) for r, drop in ((0.0, 0.06), (0.25, 0.3),
                                                                                    (0.5, 0.5))),
            Metric("smoothing", "acr", 0.4 * b), Metric("smoothing", "predict_acc", b - 0.05),
            *(Metric(evaluator, "verified_acc", value / (1 if m == 1.0 else 4), eps_multiple=m) for m in (1.0, 2.0)
              for evaluator, value in (("ibp", ibp), ("crown", crown), ("verified", crown)))]


def hand_made() -> list[RunRecord]:
    return [RunRecord(key=f"{method}-{seed}", dataset="digits", arch="cnn-small", objective="trades", method=method,
                      scope="layer", sparsity=sparsity, seed=seed, status="done", eval_desc="hand-made",
                      metrics=hand_made_metrics(method, seed), evaluation={"seconds": {}})
            for seed in (0, 1) for method, sparsity in (("dense", 0.0), ("hydra", 0.9), ("lwm", 0.9))]


def test_a_record_round_trips_through_the_store_with_full_precision(tmp_path):
    record = RunRecord(
        key="k", dataset="digits", arch="cnn-small", objective="trades", pretrain_objective="natural",
        method="hydra", scope="global", sparsity=0.99, sparsity_actual=1 - 1 / 97, seed=3,
        preset="quick", metrics=hand_made_metrics("hydra", 1),
        cost={"finetune": {"epochs": 2, "seconds": 0.1 + 0.2}}, versions={"python": "3.11"}, eval_desc="PGD",
        device="cpu", status="failed", error="RuntimeError: boom", finished_at="2026-12-03T00:00:00+00:00",
        evaluation={"eps_sweep": [{"multiple": 1.0, "eps": 0.1, "acc": 2 / 7}]},
        checks=[{"name": "black_box", "flagged": True, "detail": "Square broke 9 of 10"}], eval_key="e")
    Store(tmp_path / "runs.db").put(record)
    store = Store(tmp_path / "runs.db")
    assert store.get("k") == record and store.all() == [record]
    assert store.get("k").value("clean") == 0.8 + 0.01 and store.get("k").cost["finetune"]["seconds"] == 0.1 + 0.2
    assert store.get("missing") is None


def test_a_failed_record_without_metrics_round_trips(tmp_path):
    record = RunRecord(key="k", method="lwm", status="failed", error="boom")
    store = Store(tmp_path / "runs.db")
    store.put(record)
    assert store.get("k") == record and store.get("k").metrics == []


def test_metric_fields_say_what_a_name_used_to():
    record = hand_made()[1]
    assert record.value("torchattacks:Square") == pytest.approx(0.53)
    assert record.value("ibp", "verified_acc", eps_multiple=2.0) == pytest.approx(0.1)
    assert record.value("smoothing", "certified_acc", radius=0.25) == pytest.approx(0.5)
    assert record.value("smoothing", "certified_acc", radius=0.75) is None
    assert list(record.by_column())[:5] == ["clean_acc", "pgd_acc", "autoattack_acc", "ta_square_acc", "worst_acc"]
    long = metrics_frame(hand_made())
    assert len(long) == sum(len(r.metrics) for r in hand_made())
    assert set(long.loc[long["kind"] == "certified_acc", "radius"]) == {0.0, 0.25, 0.5}


def test_every_column_reads_back_as_its_metric():
    """The inverse the migration relies on: an old store's name is the column of the metric it becomes."""
    metrics = hand_made_metrics("lwm", 0)
    assert long_metrics({m.column: m.value for m in metrics}, ["clean", "torchattacks:Square"]) == metrics
    assert long_metrics({"smoothing_acc": 0.5, "smoothing_r0_acc": 0.5}) == [
        Metric("smoothing", "certified_acc", 0.5, radius=0.0)]
    with pytest.raises(ValueError, match="'nonsense'"):
        long_metrics({"nonsense": 1.0})


def test_the_pivot_gives_the_tables_of_the_named_metrics(tmp_path):
    """The report of the hand-made grid is the very text the code before the long form wrote for it."""
    text = write_report(hand_made(), tmp_path)
    assert text == (HERE / "report_before_long_form.md").read_text()
    frame = pd.read_csv(tmp_path / "results.csv")
    assert list(frame.columns) == CSV_COLUMNS
    for row, record in zip(frame.to_dict("records"), hand_made(), strict=True):
        assert {c: row[c] for c in record.by_column()} == record.by_column()  # full precision
    assert records_frame(hand_made())["robust_acc"].tolist() == [r.value("worst") for r in hand_made()]


def write_v2_store(path: Path) -> None:
    """The version-2 store of the fixture, column layout and rows exactly as the old code wrote them."""
    db = sqlite3.connect(path)
    db.execute(V2["schema"])
    for row in V2["rows"]:
        db.execute(f"INSERT INTO runs ({', '.join(row)}) VALUES ({', '.join('?' * len(row))})", list(row.values()))
    db.execute(f"PRAGMA user_version = {V2['user_version']}")
    db.commit()
    db.close()


def test_a_version_2_store_is_migrated_in_place_and_reports_as_before(tmp_path):
    write_v2_store(tmp_path / "runs.db")
    records = Store(tmp_path / "runs.db").all()
    assert [r.key for r in records] == [row["key"] for row in V2["rows"]]
    dense, lwm = records
    assert lwm.value("torchattacks:FGSM") == 0.3984375 and lwm.value("worst") == 0.3984375
    assert lwm.value("ibp", "verified_acc", eps_multiple=0.5) == 0.046875
    assert lwm.value("verified", "verified_acc", eps_multiple=1.0) == 0.171875
    assert lwm.value("smoothing", "certified_acc", radius=0.0) == 0.6875  # smoothing_acc and smoothing_r0_acc
    assert lwm.value("smoothing", "acr") == 0.17097365856170654
    old = json.loads(V2["rows"][1]["metrics"])
    assert lwm.by_column() == {k: v for k, v in old.items() if k != "smoothing_acc"}
    assert "attack_metrics" not in lwm.evaluation and lwm.evaluation["eps_sweep"][1]["acc"] == 0.3984375
    assert dense.checks == json.loads(V2["rows"][0]["checks"]) and dense.cost == json.loads(V2["rows"][0]["cost"])
    assert write_report(records, tmp_path / "report") == V2["report"]
    db = sqlite3.connect(tmp_path / "runs.db")
    assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 5
    assert all(r.kept_per_layer is None for r in records)  # not known for runs stored before version 4
    assert Store(tmp_path / "runs.db").all() == records  # migrated once, read as it is from then on


def test_a_migration_that_fails_leaves_the_old_store_as_it_was(tmp_path):
    write_v2_store(tmp_path / "runs.db")
    db = sqlite3.connect(tmp_path / "runs.db")
    db.execute("""UPDATE runs SET metrics = '{"nonsense": 1}' WHERE method = 'lwm'""")
    db.commit()
    with pytest.raises(ValueError, match="nonsense"):
        Store(tmp_path / "runs.db")
    assert db.execute("PRAGMA user_version").fetchone()[0] == 2
    assert db.execute("SELECT metrics FROM runs WHERE method = 'dense'").fetchone()[0] == V2["rows"][0]["metrics"]


def test_a_newer_store_is_refused(tmp_path):
    db = sqlite3.connect(tmp_path / "runs.db")
    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    db.close()
    with pytest.raises(RuntimeError, match=f"schema version {SCHEMA_VERSION + 1}"):
        Store(tmp_path / "runs.db")


def test_runs_of_the_current_main_are_reported_as_key_version_1_never_reused_nor_orphaned(tmp_path, capsys):
    """A store written by the code before key version 2: its rows are kept and counted, `run` says so and
    computes the cells again under the current keys, `report` leaves the old rows out and says why."""
    from benchmark.cli import main
    from benchmark.core.config import KEY_VERSION

    write_v2_store(tmp_path / "runs.db")
    assert Store(tmp_path / "runs.db").older(KEY_VERSION) == {1: len(V2["rows"])}
    argv = ["run", "--preset", "smoke", "--methods", "lwm", "--sparsity", "0.9", "--out", str(tmp_path), "--quiet"]
    assert main([*argv, "--dry-run"]) == 0
    captured = capsys.readouterr()
    assert f"note: {len(V2['rows'])} runs in {tmp_path / 'runs.db'} were computed under key version 1" in captured.err
    assert all("done: nothing" in line for line in captured.out.strip().splitlines())  # nothing old is reused
    assert main(["report", "--out", str(tmp_path)]) == 0
    captured = capsys.readouterr()
    assert "key version 1" in captured.err
    assert captured.out == f"No runs.\n\nHTML report: {tmp_path / 'report' / 'index.html'}\n"
    assert [r.key for r in Store(tmp_path / "runs.db").all()] == [row["key"] for row in V2["rows"]]  # kept

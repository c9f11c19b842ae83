"""Runs of one cell that differ in a setting (a `--set` sweep into one store) are rows of their own, not seeds."""

from benchmark.grid import resolve
from benchmark.runner import record_settings
from benchmark.spec import spec_from
from results.frame import records_frame, table_groups
from results.record import Metric, RunRecord
from results.tables import comparison_table


def record(key: str, method: str, robust: float, settings: dict | None, seed: int = 0) -> RunRecord:
    return RunRecord(key=key, dataset="digits", arch="cnn-small", objective="ibp", method=method, scope="layer",
                     sparsity=0.9, seed=seed, status="done", budget="preset", preset="quick", settings=settings,
                     metrics=[Metric("clean", "acc", 0.9), Metric("pgd", "acc", robust)])


def table(records):
    ((_, group),) = table_groups(records_frame(records))
    return comparison_table(group)


def test_a_sweep_of_one_setting_gives_one_row_per_value():
    records = [record("a", "hydra", 0.5, {"hydra.lr": 0.001, "finetune.lr": 0.01}),
               record("b", "hydra", 0.3, {"hydra.lr": 1e-05, "finetune.lr": 0.01}),
               record("c", "hydra", 0.4, {"hydra.lr": 0.001, "finetune.lr": 0.01}, seed=1),
               record("d", "lwm", 0.2, {"finetune.lr": 0.01})]
    rows = table(records)["90%"].to_dict()
    assert rows == {"hydra (hydra.lr=0.001)": "90.0 ± 0.0 / 45.0 ± 7.1",  # seeds 0 and 1 pool, as seeds do
                    "hydra (hydra.lr=1e-05)": "90.0 / 30.0", "lwm": "90.0 / 20.0"}


def test_runs_stored_without_their_settings_are_told_apart_by_key():
    rows = table([record("0123456789", "hydra", 0.5, None), record("abcdefghij", "hydra", 0.3, None)])
    assert sorted(rows.index) == ["hydra (run 01234567)", "hydra (run abcdefgh)"]


def test_a_record_holds_what_its_key_hashes_under_the_set_names():
    spec, _ = spec_from({"data": "digits", "methods": ["hydra"], "sparsity": [0.9],
                         "hydra.lr": 0.001}, "test")
    cfg = next(c for c in resolve(spec).cells if c.method == "hydra")
    settings = record_settings(cfg)
    assert settings["hydra.lr"] == 0.001 and settings["method"] == "hydra" and settings["finetune.epochs"] > 0
    assert not any(name.startswith("groups.") for name in settings)

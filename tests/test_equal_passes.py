"""`--budget equal-passes`: every method trains as many epochs as the costliest one at its sparsity."""

from benchmark.grid import DENSE, planned_epochs, resolve
from benchmark.spec import spec_from

METHODS = ["hydra", "lwm", "admm", "lottery", "random"]


def grid(budget: str):
    spec, _ = spec_from({"data": "fashion-mnist", "methods": METHODS, "sparsity": [0.9, 0.99], "seeds": [0, 1],
                         "budget": budget}, "test")
    return resolve(spec).cells


def by_cell(cells):
    return {(c.method, c.sparsity, c.seed): c for c in cells}


def test_every_method_gets_the_epochs_of_the_costliest_at_each_sparsity():
    preset, equal = by_cell(grid("preset")), by_cell(grid("equal-passes"))
    for sparsity in (0.9, 0.99):
        costliest = max(planned_epochs(preset[m, sparsity, 0]) for m in METHODS)
        assert costliest == planned_epochs(preset["lottery", sparsity, 0])  # every round retrains
        for method in METHODS:
            assert planned_epochs(equal[method, sparsity, 0]) == costliest, method
    hydra_before, hydra = preset["hydra", 0.99, 0], equal["hydra", 0.99, 0]
    assert hydra.settings_of("hydra").epochs > hydra_before.settings_of("hydra").epochs  # prune and finetune
    assert hydra.finetune.epochs > hydra_before.finetune.epochs  # both grow
    assert equal["lwm", 0.99, 0].finetune.epochs == planned_epochs(preset["lottery", 0.99, 0])
    assert equal["lottery", 0.99, 0].settings_of("lottery") == preset["lottery", 0.99, 0].settings_of("lottery")


def test_the_equal_compute_view_is_its_own_set_of_runs_on_the_shared_pretraining():
    preset, equal = by_cell(grid("preset")), by_cell(grid("equal-passes"))
    assert set(preset) == set(equal)
    for cell, cfg in equal.items():
        assert cfg.budget == "equal-passes" and preset[cell].budget == "preset"
        assert cfg.key() != preset[cell].key()
        assert cfg.pretrain_key() == preset[cell].pretrain_key()
    assert equal[DENSE, 0.0, 0].finetune == preset[DENSE, 0.0, 0].finetune


def test_the_report_keeps_the_two_views_apart():
    from results.frame import records_frame, table_groups
    from results.record import Metric, RunRecord

    def record(method: str, budget: str) -> RunRecord:
        return RunRecord(key=f"{method}-{budget}", dataset="digits", arch="cnn-small", objective="trades",
                         method=method, scope="layer", sparsity=0.9, seed=0, status="done", budget=budget,
                         metrics=[Metric("clean", "acc", 0.9), Metric("pgd", "acc", 0.5)])

    records = [record(m, b) for b in ("preset", "equal-passes") for m in ("hydra", "lwm")]
    groups = {key: sorted(group["method"]) for key, group in table_groups(records_frame(records))}
    assert groups == {("digits", "cnn-small", "trades"): ["hydra", "lwm"],
                      ("digits", "cnn-small", "trades, equal passes"): ["hydra", "lwm"]}

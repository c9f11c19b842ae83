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


def test_raised_cells_are_runs_of_their_own_and_the_others_are_shared_with_the_preset_view():
    preset, equal = by_cell(grid("preset")), by_cell(grid("equal-passes"))
    assert set(preset) == set(equal)
    for cell, cfg in equal.items():
        assert cfg.pretrain_key() == preset[cell].pretrain_key()
        raised = cell[0] not in (DENSE, "lottery")
        assert cfg.budget == ("equal-passes" if raised else "preset")
        assert (cfg.key() != preset[cell].key()) == raised, cell  # lottery and dense are not trained twice


def record(method: str, budget: str, epochs: int, seed: int = 0, sparsity: float = 0.9):
    from results.record import Metric, RunRecord

    phase = {"epochs": epochs, "forward_passes": 2 * epochs, "backward_passes": epochs, "seconds": 1.0}
    cost = {"pretrain": phase} if method == DENSE else {"finetune": phase}
    return RunRecord(key=f"{method}-{budget}-{seed}-{sparsity}", dataset="digits", arch="cnn-small",
                     objective="trades", method=method, scope="layer", sparsity=0.0 if method == DENSE else sparsity,
                     seed=seed, status="done", budget=budget, preset="quick", cost=cost,
                     metrics=[Metric("clean", "acc", 0.9), Metric("pgd", "acc", 0.5)])


def views(records) -> dict:
    from results.frame import records_frame, table_groups

    return {key[2]: sorted(zip(group["method"], group["seed"], strict=True))
            for key, group in table_groups(records_frame(records))}


def test_the_report_shows_both_views_with_the_unraised_runs_in_each():
    records = [record(DENSE, "preset", 40), record("hydra", "preset", 30), record("lwm", "preset", 20),
               record("lottery", "preset", 45), record("hydra", "equal-passes", 45), record("lwm", "equal-passes", 45)]
    assert views(records) == {"trades": [(DENSE, 0), ("hydra", 0), ("lottery", 0), ("lwm", 0)],
                              "trades, equal passes": [(DENSE, 0), ("hydra", 0), ("lottery", 0), ("lwm", 0)]}


def test_a_preset_run_joins_the_view_only_where_it_spent_the_views_passes():
    records = [record(DENSE, "preset", 40), record(DENSE, "preset", 40, seed=1),
               record("lottery", "preset", 45), record("lwm", "preset", 20), record("admm", "preset", 30),
               record("lottery", "preset", 45, sparsity=0.99),  # the view has no run at 99%
               record("hydra", "equal-passes", 45), record("lwm", "equal-passes", 45)]
    equal = views(records)["trades, equal passes"]
    assert equal == [(DENSE, 0), ("hydra", 0), ("lottery", 0), ("lwm", 0)]  # not seed 1, not ADMM's 30 epochs

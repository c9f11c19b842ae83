"""Paired-by-seed differences between methods: the numbers, the interval and when a difference is significant."""

import pandas as pd
import pytest
from scipy.stats import ttest_rel

from results.significance import interval, paired_differences


def runs(robust: dict[tuple[str, float], list[float]]) -> pd.DataFrame:
    rows = [{"method": method, "scope": "layer", "sparsity": sparsity, "seed": seed, "status": "done",
             "robust_acc": value} for (method, sparsity), values in robust.items() for seed, value in enumerate(values)]
    return pd.DataFrame(rows)


def test_the_interval_is_students_t_on_the_paired_differences():
    hydra, lwm = [0.50, 0.55, 0.53], [0.40, 0.49, 0.45]
    differences = (pd.Series(hydra) - pd.Series(lwm)) * 100
    mean, low, high = interval(differences)
    assert mean == pytest.approx(8.0)
    # the interval excludes zero exactly when the paired t-test rejects at 5%
    assert (low > 0) == (ttest_rel(hydra, lwm).pvalue < 0.05)
    assert (high - mean) == pytest.approx(mean - low)


def test_a_consistent_gap_is_significant_and_a_noisy_one_is_not():
    table = paired_differences(runs({("hydra", 0.9): [0.50, 0.55, 0.53], ("lwm", 0.9): [0.40, 0.49, 0.45],
                                     ("hydra", 0.99): [0.30, 0.10, 0.25], ("lwm", 0.99): [0.10, 0.30, 0.20]}))
    assert list(table.index) == ["hydra − lwm"] and list(table.columns) == ["90%", "99%"]
    assert table.loc["hydra − lwm", "90%"].startswith("+8.0 [") and table.loc["hydra − lwm", "90%"].endswith("*")
    assert table.loc["hydra − lwm", "90%"].count("(n=3)") == 1
    assert not table.loc["hydra − lwm", "99%"].endswith("*")


def test_only_seeds_both_methods_finished_are_paired():
    frame = runs({("hydra", 0.9): [0.5, 0.6], ("lwm", 0.9): [0.4]})
    assert paired_differences(frame).loc["hydra − lwm", "90%"] == "+10.0 (n=1)"

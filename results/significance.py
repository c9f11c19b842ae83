"""Method differences that survive the seeds: for every pair of methods at every sparsity, the mean difference
of worst-case robust accuracy over seeds with a 95% confidence interval, paired by seed.

Pairing is what makes few seeds informative: the methods of a seed share its pretrained model (and its data
order), so much of the seed-to-seed variation cancels in the per-seed difference. The interval is Student's t
on the n paired differences (n - 1 degrees of freedom); a difference is marked significant only when its
interval excludes zero. With one paired seed there is no interval, and nothing is marked.
"""

from __future__ import annotations

import itertools
import math

import pandas as pd

from results.report_format import MISSING, percent_label, pruned_runs

LEVEL = 0.95
SIGNIFICANT = "*"


def paired_differences(group: pd.DataFrame, column: str = "robust_acc") -> pd.DataFrame:
    """Rows "a − b" for every pair of methods (a before b by name), columns the sparsities; each cell the mean
    per-seed difference in points, its interval, n and the significance mark."""
    pruned = pruned_runs(group[group["status"] == "done"])
    values = pruned.pivot_table(index=["sparsity_pct", "seed"], columns="label", values=column, aggfunc="first")
    sparsities = sorted(pruned["sparsity_pct"].unique())
    rows = {}
    for a, b in itertools.combinations(sorted(values.columns), 2):
        rows[f"{a} − {b}"] = [_cell((values.loc[s, a] - values.loc[s, b]).dropna() * 100) for s in sparsities]
    table = pd.DataFrame.from_dict(rows, orient="index", columns=[percent_label(s) for s in sparsities],
                                   dtype=object)
    table.index.name = "difference"
    return table


def interval(differences: pd.Series) -> tuple[float, float, float]:
    """Mean and the two-sided t-interval at LEVEL of paired differences (n >= 2)."""
    from scipy.stats import t

    n = len(differences)
    mean = float(differences.mean())
    half = float(t.ppf(0.5 + LEVEL / 2, n - 1)) * float(differences.std(ddof=1)) / math.sqrt(n)
    return mean, mean - half, mean + half


def _cell(differences: pd.Series) -> str:
    n = len(differences)
    if n == 0:
        return MISSING
    if n == 1:
        return f"{differences.iloc[0]:+.1f} (n=1)"
    mean, low, high = interval(differences)
    mark = f" {SIGNIFICANT}" if low > 0 or high < 0 else ""
    return f"{mean:+.1f} [{low:+.1f}, {high:+.1f}] (n={n}){mark}"


def significance_caption(column: str = "robust_acc") -> str:
    what = "worst-case robust" if column == "robust_acc" else column
    return (f"difference in {what} accuracy (points), mean over seeds paired by seed, with its {LEVEL:.0%} "
            f"t-interval and the number of paired seeds; {SIGNIFICANT} marks an interval that excludes zero")

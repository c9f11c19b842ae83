"""Formatting shared by every table of the report: percent labels, mean ± std cells, row labels."""

from __future__ import annotations

from collections.abc import Iterator

import pandas as pd

DENSE = "dense"
MISSING = "–"
DDOF = 1  # seeds are a small sample of possible training runs: the sample standard deviation


def pruned_runs(group: pd.DataFrame) -> pd.DataFrame:
    """Non-dense runs with a row ``label`` and the target sparsity in percent (rounded for grouping)."""
    pruned = group[group["method"] != DENSE].copy()
    pruned["sparsity_pct"] = (pruned["sparsity"] * 100).round(6)
    pruned["label"] = row_labels(pruned)
    return pruned


def method_rows(done: pd.DataFrame) -> Iterator[tuple[str, float, pd.DataFrame]]:
    """(label, sparsity in percent, runs): the dense model first, then each method and sparsity."""
    dense = done[done["method"] == DENSE]
    if len(dense):
        yield DENSE, 0.0, dense
    for (label, sparsity), runs in pruned_runs(done).groupby(["label", "sparsity_pct"], sort=True):
        yield str(label), sparsity, runs


def row_labels(pruned: pd.DataFrame) -> pd.Series:
    """Method name, plus "(scope)" when the table mixes scopes, and "(hydra.lr=0.001)" for runs of one cell
    that differ in a setting (`results.frame.variants`), so rows stay distinguishable."""
    labels = pruned["method"].astype(str)
    if pruned["scope"].nunique(dropna=False) > 1:
        labels = labels + " (" + pruned["scope"].astype(str) + ")"
    if "variant" in pruned:
        variant = pruned["variant"]
        labels = labels.where(variant.isna(), labels + " (" + variant.astype(str) + ")")
    return labels


def percent_label(percent: float) -> str:
    """90.0 -> "90%", 99.9 -> "99.9%" (no trailing zeros)."""
    return f"{percent:.6f}".rstrip("0").rstrip(".") + "%"


def format_stat(fractions: pd.Series) -> str:
    """Mean ± sample std (ddof=1) in percent; a single value without std; no value as "–"."""
    percent = fractions.dropna().astype(float) * 100
    if percent.empty:
        return MISSING
    if len(percent) == 1:
        return f"{percent.iloc[0]:.1f}"
    return f"{percent.mean():.1f} ± {percent.std(ddof=DDOF):.1f}"

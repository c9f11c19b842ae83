"""The certifiers' tables: certified accuracy of the smoothed classifier by l2 radius, and verified accuracy of
the bound certifiers (each, and the best of them per example) next to clean and PGD accuracy.

Both select their metrics from the catalogue of `results.frame` by their fields (kind, radius, eps multiple) and
read them from the wide frame by column.
"""

from __future__ import annotations

import pandas as pd

from results.record import BEST
from results.report_format import MISSING, format_stat, method_rows, percent_label

SMOOTHING_KINDS = ("predict_acc", "certified_acc", "acr")
CERTIFIER_ORDER = ("ibp", "sym", "crown")
TITLES = {"ibp": "IBP", "crown": "CROWN", "sym": "symbolic"}


def certified_metrics(catalogue: pd.DataFrame) -> pd.DataFrame:
    """The smoothing certifier's metrics of the catalogue: PREDICT's accuracy, certified accuracy by radius, then
    the average certified radius."""
    return catalogue[catalogue["kind"].isin(SMOOTHING_KINDS)]


def _certified_label(kind: str, radius: float) -> str:
    return {"predict_acc": "smoothed (PREDICT)", "acr": "ACR"}.get(kind) or f"r = {radius:g}"


def certified_table(group: pd.DataFrame, metrics: pd.DataFrame) -> pd.DataFrame:
    """One row per method and sparsity: clean accuracy of the base model, then each certified metric (mean ± std
    over done seeds; accuracies in %, average radii as numbers)."""
    done = group[group["status"] == "done"]
    rows = []
    for label, sparsity, runs in method_rows(done):
        rows.append([label, percent_label(sparsity), format_stat(runs["clean_acc"]),
                     *(_format_radius(runs[m.column]) if m.kind == "acr" else format_stat(runs[m.column])
                       for m in metrics.itertuples())])
    labels = [_certified_label(m.kind, m.radius) for m in metrics.itertuples()]
    return pd.DataFrame(rows, columns=["method", "sparsity", "clean", *labels]).set_index("method")


def _format_radius(values: pd.Series) -> str:
    values = values.dropna().astype(float)
    if values.empty:
        return MISSING
    return f"{values.iloc[0]:.3f}" if len(values) == 1 else f"{values.mean():.3f} ± {values.std(ddof=1):.3f}"


def certified_caption(description: str) -> str:
    return ("certified accuracy (%) of the smoothed classifier at each l2 radius (correct and not abstained, "
            f"radius at least r), PREDICT's accuracy and the average certified radius (ACR) — {description}")


def verified_metrics(catalogue: pd.DataFrame) -> pd.DataFrame:
    """Each certifier's verified accuracy at the evaluation eps, then the best, then the best at the other eps;
    none if no certifier verified at the evaluation eps."""
    verified = catalogue[catalogue["kind"] == "verified_acc"]
    at_eps = verified["eps_multiple"] == 1.0
    certifiers = [verified[at_eps & (verified["evaluator"] == c)] for c in CERTIFIER_ORDER]
    if all(c.empty for c in certifiers):
        return verified.iloc[:0]
    best = verified[verified["evaluator"] == BEST].sort_values("eps_multiple")
    return pd.concat([*certifiers, best[best["eps_multiple"] == 1.0], best[best["eps_multiple"] != 1.0]],
                     ignore_index=True)


def verified_label(evaluator: str, eps_multiple: float) -> str:
    name = TITLES.get(evaluator, "verified")
    return name if eps_multiple == 1.0 else f"{name} @ {eps_multiple:g}x eps"


def verified_table(group: pd.DataFrame, metrics: pd.DataFrame) -> pd.DataFrame:
    """One row per method and sparsity (dense first): clean, PGD, each certifier, the best, the best at other eps."""
    done = group[group["status"] == "done"]
    rows = []
    for label, sparsity, runs in method_rows(done):
        rows.append([label, percent_label(sparsity), format_stat(runs["clean_acc"]), format_stat(runs["pgd_acc"]),
                     *(format_stat(runs[c]) for c in metrics["column"])])
    labels = [verified_label(m.evaluator, m.eps_multiple) for m in metrics.itertuples()]
    return pd.DataFrame(rows, columns=["method", "sparsity", "clean", "PGD", *labels]).set_index("method")


def verified_caption(description: str) -> str:
    return ("verified accuracy (%): examples whose every margin has a positive lower bound over the l-inf box "
            "(clamped to [0, 1]) by each certifier, and `verified` for an example any of them verifies; clean and "
            f"PGD accuracy of the same runs beside them — {description}")

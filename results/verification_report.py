"""The verification part of a report: verified accuracy per certifier and the best of them, against sparsity,
next to clean and PGD accuracy (table and plot).

Metric names come from attacks/verification.py: `ibp_verified_acc` (IBP at the evaluation eps),
`ibp_verified_x2_acc` (at twice it), `verified_acc` (an example verified by any certifier).
"""

from __future__ import annotations

import io
import re

import pandas as pd
from matplotlib.figure import Figure

from results.evaluation_report import method_rows
from results.report_format import DENSE, format_stat, percent_label, pruned_runs

CERTIFIER_ORDER = ("ibp", "sym", "crown")
TITLES = {"ibp": "IBP", "crown": "CROWN", "sym": "symbolic"}
_METRIC = re.compile(r"(?:(?P<certifier>[a-z]+)_)?verified(?:_x(?P<multiple>[0-9.]+))?_acc")


def _parse(metric: str) -> tuple[str | None, float] | None:
    """ibp_verified_x2_acc -> ("ibp", 2.0); verified_acc -> (None, 1.0); anything else -> None."""
    match = _METRIC.fullmatch(metric)
    if not match:
        return None
    return match.group("certifier"), float(match.group("multiple") or 1.0)


def verified_columns(records: list[dict]) -> list[str]:
    """Each certifier's verified accuracy at the evaluation eps, then the best, then the best at the other eps."""
    found = {m for r in records for m in (r.get("metrics") or {}) if _parse(m)}
    at_eps = [f"{c}_verified_acc" for c in CERTIFIER_ORDER if f"{c}_verified_acc" in found]
    if not at_eps:
        return []
    curve = sorted((m for m in found if _parse(m)[0] is None and _parse(m)[1] != 1.0), key=lambda m: _parse(m)[1])
    return [*at_eps, "verified_acc", *curve]


def _label(metric: str) -> str:
    certifier, multiple = _parse(metric)
    name = TITLES[certifier] if certifier else "verified"
    return name if multiple == 1.0 else f"{name} @ {multiple:g}x eps"


def verified_table(group: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """One row per method and sparsity (dense first): clean, PGD, each certifier, the best, the best at other eps."""
    done = group[group["status"] == "done"]
    rows = []
    for label, sparsity, runs in method_rows(done):
        pgd = format_stat(runs["pgd_acc"]) if "pgd_acc" in runs else "–"
        rows.append([label, percent_label(sparsity), format_stat(runs["clean_acc"]), pgd,
                     *(format_stat(runs[c]) for c in columns)])
    return pd.DataFrame(rows, columns=["method", "sparsity", "clean", "PGD", *map(_label, columns)]
                        ).set_index("method")


def verified_caption(description: str) -> str:
    return ("verified accuracy (%): examples whose every margin has a positive lower bound over the l-inf box "
            "(clamped to [0, 1]) by each certifier, and `verified` for an example any of them verifies; clean and "
            f"PGD accuracy of the same runs beside them — {description}")


def verified_png(title: str, group: pd.DataFrame) -> bytes:
    """Clean, PGD and verified accuracy against sparsity, one panel each, one line per method, dense dotted."""
    panels = [("clean_acc", "clean"), ("pgd_acc", "PGD"), ("verified_acc", "verified (best certifier)")]
    panels = [(m, name) for m, name in panels if m in group]
    done = group[group["status"] == "done"]
    pruned = pruned_runs(done)
    sparsities = sorted(pruned["sparsity_pct"].unique())
    colors = {label: f"C{i % 10}" for i, label in enumerate(sorted(pruned["label"].unique()))}
    fig = Figure(figsize=(4.0 * len(panels), 4.2), layout="constrained")
    for ax, (metric, name) in zip(fig.subplots(1, len(panels), squeeze=False)[0], panels, strict=True):
        stats = pruned.groupby(["label", "sparsity_pct"])[metric].mean().reset_index()
        for label, points in stats.groupby("label", sort=True):
            ax.plot([sparsities.index(s) for s in points["sparsity_pct"]], points[metric] * 100, marker="o",
                    color=colors[label], label=str(label))
        dense = done[done["method"] == DENSE][metric].mean() * 100
        if pd.notna(dense):
            ax.axhline(dense, color="black", linestyle=":", label="dense")
        ax.set(xlabel="target sparsity", ylabel="accuracy (%)", title=name)
        ax.set_xticks(range(len(sparsities)), [percent_label(s) for s in sparsities])
        ax.set_ylim(bottom=0)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize="small")
    fig.suptitle(title)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=120)
    return buffer.getvalue()

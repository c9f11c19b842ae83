"""The evaluation's part of a report: accuracy under each attack, the self-check flags, and the eps sweep.

Works on the long-form frame of `results.report` (one row per record, in the records' order), so a group's
index points back at its records for what the frame does not flatten (the sweep points, check details).
"""

from __future__ import annotations

import io
import re
from collections.abc import Iterator

import pandas as pd
from matplotlib.figure import Figure

from results.report_format import DENSE, MISSING, format_stat, percent_label, pruned_runs

FIRST_METRICS = ("clean_acc", "pgd_acc", "autoattack_acc")
WORST = "worst_acc"
NO_FLAGS = "none"


def metric_columns(records: list[dict]) -> list[str]:
    """The attack cascade's metrics of any record: clean, PGD and AutoAttack first, other attacks by name, the
    worst case last. Records from before certifiers existed count every metric as an attack's."""
    found = {name for r in records for name in _attack_metrics(r)}
    rest = sorted(found - set(FIRST_METRICS) - {WORST})
    return [m for m in FIRST_METRICS if m in found] + rest + ([WORST] if WORST in found else [])


def _attack_metrics(record: dict) -> list[str]:
    listed = (record.get("evaluation") or {}).get("attack_metrics")
    return listed if listed is not None else list(record.get("metrics") or {})


def certified_columns(records: list[dict]) -> list[str]:
    """Certifiers' metrics of any record (those outside the attack cascade): PREDICT's accuracy, certified
    accuracy by radius, then the average certified radius."""
    found = {name for r in records for name in (r.get("metrics") or {}) if name not in _attack_metrics(r)}
    radii = sorted((m for m in found if _radius(m) is not None), key=_radius)
    return sorted(m for m in found if m.endswith("_predict_acc")) + radii + sorted(m for m in found
                                                                                 if m.endswith("_acr"))


def _radius(metric: str) -> float | None:
    """smoothing_r0.25_acc -> 0.25."""
    match = re.fullmatch(r".+_r([0-9.]+)_acc", metric)
    return float(match.group(1)) if match else None


def certified_table(group: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """One row per method and sparsity: clean accuracy of the base model, then each certified metric (mean ± std
    over done seeds; accuracies in %, average radii as numbers)."""
    done = group[group["status"] == "done"]
    rows = []
    for label, sparsity, runs in method_rows(done):
        rows.append([label, percent_label(sparsity), format_stat(runs["clean_acc"]),
                     *(_format_radius(runs[m]) if m.endswith("_acr") else format_stat(runs[m]) for m in columns)])
    return pd.DataFrame(rows, columns=["method", "sparsity", "clean", *map(_certified_label, columns)]
                        ).set_index("method")


def _certified_label(metric: str) -> str:
    if metric.endswith("_predict_acc"):
        return "smoothed (PREDICT)"
    if metric.endswith("_acr"):
        return "ACR"
    return f"r = {_radius(metric):g}"


def _format_radius(values: pd.Series) -> str:
    values = values.dropna().astype(float)
    if values.empty:
        return MISSING
    return f"{values.iloc[0]:.3f}" if len(values) == 1 else f"{values.mean():.3f} ± {values.std(ddof=1):.3f}"


def certified_caption(description: str) -> str:
    return ("certified accuracy (%) of the smoothed classifier at each l2 radius (correct and not abstained, "
            f"radius at least r), PREDICT's accuracy and the average certified radius (ACR) — {description}")


def method_rows(done: pd.DataFrame) -> Iterator[tuple[str, float, pd.DataFrame]]:
    """(label, sparsity in percent, runs): the dense model first, then each method and sparsity."""
    dense = done[done["method"] == DENSE]
    if len(dense):
        yield DENSE, 0.0, dense
    for (label, sparsity), runs in pruned_runs(done).groupby(["label", "sparsity_pct"], sort=True):
        yield str(label), sparsity, runs


def certified_png(title: str, group: pd.DataFrame, columns: list[str], sparsity_pct: float,
                  radius: float) -> bytes:
    """Two panels: certified accuracy against radius at one sparsity, and against sparsity at one radius."""
    radii = [c for c in columns if _radius(c) is not None]
    done = group[group["status"] == "done"]
    fig = Figure(figsize=(11.0, 4.4), layout="constrained")
    by_radius, by_sparsity = fig.subplots(1, 2)
    rows = list(method_rows(done))
    colors = {label: f"C{i % 10}" for i, label in enumerate(sorted({r[0] for r in rows} - {DENSE}))}
    for label, sparsity, runs in rows:
        style = {"color": colors.get(label, "black"), "marker": "o", "linestyle": ":" if label == DENSE else "-"}
        if label == DENSE or sparsity == sparsity_pct:
            by_radius.plot([_radius(c) for c in radii], [runs[c].mean() * 100 for c in radii], label=label,
                           **style)
    metric = min(radii, key=lambda c: abs(_radius(c) - radius))
    stats = pruned_runs(done).groupby(["label", "sparsity_pct"])[metric].mean().reset_index()
    sparsities = sorted(stats["sparsity_pct"].unique())
    for label, points in stats.groupby("label", sort=True):
        by_sparsity.plot([sparsities.index(s) for s in points["sparsity_pct"]], points[metric] * 100, marker="o",
                         color=colors[label], label=str(label))
    dense_value = done[done["method"] == DENSE][metric].mean() * 100
    if pd.notna(dense_value):
        by_sparsity.axhline(dense_value, color="black", linestyle=":", label="dense")
    by_radius.set(xlabel="l2 radius", ylabel="certified accuracy (%)",
                  title=f"{title} · {percent_label(sparsity_pct)} sparsity")
    by_sparsity.set(xlabel="target sparsity", ylabel="certified accuracy (%)",
                    title=f"{title} · radius {_radius(metric):g}")
    by_sparsity.set_xticks(range(len(sparsities)), [percent_label(s) for s in sparsities])
    for ax in (by_radius, by_sparsity):
        ax.set_ylim(bottom=0)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize="small")
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=120)
    return buffer.getvalue()


def flags_of(record: dict) -> str | None:
    """Comma-joined names of the flagged checks, "none" if every check passed, None if none ran."""
    checks = record.get("checks")
    if not checks:
        return None
    return ", ".join(c["name"] for c in checks if c["flagged"]) or NO_FLAGS


def attack_table(group: pd.DataFrame, metrics: list[str]) -> pd.DataFrame:
    """One row per method and sparsity (the dense model first): each metric's mean ± std over done seeds, and
    the checks flagged in any seed."""
    done = group[group["status"] == "done"]
    rows = [_attack_row(label, sparsity, runs, metrics) for label, sparsity, runs in method_rows(done)]
    columns = ["method", "sparsity", *(m.removesuffix("_acc") for m in metrics), "flags"]
    return pd.DataFrame(rows, columns=columns).set_index("method")


def _attack_row(label: str, sparsity_pct: float, runs: pd.DataFrame, metrics: list[str]) -> list[str]:
    flagged = sorted({name for cell in runs["flags"].dropna() for name in cell.split(", ") if name != NO_FLAGS})
    any_checks = runs["flags"].notna().any()
    flags = ", ".join(flagged) if flagged else (NO_FLAGS if any_checks else MISSING)
    return [label, percent_label(sparsity_pct), *(format_stat(runs[m]) for m in metrics), flags]


def attack_caption() -> str:
    return ("accuracy (%) under each evaluator, in the order they ran: each attack attacks only the examples every "
            "attack before it left standing, so its column is the robust accuracy under it and all before it, and "
            "`worst` is the worst case over attacks; `flags` are the self-checks that fired (see below)")


def flag_lines(group: pd.DataFrame, records: list[dict]) -> list[str]:
    """One line per fired check of a done run: where, which check, and its detail."""
    lines = []
    for index, row in group[group["status"] == "done"].iterrows():
        for c in records[index].get("checks") or []:
            if c["flagged"]:
                where = f"{row['method']} {percent_label(row['sparsity'] * 100)} seed {row['seed']}"
                lines.append(f"- {where}: **{c['name']}**: {c['detail']}")
    return lines


# ---------------------------------------------------------------------------- eps sweep


def sweep_frame(group: pd.DataFrame, records: list[dict]) -> pd.DataFrame:
    """Long form of the done runs' eps sweeps: label, sparsity_pct, multiple, eps, acc (one row per point)."""
    done = group[group["status"] == "done"]
    labels = pruned_runs(done)["label"]
    rows = []
    for index, row in done.iterrows():
        label = DENSE if row["method"] == DENSE else labels[index]
        for point in (records[index].get("evaluation") or {}).get("eps_sweep") or []:
            rows.append({"label": label, "sparsity_pct": round(row["sparsity"] * 100, 6), **point})
    return pd.DataFrame(rows, columns=["label", "sparsity_pct", "multiple", "eps", "acc"])


def sweep_sparsity(sweeps: pd.DataFrame, chosen: float | None) -> float | None:
    """The sparsity (percent) to plot: the chosen one, else the highest pruned one with a sweep."""
    pruned = sweeps[sweeps["label"] != DENSE]
    if chosen is not None:
        return round(chosen * 100, 6)
    return float(pruned["sparsity_pct"].max()) if len(pruned) else None


def sweep_table(sweeps: pd.DataFrame, sparsity_pct: float) -> pd.DataFrame:
    """Methods (dense first) x eps: PGD robust accuracy, mean ± std over seeds, at one sparsity."""
    chosen = sweeps[(sweeps["label"] == DENSE) | (sweeps["sparsity_pct"] == sparsity_pct)]
    table = chosen.groupby(["label", "eps"])["acc"].apply(format_stat).unstack("eps")
    table.columns = [f"{eps:.4g}" for eps in table.columns]
    order = [DENSE] * (DENSE in table.index) + sorted(set(table.index) - {DENSE})
    table = table.loc[order].fillna(MISSING)
    table.index.name = "method"
    return table


def sweep_png(title: str, sweeps: pd.DataFrame, sparsity_pct: float) -> bytes:
    """PGD robust accuracy against eps, one line per method at one sparsity, the dense model dotted."""
    fig = Figure(figsize=(7.0, 4.4), layout="constrained")
    ax = fig.add_subplot()
    chosen = sweeps[(sweeps["label"] == DENSE) | (sweeps["sparsity_pct"] == sparsity_pct)]
    for index, (label, points) in enumerate(chosen.groupby("label", sort=True)):
        stats = (points.groupby("eps")["acc"].agg(["mean", "std"]) * 100).reset_index()
        ax.errorbar(stats["eps"], stats["mean"], yerr=stats["std"].fillna(0.0), marker="o", capsize=3,
                    linestyle=":" if label == DENSE else "-", color="black" if label == DENSE else f"C{index % 10}",
                    label=str(label))
    ax.set_xlabel("eps (pixel units)")
    ax.set_ylabel("PGD robust accuracy (%)")
    ax.set_title(f"{title} · {percent_label(sparsity_pct)} sparsity")
    ax.set_ylim(bottom=0)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="small", loc="upper right")
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=120)
    return buffer.getvalue()


def sweep_caption(sparsity_pct: float) -> str:
    return (f"PGD robust accuracy (%) against eps at {percent_label(sparsity_pct)} sparsity; every point attacks all "
            "correctly classified examples, mean ± std over seeds")


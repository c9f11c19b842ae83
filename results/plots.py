"""Every plot of the report, drawn by one function: panels of accuracy lines (mean ± sample std over seeds, in
percent) against one x, with the dense model's value as a dotted reference line.

Figures are bare :class:`Figure` objects (Agg canvas, no pyplot state), so plotting is safe in headless runs and
does not touch the global backend. Sparsities are placed categorically (equal spacing), so 90/95/99/99.9% stay
readable. A method keeps its colour across the panels of a figure.
"""

from __future__ import annotations

import dataclasses
import io
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from results.attack_tables import sweep_points
from results.report_format import DDOF, DENSE, method_rows, percent_label, pruned_runs


@dataclass(frozen=True)
class Line:
    """One line: points with columns x and value (a fraction), one row per run; drawn at the mean per x."""

    label: str
    points: pd.DataFrame
    color: str
    linestyle: str = "-"


@dataclass(frozen=True)
class Reference:
    """A horizontal dotted line at the mean of values (fractions), e.g. the dense model's accuracy."""

    label: str
    values: pd.Series
    color: str = "black"


@dataclass(frozen=True)
class Panel:
    title: str
    xlabel: str
    lines: list[Line]
    references: list[Reference] = field(default_factory=list)
    ylabel: str = "accuracy (%)"
    ticks: list[float] | None = None  # categorical x: sparsities in percent, placed at their index
    from_zero: bool = True  # the y axis starts at 0
    legend: dict[str, Any] = field(default_factory=dict)


def render(panels: Sequence[Panel], width: float, height: float = 4.4, title: str | None = None) -> bytes:
    """The panels side by side, as PNG bytes."""
    fig = Figure(figsize=(width, height), layout="constrained")
    for ax, panel in zip(fig.subplots(1, len(panels), squeeze=False)[0], panels, strict=True):
        _draw(ax, panel)
    if title:
        fig.suptitle(title)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=120)
    return buffer.getvalue()


def _draw(ax: Axes, panel: Panel) -> None:
    for line in panel.lines:
        values = line.points.groupby("x")["value"]
        stats = (pd.DataFrame({"mean": values.mean(), "std": values.std(ddof=DDOF)}) * 100).dropna(subset=["mean"])
        if stats.empty:
            continue
        xs = [panel.ticks.index(x) for x in stats.index] if panel.ticks is not None else list(stats.index)
        ax.errorbar(xs, stats["mean"], yerr=stats["std"].fillna(0.0), color=line.color, linestyle=line.linestyle,
                    marker="o", capsize=3, label=line.label)
    for reference in panel.references:
        value = reference.values.astype(float).mean() * 100
        if pd.notna(value):
            ax.axhline(value, color=reference.color, linestyle=":", label=reference.label)
    if panel.ticks is not None:
        ax.set_xticks(range(len(panel.ticks)), [percent_label(s) for s in panel.ticks])
    ax.set(xlabel=panel.xlabel, ylabel=panel.ylabel, title=panel.title)
    if panel.from_zero:
        ax.set_ylim(bottom=0)
    ax.grid(True, alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize="small", **panel.legend)
    else:
        ax.text(0.5, 0.5, "no completed runs", ha="center", va="center", transform=ax.transAxes)


def _points(runs: pd.DataFrame, x: str, value: str) -> pd.DataFrame:
    return pd.DataFrame({"x": runs[x], "value": runs[value]})


def _colors(labels: pd.Series) -> dict[str, str]:
    return {label: f"C{i % 10}" for i, label in enumerate(sorted(labels.unique()))}


def _by_sparsity(done: pd.DataFrame, metrics: Sequence[tuple[str, str, str]], title: str) -> Panel:
    """One line per method and metric against target sparsity, each metric's dense value as a reference.
    metrics: (column, line style, label suffix); references are black, then grey."""
    pruned = pruned_runs(done)
    colors = _colors(pruned["label"])
    lines = [Line(f"{label}{suffix}", _points(runs, "sparsity_pct", column), colors[label], style)
             for label, runs in pruned.groupby("label", sort=True) for column, style, suffix in metrics]
    dense = done[done["method"] == DENSE]
    references = [Reference(f"{DENSE}{suffix}", dense[column], color)
                  for (column, _, suffix), color in zip(metrics, ("black", "grey"), strict=False)]
    return Panel(title, "target sparsity", lines, references, ticks=sorted(pruned["sparsity_pct"].unique()))


def comparison_png(title: str, group: pd.DataFrame) -> bytes:
    """Accuracy vs. target sparsity: solid = robust, dashed = clean, dotted = dense reference."""
    done = group[group["status"] == "done"]
    panel = _by_sparsity(done, [("robust_acc", "-", " robust"), ("clean_acc", "--", " clean")], title)
    legend = {"loc": "upper left", "bbox_to_anchor": (1.01, 1.0)}
    return render([dataclasses.replace(panel, from_zero=False, legend=legend)], width=8.0)


def verified_png(title: str, group: pd.DataFrame) -> bytes:
    """Clean, PGD and verified accuracy against sparsity, one panel each."""
    shown = [("clean_acc", "clean"), ("pgd_acc", "PGD"), ("verified_acc", "verified (best certifier)")]
    done = group[group["status"] == "done"]
    panels = [_by_sparsity(done, [(column, "-", "")], name) for column, name in shown if column in group]
    return render(panels, width=4.0 * len(panels), height=4.2, title=title)


def certified_png(title: str, group: pd.DataFrame, radii: pd.DataFrame, sparsity_pct: float,
                  radius: float) -> bytes:
    """Certified accuracy against radius at one sparsity, and against sparsity at the radius closest to `radius`.
    radii: the certified-accuracy metrics (columns `column` and `radius`)."""
    done = group[group["status"] == "done"]
    colors = _colors(pruned_runs(done)["label"])
    lines = []
    for label, sparsity, runs in method_rows(done):
        if label == DENSE or sparsity == sparsity_pct:
            points = pd.concat([pd.DataFrame({"x": r.radius, "value": runs[r.column]}) for r in radii.itertuples()])
            lines.append(Line(label, points, colors.get(label, "black"), ":" if label == DENSE else "-"))
    closest = radii.iloc[(radii["radius"] - radius).abs().argmin()]
    by_radius = Panel(f"{title} · {percent_label(sparsity_pct)} sparsity", "l2 radius", lines,
                      ylabel="certified accuracy (%)")
    by_sparsity = _by_sparsity(done, [(closest["column"], "-", "")], f"{title} · radius {closest['radius']:g}")
    return render([by_radius, dataclasses.replace(by_sparsity, ylabel="certified accuracy (%)")], width=11.0)


def sweep_png(title: str, sweeps: pd.DataFrame, sparsity_pct: float) -> bytes:
    """PGD robust accuracy against eps, one line per method at one sparsity, the dense model dotted."""
    chosen = sweep_points(sweeps, sparsity_pct)
    colors = _colors(chosen.loc[chosen["label"] != DENSE, "label"])
    lines = [Line(str(label), _points(points, "eps", "acc"), colors.get(label, "black"),
                  ":" if label == DENSE else "-") for label, points in chosen.groupby("label", sort=True)]
    panel = Panel(f"{title} · {percent_label(sparsity_pct)} sparsity", "eps (pixel units)", lines,
                  ylabel="PGD robust accuracy (%)", legend={"loc": "upper right"})
    return render([panel], width=7.0)


"""Every plot of the report, drawn by one function (`render`) from panels of long-form points.

A panel's points are one row per run (or per sweep point): x, a value (a fraction), the seed, the line's label and
style. `line` panels draw each label's mean over seeds with a band of ± one sample std (seaborn, ddof=1, as the
tables) and every seed as a small point; `scatter` panels (accuracy against compute) draw each seed and the
mean ± std in both coordinates per label and sparsity. Horizontal references (the dense model, dotted) and
published numbers (hollow markers in the method's colour, see `results.published`) are drawn on top.

Figures are bare :class:`Figure` objects (Agg canvas, no pyplot state), so plotting is safe in headless runs and
does not touch the global backend. Sparsities are placed categorically (equal spacing), so 90/95/99/99.9% stay
readable. A method keeps its colour in every figure of a table.
"""

from __future__ import annotations

import dataclasses
import io
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
import seaborn as sns
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from results.attack_tables import sweep_points
from results.report_format import DDOF, DENSE, method_rows, percent_label, pruned_runs

POINT_COLUMNS = ["x", "value", "seed", "label", "style"]
DASHES = {"robust": "", "clean": (4, 2), "": ""}
PUBLISHED_MARKERS = ("D", "s", "^", "v")  # one per citation


@dataclass(frozen=True)
class Reference:
    """A horizontal dotted line at the mean of values (fractions), e.g. the dense model's accuracy."""

    label: str
    values: pd.Series
    color: str = "black"
    linestyle: str = ":"


@dataclass(frozen=True)
class Panel:
    title: str
    xlabel: str
    points: pd.DataFrame  # POINT_COLUMNS; x in data units, or a sparsity in percent where `ticks` is set
    colors: dict[str, Any]
    references: list[Reference] = field(default_factory=list)
    published: pd.DataFrame | None = None  # columns x, value_pct, label, citation (see results.published)
    ylabel: str = "accuracy (%)"
    ticks: list[float] | None = None  # categorical x: sparsities in percent, placed at their index
    kind: str = "line"  # or "scatter"
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
    fig.savefig(buffer, format="png", dpi=110)
    return buffer.getvalue()


def _draw(ax: Axes, panel: Panel) -> None:
    points = panel.points.dropna(subset=["x", "value"]).assign(pct=lambda p: p["value"].astype(float) * 100)
    if panel.ticks is not None:
        points = points.assign(x=points["x"].map(panel.ticks.index))
    if len(points):
        (_lines if panel.kind == "line" else _scatter)(ax, points, panel.colors)
    for reference in panel.references:
        value = reference.values.astype(float).mean() * 100
        if pd.notna(value):
            ax.axhline(value, color=reference.color, linestyle=reference.linestyle, label=reference.label)
    if panel.published is not None and len(panel.published):
        _published(ax, panel)
    if panel.ticks is not None:
        ax.set_xticks(range(len(panel.ticks)), [percent_label(s) for s in panel.ticks])
    ax.set(xlabel=panel.xlabel, ylabel=panel.ylabel, title=panel.title)
    if panel.from_zero:
        ax.set_ylim(bottom=0)
    ax.grid(True, alpha=0.3)
    handles, labels = ax.get_legend_handles_labels()
    if handles:  # seaborn's group titles ("label", "style") are not lines
        shown = [(h, t) for h, t in zip(handles, labels, strict=True) if t not in ("label", "style")]
        ax.legend(*zip(*shown, strict=True), fontsize="small", **panel.legend)
    else:
        ax.text(0.5, 0.5, "no completed runs", ha="center", va="center", transform=ax.transAxes)


def _lines(ax: Axes, points: pd.DataFrame, colors: dict[str, Any]) -> None:
    """Mean per label, style and x, a band of ± one sample std over seeds, and each seed as a point."""
    styles = sorted(points["style"].unique())
    sns.lineplot(data=points, x="x", y="pct", hue="label", style="style" if len(styles) > 1 else None,
                 dashes={s: DASHES.get(s, "") for s in styles} if len(styles) > 1 else True, palette=colors,
                 errorbar=("sd", 1), err_style="band", marker="o", ax=ax, legend="auto")
    sns.scatterplot(data=points, x="x", y="pct", hue="label", palette=colors, s=12, alpha=0.45, linewidth=0,
                    legend=False, ax=ax)


def _scatter(ax: Axes, points: pd.DataFrame, colors: dict[str, Any]) -> None:
    """Each seed as a small point, each label and style (sparsity) as its mean ± std in x and y."""
    sns.scatterplot(data=points, x="x", y="pct", hue="label", style="style", palette=colors, s=16, alpha=0.45,
                    legend=False, ax=ax)
    for (label, style), runs in points.groupby(["label", "style"], sort=True):
        ax.errorbar(runs["x"].mean(), runs["pct"].mean(), xerr=runs["x"].std(ddof=DDOF) if len(runs) > 1 else None,
                    yerr=runs["pct"].std(ddof=DDOF) if len(runs) > 1 else None, color=colors[label], marker="o",
                    capsize=3, markersize=6, linestyle="none")
        ax.annotate(style, (runs["x"].mean(), runs["pct"].mean()), textcoords="offset points", xytext=(5, 4),
                    fontsize="x-small", color=colors[label])
    for label in sorted(points["label"].unique()):
        ax.plot([], [], color=colors[label], marker="o", linestyle="none", label=label)


def _published(ax: Axes, panel: Panel) -> None:
    """Hollow markers at the published values; a published dense value as a thin dash-dot line."""
    for marker, (citation, rows) in zip(PUBLISHED_MARKERS, panel.published.groupby("citation", sort=True),
                                        strict=False):
        dense = rows[rows["label"] == DENSE]
        for value in dense["value_pct"]:
            ax.axhline(value, color="black", linestyle="-.", linewidth=0.8, alpha=0.6)
        pruned = rows[rows["label"] != DENSE]
        xs = pruned["x"].map(panel.ticks.index) if panel.ticks is not None else pruned["x"]
        ax.scatter(xs, pruned["value_pct"], marker=marker, s=70, facecolors="none", linewidths=1.5,
                   edgecolors=[panel.colors.get(label, "black") for label in pruned["label"]],
                   label=f"published: {citation}" + (" (dense: dash-dot)" if len(dense) else ""))


# --- the report's figures ----------------------------------------------------------------------------------------


def method_colors(labels: Sequence[str]) -> dict[str, Any]:
    """A colour per row label (sorted, so every figure of a table agrees); the dense model is black."""
    names = sorted(set(labels) - {DENSE})
    return {**dict(zip(names, sns.color_palette("tab10", max(len(names), 1)), strict=False)), DENSE: "black"}


def _points(runs: pd.DataFrame, x: pd.Series | float, value: str, label: pd.Series | str, style: str) -> pd.DataFrame:
    return pd.DataFrame({"x": x, "value": runs[value], "seed": runs["seed"], "label": label, "style": style},
                        index=runs.index, columns=POINT_COLUMNS)


def _by_sparsity(done: pd.DataFrame, metrics: Sequence[tuple[str, str]], title: str,
                 published: pd.DataFrame | None = None) -> Panel:
    """One line per method and metric against target sparsity, each metric's dense value as a reference.
    metrics: (column, style: "robust", "clean" or ""); published: rows of `results.published.match` to overlay."""
    pruned = pruned_runs(done)
    frames = [_points(pruned, pruned["sparsity_pct"], column, pruned["label"], style)
              for column, style in metrics if column in pruned]
    dense = done[done["method"] == DENSE]
    references = [Reference(f"{DENSE} {style}".strip(), dense[column], color)
                  for (column, style), color in zip(metrics, ("black", "grey"), strict=False) if column in dense]
    ticks = sorted(pruned["sparsity_pct"].unique())
    return Panel(title, "target sparsity", pd.concat(frames) if frames else pd.DataFrame(columns=POINT_COLUMNS),
                 method_colors(pruned["label"]), references, _overlay(published, pruned, metrics), ticks=ticks)


def _overlay(published: pd.DataFrame | None, pruned: pd.DataFrame, metrics: Sequence[tuple[str, str]]) \
        -> pd.DataFrame | None:
    """The published rows of the plotted columns at the plotted sparsities (and the dense model's), labelled like
    the table's rows."""
    if published is None:
        return None
    rows = published[published["column"].isin([column for column, _ in metrics])]
    labels = dict(zip(pruned["method"], pruned["label"], strict=False)) | {DENSE: DENSE}
    x = (rows["sparsity"] * 100).round(6)
    shown = rows["method"].isin(labels) & (x.isin(pruned["sparsity_pct"]) | (rows["method"] == DENSE))
    return pd.DataFrame({"x": x[shown], "value_pct": rows.loc[shown, "value_pct"],
                         "label": rows.loc[shown, "method"].map(labels), "citation": rows.loc[shown, "citation"]})


def comparison_png(title: str, group: pd.DataFrame, published: pd.DataFrame | None = None) -> bytes:
    """Accuracy vs. target sparsity: solid = robust, dashed = clean, dotted = dense, hollow = published."""
    done = group[group["status"] == "done"]
    panel = _by_sparsity(done, [("robust_acc", "robust"), ("clean_acc", "clean")], title, published)
    legend = {"loc": "upper left", "bbox_to_anchor": (1.01, 1.0)}
    return render([dataclasses.replace(panel, from_zero=False, legend=legend)], width=8.5)


def verified_png(title: str, group: pd.DataFrame) -> bytes:
    """Clean, PGD and verified accuracy against sparsity, one panel each."""
    shown = [("clean_acc", "clean"), ("pgd_acc", "PGD"), ("verified_acc", "verified (best certifier)")]
    done = group[group["status"] == "done"]
    panels = [_by_sparsity(done, [(column, "")], name) for column, name in shown if column in group]
    return render(panels, width=4.0 * len(panels), height=4.2, title=title)


def certified_png(title: str, group: pd.DataFrame, radii: pd.DataFrame, sparsity_pct: float, radius: float,
                  published: pd.DataFrame | None = None) -> bytes:
    """Certified accuracy against radius at one sparsity, and against sparsity at the radius closest to `radius`.
    radii: the certified-accuracy metrics (columns `column` and `radius`)."""
    done = group[group["status"] == "done"]
    frames = [_points(runs, r.radius, r.column, label, "")
              for label, sparsity, runs in method_rows(done) if label == DENSE or sparsity == sparsity_pct
              for r in radii.itertuples()]
    colors = method_colors(pruned_runs(done)["label"])
    by_radius = Panel(f"{title} · {percent_label(sparsity_pct)} sparsity", "l2 radius",
                      pd.concat(frames) if frames else pd.DataFrame(columns=POINT_COLUMNS), colors,
                      ylabel="certified accuracy (%)")
    closest = radii.iloc[(radii["radius"] - radius).abs().argmin()]
    by_sparsity = _by_sparsity(done, [(closest["column"], "")], f"{title} · radius {closest['radius']:g}", published)
    return render([by_radius, dataclasses.replace(by_sparsity, ylabel="certified accuracy (%)")], width=11.0)


def sweep_png(title: str, sweeps: pd.DataFrame, sparsity_pct: float) -> bytes:
    """PGD robust accuracy against eps, one line per method at one sparsity (the dense model in black)."""
    chosen = sweep_points(sweeps, sparsity_pct)
    points = pd.DataFrame({"x": chosen["eps"], "value": chosen["acc"], "seed": chosen["seed"],
                           "label": chosen["label"], "style": ""}, columns=POINT_COLUMNS)
    panel = Panel(f"{title} · {percent_label(sparsity_pct)} sparsity", "eps (pixel units)", points,
                  method_colors(chosen["label"]), ylabel="PGD robust accuracy (%)", legend={"loc": "upper right"})
    return render([panel], width=7.0)


def compute_png(title: str, group: pd.DataFrame) -> bytes:
    """Robust and clean accuracy against what each run spent beyond the shared pretraining (forward + backward
    passes), one point per seed and the mean ± std per method and sparsity, so methods compare at equal cost."""
    pruned = pruned_runs(group[(group["status"] == "done") & group["cost_passes"].notna()])
    colors = method_colors(pruned["label"])
    style = pruned["sparsity_pct"].map(percent_label)
    panels = [Panel(f"{title} · {name}", "forward + backward passes beyond the shared pretraining",
                    pd.DataFrame({"x": pruned["cost_passes"], "value": pruned[column], "seed": pruned["seed"],
                                  "label": pruned["label"], "style": style}, columns=POINT_COLUMNS),
                    colors, kind="scatter", from_zero=False, ylabel=f"{name} accuracy (%)")
              for column, name in (("robust_acc", "robust"), ("clean_acc", "clean"))]
    return render(panels, width=11.0)

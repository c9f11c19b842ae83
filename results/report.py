"""Comparison tables, plots and files for a set of benchmark runs.

Conventions used throughout:

* ``sparsity`` is a fraction (0.9 = 90% of weights removed); columns are labelled in percent.
* Accuracies are fractions in the records and shown in percent with one decimal.
* Aggregation is over seeds: the mean and the *sample* standard deviation (``ddof=1``), since the
  seeds are a small sample of possible training runs. With one seed the std is omitted.
* Only runs with ``status == "done"`` contribute numbers. A cell without a done run shows
  ``"failed"`` if one of its runs failed, otherwise ``"–"`` (nothing run yet, or still running).
  A cell where some seeds are done and others failed shows the done seeds; the failures are listed
  separately by :func:`write_report`.
"""

from __future__ import annotations

import io
import re
from collections.abc import Hashable, Iterable
from pathlib import Path

import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from benchmark.core.io import atomic_write_bytes
from results import evaluation_report as ev
from results import verification_report as verified
from results.report_format import DDOF, DENSE, MISSING, format_stat, percent_label, pruned_runs

COLUMNS = [
    "dataset",
    "arch",
    "objective",
    "pretrain_objective",
    "method",
    "scope",
    "sparsity",
    "sparsity_actual",
    "seed",
    "preset",
    "clean_acc",
    "pgd_acc",
    "robust_acc",
    "flags",
    "status",
    "error",
    "eval_desc",
    "cost_epochs",
    "cost_passes",
    "cost_seconds",
]
KEY_COLUMNS = ["dataset", "arch", "objective"]
FLOAT_COLUMNS = ["sparsity", "sparsity_actual", "cost_epochs", "cost_passes", "cost_seconds"]
METRIC_COLUMNS = ["clean_acc", "robust_acc"]  # the comparison table's two numbers
DENSE_COLUMN = "0%"
CERT_RADIUS = 0.435  # the l2 radius read as HYDRA's vra-s (see ../shared/reference/hydra_protocol.md)
FAILED = "failed"
ERROR_CHARS = 200

TableKey = tuple[str, str, str]


# ---------------------------------------------------------------------------- long form


def records_frame(records: list[dict]) -> pd.DataFrame:
    """One row per record, in order, with the :data:`COLUMNS` and every metric any record has; extra keys
    are dropped.

    Metrics fall back to the record's ``metrics`` dict when missing at top level. ``robust_acc`` is the
    worst case over attacks (``worst_acc``), or PGD's accuracy for records that have no worst case.
    ``flags`` names the self-checks that fired. Missing values become NaN/None; ``seed`` is a nullable
    integer so it stays an int in CSV.
    """
    found = ev.metric_columns(records) + ev.certified_columns(records)
    found += sorted({m for r in records for m in (r.get("metrics") or {})} - set(found))
    metrics = [m for m in found if m not in COLUMNS]
    frame = pd.DataFrame([_record_row(r, metrics) for r in records], columns=[*COLUMNS, *metrics])
    for column in [*FLOAT_COLUMNS, "clean_acc", "pgd_acc", "robust_acc", *metrics]:
        frame[column] = pd.to_numeric(frame[column], errors="coerce").astype("float64")
    frame["seed"] = pd.to_numeric(frame["seed"], errors="coerce").astype("Int64")
    return frame


def _record_row(record: dict, metric_names: list[str]) -> dict:
    row = {column: record.get(column) for column in [*COLUMNS, *metric_names]}
    metrics = record.get("metrics") or {}
    for column in ["clean_acc", "pgd_acc", *metric_names]:
        if row[column] is None:
            row[column] = metrics.get(column)
    row["robust_acc"] = metrics.get("worst_acc", row["pgd_acc"])
    row["flags"] = ev.flags_of(record)
    row.update(method_cost(record))
    return row


def method_cost(record: dict) -> dict[str, float | None]:
    """What a run cost beyond the shared pretrained model: its pruner's phases plus finetune.

    For the dense model, the pretraining itself. Passes are batched forward plus backward passes through
    the model, attack steps included.
    """
    cost = record.get("cost") or {}
    if record.get("method") == DENSE:
        phases = [cost.get("pretrain")]
    else:
        phases = [*(cost.get("pruner") or []), cost.get("finetune")]
    phases = [p for p in phases if p]
    if not phases:
        return {"cost_epochs": None, "cost_passes": None, "cost_seconds": None}
    return {
        "cost_epochs": float(sum(p["epochs"] for p in phases)),
        "cost_passes": float(sum(p["forward_passes"] + p["backward_passes"] for p in phases)),
        "cost_seconds": float(sum(p["seconds"] for p in phases)),
    }


# ---------------------------------------------------------------------------- tables


def comparison_tables(frame: pd.DataFrame) -> dict[TableKey, pd.DataFrame]:
    """One table of formatted cells per (dataset, arch, objective), keys sorted."""
    return {key: _comparison_table(group) for key, group in _groups(frame)}


def _groups(frame: pd.DataFrame) -> Iterable[tuple[TableKey, pd.DataFrame]]:
    """Split the long form by table key; missing key parts become "unknown" rather than vanish."""
    keys = frame[KEY_COLUMNS].astype(object).where(frame[KEY_COLUMNS].notna(), "unknown").astype(str)
    other_pretrain = frame["pretrain_objective"].notna() & (frame["pretrain_objective"] != frame["objective"])
    keys.loc[other_pretrain, "objective"] = (keys["objective"] + " on " + frame["pretrain_objective"].astype(str)
                                             + "-pretrained")
    for key, group in frame.groupby([keys[c] for c in KEY_COLUMNS], sort=True):
        yield tuple(key), group  # type: ignore[misc]


def _comparison_table(group: pd.DataFrame) -> pd.DataFrame:
    pruned = pruned_runs(group)
    sparsities = sorted(pruned["sparsity_pct"].dropna().unique())
    columns = [DENSE_COLUMN, *(percent_label(s) for s in sparsities)]
    dense_cell = _format_cell(group[group["method"] == DENSE])
    rows = {}
    for label, runs in pruned.groupby("label", sort=True):
        cells = [_format_cell(runs[runs["sparsity_pct"] == s]) for s in sparsities]
        rows[label] = [dense_cell, *cells]
    table = pd.DataFrame.from_dict(rows, orient="index", columns=columns, dtype=object)
    table.index.name = "method"
    table.columns.name = "sparsity"
    return table


def _format_cell(runs: pd.DataFrame) -> str:
    done = runs[runs["status"] == "done"]
    if done.empty:
        return FAILED if (runs["status"] == "failed").any() else MISSING
    return f"{format_stat(done['clean_acc'])} / {format_stat(done['robust_acc'])}"


# ---------------------------------------------------------------------------- caption


def table_caption(group: pd.DataFrame) -> str:
    """Caption for one table key's runs: the robust evaluation and the number of seeds."""
    done = group[group["status"] == "done"]
    return (
        f"clean / robust accuracy (%) — robust = {_robust_description(done)}; "
        f"mean ± std over {_seed_description(done)}; robust is the worst case over the attacks"
    )


def _robust_description(done: pd.DataFrame) -> str:
    if "eval_desc" not in done:
        return "PGD accuracy"
    descriptions = sorted(done["eval_desc"].dropna().astype(str).unique())
    if len(descriptions) == 1:
        return descriptions[0]
    if not descriptions:
        return "PGD accuracy"
    return "PGD accuracy, mixed settings: " + "; ".join(descriptions)


def _seed_description(done: pd.DataFrame) -> str:
    """"2 seeds" when every cell has the same count, else a range such as "1–3 seeds"."""
    if done.empty:
        return "0 seeds"
    cells = done.groupby(["method", "scope", "sparsity"], dropna=False)["seed"].nunique(dropna=False)
    low, high = int(cells.min()), int(cells.max())
    if low == high:
        return f"{low} seed" if low == 1 else f"{low} seeds"
    return f"{low}–{high} seeds"


# ---------------------------------------------------------------------------- markdown / latex


def render_markdown(key: TableKey, table: pd.DataFrame, caption: str, heading: str = "###") -> str:
    """Heading, caption and a GitHub-flavoured markdown table (first column = row labels)."""
    header = [table.index.name or "method", *map(str, table.columns)]
    lines = [
        f"{heading} {' · '.join(map(str, key))}",
        "",
        caption,
        "",
        _markdown_row(header),
        _markdown_row([":---", *[":---:"] * len(table.columns)]),
    ]
    lines += [_markdown_row(row) for row in table.itertuples(index=True, name=None)]
    return "\n".join(lines)


def _markdown_row(cells: Iterable[Hashable]) -> str:
    return "| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |"


def render_latex(table: pd.DataFrame) -> str:
    """A booktabs ``tabular`` with all text LaTeX-escaped; ± and – become ``$\\pm$`` and ``--``."""
    flat = table.reset_index()
    flat.columns.name = None
    styler = flat.style.hide(axis="index").format(escape="latex").format_index(escape="latex", axis=1)
    latex = styler.to_latex(column_format="l" + "c" * len(table.columns), hrules=True)
    return latex.replace("±", r"$\pm$").replace("–", "--")


# ---------------------------------------------------------------------------- plot


def plot_png(key: TableKey, group: pd.DataFrame) -> bytes:
    """Accuracy vs. target sparsity: solid = robust, dashed = clean, dotted = dense reference.

    Sparsities are placed categorically (equal spacing) so 90/95/99/99.9% stay readable.
    Error bars are the sample std over seeds. Uses a bare :class:`Figure` (Agg canvas, no pyplot
    state), so it is safe in headless runs and does not touch the global backend.
    """
    fig = Figure(figsize=(8.0, 4.4), layout="constrained")
    ax = fig.add_subplot()
    stats = _plot_stats(group)
    sparsities = sorted(stats["sparsity_pct"].unique())
    positions = {s: i for i, s in enumerate(sparsities)}
    for index, (label, rows) in enumerate(stats.groupby("label", sort=True)):
        _plot_method(ax, str(label), rows, positions, f"C{index % 10}")
    _plot_dense(ax, group)
    ax.set_xticks(range(len(sparsities)), [percent_label(s) for s in sparsities])
    ax.set_xlabel("target sparsity")
    ax.set_ylabel("accuracy (%)")
    ax.set_title(" · ".join(key))
    ax.grid(True, alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0))
    else:
        ax.text(0.5, 0.5, "no completed runs", ha="center", va="center", transform=ax.transAxes)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=120)
    return buffer.getvalue()


def _plot_stats(group: pd.DataFrame) -> pd.DataFrame:
    """Mean and std (percent) of clean/robust accuracy per row label and sparsity, done runs only."""
    done = pruned_runs(group[group["status"] == "done"])
    values = done[METRIC_COLUMNS].astype(float) * 100
    values[["label", "sparsity_pct"]] = done[["label", "sparsity_pct"]]
    grouped = values.groupby(["label", "sparsity_pct"])[METRIC_COLUMNS]
    means = grouped.mean().add_suffix("_mean")
    stds = grouped.std(ddof=DDOF).add_suffix("_std")
    return means.join(stds).reset_index()


def _plot_method(ax: Axes, label: str, rows: pd.DataFrame, positions: dict, color: str) -> None:
    for metric, style, name in (("robust_acc", "-", "robust"), ("clean_acc", "--", "clean")):
        points = rows.dropna(subset=[f"{metric}_mean"])
        if points.empty:
            continue
        ax.errorbar(
            [positions[s] for s in points["sparsity_pct"]],
            points[f"{metric}_mean"],
            yerr=points[f"{metric}_std"].fillna(0.0),
            color=color,
            linestyle=style,
            marker="o",
            capsize=3,
            label=f"{label} {name}",
        )


def _plot_dense(ax: Axes, group: pd.DataFrame) -> None:
    dense = group[(group["method"] == DENSE) & (group["status"] == "done")]
    for metric, color, name in (("robust_acc", "black", "robust"), ("clean_acc", "grey", "clean")):
        value = dense[metric].astype(float).mean() * 100
        if pd.notna(value):
            ax.axhline(value, color=color, linestyle=":", label=f"dense {name}")


# ---------------------------------------------------------------------------- files


def write_report(records: list[dict], out_dir: Path, sweep_sparsity: float | None = None,
                 cert_radius: float = CERT_RADIUS) -> str:
    """Write results.csv and per-table .md/.csv/.tex/.png into ``out_dir``; return the markdown.

    Per table: the comparison, the accuracy under each attack with the self-check flags, certified accuracy
    where a certifier ran (``<table>_certified.png``: against radius at ``sweep_sparsity``, against sparsity at
    ``cert_radius``), verified accuracy where a bound certifier ran (``<table>_verified.png``: clean, PGD and
    verified accuracy against sparsity), the cost, and the eps sweep at ``sweep_sparsity`` (default: the
    highest sparsity) as a table and ``<table>_eps.png``. The returned text is every table's markdown,
    followed (if any run failed) by a "Failed runs:" line and one line per failed run with its error truncated
    to 200 characters.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    frame = records_frame(records)
    _write_text(out_dir / "results.csv", frame.to_csv(index=False))
    columns = ev.metric_columns(records), ev.certified_columns(records), verified.verified_columns(records)
    sections = [_write_table_files(key, group, out_dir, records, columns, sweep_sparsity, cert_radius)
                for key, group in _groups(frame)]
    failures = failure_lines(frame)
    if failures:
        sections.append("\n".join(["Failed runs:", *failures]))
    return "\n\n".join(sections) + "\n" if sections else "No runs.\n"


def _write_table_files(key: TableKey, group: pd.DataFrame, out_dir: Path, records: list[dict],
                       columns: tuple[list[str], list[str], list[str]], sweep_sparsity: float | None,
                       cert_radius: float) -> str:
    metrics, certified, verified_metrics = columns
    table = _comparison_table(group)
    costs = cost_table(group)
    stem = "_".join(_safe_name(part) for part in key)
    markdown = render_markdown(key, table, table_caption(group))
    attacks = ev.attack_table(group, metrics)
    if len(attacks) and metrics:
        markdown += "\n\n" + render_markdown(key, attacks, ev.attack_caption(), heading="#### attacks:")
        _write_text(out_dir / f"{stem}_attacks.csv", attacks.to_csv())
    if certified:
        cert = ev.certified_table(group, certified)
        markdown += "\n\n" + render_markdown(key, cert, ev.certified_caption(_robust_description(group)),
                                             heading="#### certified:")
        _write_text(out_dir / f"{stem}_certified.csv", cert.to_csv())
        highest = pruned_runs(group)["sparsity_pct"].max()
        chosen_sparsity = round(sweep_sparsity * 100, 6) if sweep_sparsity is not None else highest
        atomic_write_bytes(ev.certified_png(" · ".join(key), group, certified, chosen_sparsity, cert_radius),
                           out_dir / f"{stem}_certified.png")
    present = [m for m in verified_metrics if group[m].notna().any()]
    if present:
        table_v = verified.verified_table(group, present)
        markdown += "\n\n" + render_markdown(key, table_v, verified.verified_caption(_robust_description(group)),
                                             heading="#### verified:")
        _write_text(out_dir / f"{stem}_verified.csv", table_v.to_csv())
        atomic_write_bytes(verified.verified_png(" · ".join(key), group), out_dir / f"{stem}_verified.png")
    flags = ev.flag_lines(group, records)
    if flags:
        markdown += "\n\nSelf-checks that fired:\n" + "\n".join(flags)
    if not costs.empty:
        markdown += "\n\n" + render_markdown(key, costs, cost_caption(group), heading="#### cost:")
    sweeps = ev.sweep_frame(group, records)
    chosen = ev.sweep_sparsity(sweeps, sweep_sparsity)
    if chosen is not None and len(sweeps):
        sweep = ev.sweep_table(sweeps, chosen)
        markdown += "\n\n" + render_markdown(key, sweep, ev.sweep_caption(chosen), heading="#### eps sweep:")
        _write_text(out_dir / f"{stem}_eps.csv", sweep.to_csv())
        atomic_write_bytes(ev.sweep_png(" · ".join(key), sweeps, chosen), out_dir / f"{stem}_eps.png")
    _write_text(out_dir / f"{stem}.md", markdown + "\n")
    _write_text(out_dir / f"{stem}.csv", table.to_csv())
    _write_text(out_dir / f"{stem}_cost.csv", costs.to_csv())
    _write_text(out_dir / f"{stem}.tex", render_latex(table))
    atomic_write_bytes(plot_png(key, group), out_dir / f"{stem}.png")
    return markdown


def cost_table(group: pd.DataFrame) -> pd.DataFrame:
    """Methods x sparsities: epochs, passes relative to HYDRA at the same sparsity, and seconds (seed means).

    Cost is what a method spends beyond the shared pretrained model (see `method_cost`).
    """
    pruned = pruned_runs(group)
    pruned = pruned[(pruned["status"] == "done") & pruned["cost_passes"].notna()]
    sparsities = sorted(pruned["sparsity_pct"].unique())
    means = pruned.groupby(["label", "sparsity_pct"])[["cost_epochs", "cost_passes", "cost_seconds"]].mean()
    rows = {}
    for label in sorted(pruned["label"].unique()):
        rows[label] = [_cost_cell(means, label, s) for s in sparsities]
    table = pd.DataFrame.from_dict(rows, orient="index", columns=[percent_label(s) for s in sparsities],
                                   dtype=object)
    table.index.name = "method"
    return table


def _cost_cell(means: pd.DataFrame, label: str, sparsity: float) -> str:
    if (label, sparsity) not in means.index:
        return MISSING
    epochs, passes, seconds = means.loc[(label, sparsity)]
    if ("hydra", sparsity) in means.index:
        relative = f"{passes / means.loc[('hydra', sparsity), 'cost_passes']:.2f}x HYDRA's passes"
    else:
        relative = f"{passes:.3g} passes"
    return f"{epochs:.0f} ep, {relative}, {seconds:.0f} s"


def cost_caption(group: pd.DataFrame) -> str:
    dense = group[(group["method"] == DENSE) & group["cost_epochs"].notna()]
    shared = (f"; the shared dense pretraining took {dense['cost_epochs'].mean():.0f} epochs, "
              f"{dense['cost_seconds'].mean():.0f} s" if len(dense) else "")
    return ("epochs, forward+backward passes and wall seconds of each method's own phases and finetune "
            f"(mean over seeds){shared}")


def failure_lines(frame: pd.DataFrame) -> list[str]:
    """One line per failed run: where it ran and its error (newlines flattened, max 200 chars)."""
    failed = frame[frame["status"] == "failed"]
    return [_failure_line(row) for row in failed.to_dict("records")]


def _failure_line(row: dict) -> str:
    error = " ".join(str(row["error"] or "no error message").split())
    if len(error) > ERROR_CHARS:
        error = error[: ERROR_CHARS - 1] + "…"
    sparsity = percent_label(row["sparsity"] * 100) if pd.notna(row["sparsity"]) else "?"
    where = f"{row['dataset']}/{row['arch']}/{row['objective']} {row['method']} ({row['scope']})"
    return f"- {where} sparsity {sparsity} seed {row['seed']}: {error}"


def _safe_name(part: str) -> str:
    """Keep file names portable: anything but letters, digits, '.', '_', '-' becomes '-'."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", str(part)).strip("-.") or "unknown"


def _write_text(path: Path, text: str) -> None:
    atomic_write_bytes(text.encode("utf-8"), path)

"""The report's files: results.csv, and per table key its markdown, CSV, LaTeX and plots."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from benchmark.core.io import atomic_write_bytes
from results import attack_tables as attacks
from results import certified_tables as certified
from results import plots
from results.cost import cost_caption, cost_table
from results.frame import TableKey, metric_catalogue, records_frame, table_groups
from results.layer_tables import kept_caption, kept_table
from results.record import RunRecord
from results.render import render_latex, render_markdown
from results.report_format import pruned_runs
from results.significance import paired_differences, significance_caption
from results.tables import comparison_table, failure_lines, robust_description, table_caption

CERT_RADIUS = 0.435  # the l2 radius read as HYDRA's vra-s (see ../shared/reference/hydra_protocol.md)


def write_report(records: list[RunRecord], out_dir: Path, sweep_sparsity: float | None = None,
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
    catalogue = metric_catalogue(records)
    sections = [_write_table_files(key, group, out_dir, records, catalogue, sweep_sparsity, cert_radius)
                for key, group in table_groups(frame)]
    failures = failure_lines(frame)
    if failures:
        sections.append("\n".join(["Failed runs:", *failures]))
    return "\n\n".join(sections) + "\n" if sections else "No runs.\n"


def _write_table_files(key: TableKey, group: pd.DataFrame, out_dir: Path, records: list[RunRecord],
                       catalogue: pd.DataFrame, sweep_sparsity: float | None, cert_radius: float) -> str:
    stem = "_".join(_safe_name(part) for part in key)

    def file(suffix: str) -> Path:
        return out_dir / f"{stem}{suffix}"

    title = " · ".join(key)
    table = comparison_table(group)
    markdown = render_markdown(key, table, table_caption(group))

    def section(heading: str, suffix: str, part: pd.DataFrame, caption: str) -> None:
        nonlocal markdown
        markdown += "\n\n" + render_markdown(key, part, caption, heading=f"#### {heading}:")
        _write_text(file(f"_{suffix}.csv"), part.to_csv())

    paired = paired_differences(group)
    if len(paired):
        section("paired differences", "paired", paired, significance_caption())
    cascade = attacks.attack_columns(catalogue)
    attack_table = attacks.attack_table(group, cascade)
    if len(attack_table) and cascade:
        section("attacks", "attacks", attack_table, attacks.attack_caption())
    smoothing = certified.certified_metrics(catalogue)
    if len(smoothing):
        section("certified", "certified", certified.certified_table(group, smoothing),
                certified.certified_caption(robust_description(group)))
        highest = pruned_runs(group)["sparsity_pct"].max()
        chosen = round(sweep_sparsity * 100, 6) if sweep_sparsity is not None else highest
        radii = smoothing[smoothing["kind"] == "certified_acc"]
        atomic_write_bytes(plots.certified_png(title, group, radii, chosen, cert_radius), file("_certified.png"))
    verified = certified.verified_metrics(catalogue)
    verified = verified.loc[[group[c].notna().any() for c in verified["column"]]]
    if len(verified):
        section("verified", "verified", certified.verified_table(group, verified),
                certified.verified_caption(robust_description(group)))
        atomic_write_bytes(plots.verified_png(title, group), file("_verified.png"))
    flags = attacks.flag_lines(group, records)
    if flags:
        markdown += "\n\nSelf-checks that fired:\n" + "\n".join(flags)
    kept = kept_table(group, records)
    if len(kept):
        section("weights kept per layer", "kept", kept, kept_caption())
    costs = cost_table(group)
    if not costs.empty:
        markdown += "\n\n" + render_markdown(key, costs, cost_caption(group), heading="#### cost:")
    sweeps = attacks.sweep_frame(group, records)
    chosen_sweep = attacks.sweep_sparsity(sweeps, sweep_sparsity)
    if chosen_sweep is not None and len(sweeps):
        section("eps sweep", "eps", attacks.sweep_table(sweeps, chosen_sweep), attacks.sweep_caption(chosen_sweep))
        atomic_write_bytes(plots.sweep_png(title, sweeps, chosen_sweep), file("_eps.png"))
    _write_text(file(".md"), markdown + "\n")
    _write_text(file(".csv"), table.to_csv())
    _write_text(file("_cost.csv"), costs.to_csv())
    _write_text(file(".tex"), render_latex(table))
    atomic_write_bytes(plots.comparison_png(title, group), file(".png"))
    return markdown


def _safe_name(part: str) -> str:
    """Keep file names portable: anything but letters, digits, '.', '_', '-' becomes '-'."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", str(part)).strip("-.") or "unknown"


def _write_text(path: Path, text: str) -> None:
    atomic_write_bytes(text.encode("utf-8"), path)

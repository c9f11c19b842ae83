"""The report: per table key a section of tables and plots (`build_sections`), and its files in the formats asked
for (`write_report`): ``tables`` (results.csv, and per key its Markdown, CSVs, LaTeX and PNGs), ``html`` (the one
self-contained page, index.html) and ``json`` (runs.jsonl, one leaderboard-style record per run)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from benchmark.core.io import atomic_write_bytes
from results import attack_tables as attacks
from results import certified_tables as certified
from results import plots
from results import published as references
from results.blocks import Plot, Section, Table
from results.cost import cost_caption, cost_table
from results.frame import TableKey, metric_catalogue, records_frame, table_groups
from results.html import render_page
from results.layer_tables import kept_caption, kept_table
from results.leaderboard import write_jsonl
from results.record import RunRecord
from results.render import render_latex, section_markdown
from results.report_format import percent_label, pruned_runs
from results.significance import paired_differences, significance_caption
from results.tables import (
    best_cells,
    comparison_table,
    failure_lines,
    preset_description,
    robust_description,
    seed_description,
    table_caption,
)
from results.threat import threat_model

CERT_RADIUS = 0.435  # the l2 radius read as HYDRA's vra-s (see ../shared/reference/hydra_protocol.md)
FORMATS = ("tables", "html", "json")
DEFAULT_FORMATS = ("tables", "html")
PAGE = "index.html"
JSONL = "runs.jsonl"


def write_report(records: list[RunRecord], out_dir: Path, sweep_sparsity: float | None = None,
                 cert_radius: float = CERT_RADIUS, formats: Sequence[str] = DEFAULT_FORMATS) -> str:
    """Write the report's files in `formats` into ``out_dir``; return its Markdown text ("" for json alone).

    Per table key: the comparison (with a `published` column where published numbers match, see
    `results.published`), the accuracy under each attack with the self-checks that fired and what they mean,
    certified accuracy where a certifier ran (``<table>_certified.png``: against radius at ``sweep_sparsity``,
    against sparsity at ``cert_radius``), verified accuracy where a bound certifier ran (``<table>_verified.png``),
    the cost (``<table>_compute.png``: accuracy against passes beyond the pretraining), and the eps sweep at
    ``sweep_sparsity`` (default: the highest sparsity) as a table and ``<table>_eps.png``; ``<table>.png`` plots
    the comparison. The returned text is every section's Markdown, followed (if any run failed) by a "Failed
    runs:" line and one line per failed run with its error truncated to 200 characters.
    """
    unknown = sorted(set(formats) - set(FORMATS))
    if unknown:
        raise ValueError(f"unknown report formats {unknown}; known: {', '.join(FORMATS)}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    frame = records_frame(records)
    if "json" in formats:
        write_jsonl(records, out_dir / JSONL)
    if not {"tables", "html"} & set(formats):
        return ""
    sections = build_sections(records, frame, sweep_sparsity, cert_radius)
    failures = failure_lines(frame)
    text = "\n\n".join([*(section_markdown(s) for s in sections), *(["\n".join(["Failed runs:", *failures])]
                                                                    if failures else [])])
    text = text + "\n" if text else "No runs.\n"
    if "tables" in formats:
        _write_text(out_dir / "results.csv", frame.to_csv(index=False))
        for section in sections:
            _write_section_files(section, out_dir)
    if "html" in formats:
        _write_text(out_dir / PAGE, render_page(sections, failures))
    return text


def build_sections(records: list[RunRecord], frame: pd.DataFrame, sweep_sparsity: float | None = None,
                   cert_radius: float = CERT_RADIUS) -> list[Section]:
    """One section per table key of the frame (`records_frame(records)`), keys sorted."""
    catalogue = metric_catalogue(records)
    published = references.load()
    return [_section(key, group, records, catalogue, published, sweep_sparsity, cert_radius)
            for key, group in table_groups(frame)]


def _section(key: TableKey, group: pd.DataFrame, records: list[RunRecord], catalogue: pd.DataFrame,
             published: pd.DataFrame, sweep_sparsity: float | None, cert_radius: float) -> Section:
    done = group[group["status"] == "done"]
    context = f"{robust_description(done)}; {preset_description(done)}; {seed_description(done)}"
    section = Section(key, "_".join(_safe_name(part) for part in key), context)
    title = section.title
    smoothing = certified.certified_metrics(catalogue)
    radii = smoothing[smoothing["kind"] == "certified_acc"]
    overlay = references.match(published, _setting(key, done, radii))
    section.published = overlay.verdicts

    table = comparison_table(group)
    if len(overlay.rows):
        labels = pruned_runs(group).drop_duplicates("label").set_index("label")["method"]
        sparsities = sorted(pruned_runs(group)["sparsity_pct"].dropna().unique())
        table = table.assign(published=references.published_column(overlay.rows, labels, sparsities))
    add = section.blocks.append
    add(Table("comparison", table_caption(group), table, csv="", latex=True, bold=best_cells(group, table)))
    add(Plot("accuracy against sparsity", "robust (solid) and clean (dashed) accuracy, mean ± one std over seeds "
             "(band), each seed a point; the dense model dotted; published numbers hollow",
             lambda: plots.comparison_png(title, group, overlay.rows), ""))
    paired = paired_differences(group)
    if len(paired):
        add(Table("paired differences", significance_caption(), paired, csv="_paired"))

    cascade = attacks.attack_columns(catalogue)
    attack_table = attacks.attack_table(group, cascade)
    if len(attack_table) and cascade:
        flags = attacks.flag_lines(group, records)
        notes = ("Self-checks that fired:", *flags, "What they mean:", *attacks.meaning_lines(group, records)) \
            if flags else ()
        add(Table("attacks", attacks.attack_caption(), attack_table, csv="_attacks", notes=notes))
    if len(smoothing):
        add(Table("certified", certified.certified_caption(robust_description(group)),
                  certified.certified_table(group, smoothing), csv="_certified"))
        chosen = round(sweep_sparsity * 100, 6) if sweep_sparsity is not None else pruned_runs(group)[
            "sparsity_pct"].max()
        add(Plot("certified accuracy", f"certified accuracy against l2 radius at {percent_label(chosen)} sparsity, "
                 f"and against sparsity at the radius closest to {cert_radius:g}",
                 lambda: plots.certified_png(title, group, radii, chosen, cert_radius, overlay.rows), "_certified"))
    verified = certified.verified_metrics(catalogue)
    verified = verified.loc[[group[c].notna().any() for c in verified["column"]]]
    if len(verified):
        add(Table("verified", certified.verified_caption(robust_description(group)),
                  certified.verified_table(group, verified), csv="_verified"))
        add(Plot("verified accuracy", "clean, PGD and verified accuracy (best certifier) against sparsity",
                 lambda: plots.verified_png(title, group), "_verified"))
    kept = kept_table(group, records)
    if len(kept):
        add(Table("weights kept per layer", kept_caption(), kept, csv="_kept"))
    costs = cost_table(group)
    if not costs.empty:
        add(Table("cost", cost_caption(group), costs, csv="_cost"))
        add(Plot("accuracy against compute", "robust and clean accuracy against the forward + backward passes "
                 "each run spent beyond the shared pretraining: each seed a point, mean ± std per method and "
                 "sparsity (labelled)", lambda: plots.compute_png(title, group), "_compute"))
    sweeps = attacks.sweep_frame(group, records)
    chosen_sweep = attacks.sweep_sparsity(sweeps, sweep_sparsity)
    if chosen_sweep is not None and len(sweeps):
        add(Table("eps sweep", attacks.sweep_caption(chosen_sweep), attacks.sweep_table(sweeps, chosen_sweep),
                  csv="_eps"))
        add(Plot("robust accuracy against eps", f"PGD robust accuracy against eps at {percent_label(chosen_sweep)} "
                 "sparsity, mean ± one std over seeds, each seed a point",
                 lambda: plots.sweep_png(title, sweeps, chosen_sweep), "_eps"))
    return section


def _setting(key: TableKey, done: pd.DataFrame, radii: pd.DataFrame) -> references.Setting:
    """What the matching rule of `results.published` asks of a table's done runs."""
    threats = {threat_model(d) for d in done["eval_desc"].dropna()}
    threat = threats.pop() if len(threats) == 1 else threat_model(None)  # mixed evaluations match nothing
    ran = {c for c in radii["column"] if c in done and done[c].notna().any()}
    return references.Setting(
        dataset=key[0], arch=key[1], objective=key[2], presets=frozenset(done["preset"].dropna().astype(str)),
        threat=threat, radii=tuple(float(r) for r, c in zip(radii["radius"], radii["column"], strict=True) if c in ran),
        methods=frozenset(done["method"].astype(str)))


def _write_section_files(section: Section, out_dir: Path) -> None:
    """<stem>.md, each table's CSV, the comparison's LaTeX and each plot's PNG."""
    _write_text(out_dir / f"{section.stem}.md", section_markdown(section) + "\n")
    for table in section.tables():
        if table.csv is not None:
            _write_text(out_dir / f"{section.stem}{table.csv}.csv", table.frame.to_csv())
        if table.latex:
            _write_text(out_dir / f"{section.stem}.tex", render_latex(table.frame))
    for plot in section.plots():
        atomic_write_bytes(plot.png, out_dir / f"{section.stem}{plot.suffix}.png")


def _safe_name(part: str) -> str:
    """Keep file names portable: anything but letters, digits, '.', '_', '-' becomes '-'."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", str(part)).strip("-.") or "unknown"


def _write_text(path: Path, text: str) -> None:
    atomic_write_bytes(text.encode("utf-8"), path)

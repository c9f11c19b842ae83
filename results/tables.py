"""The comparison table (clean / robust accuracy, methods x sparsities), its caption, and the failed runs."""

from __future__ import annotations

import pandas as pd

from results.frame import TableKey, table_groups
from results.report_format import DENSE, MISSING, format_stat, percent_label, pruned_runs

DENSE_COLUMN = "0%"
FAILED = "failed"
ERROR_CHARS = 200


def comparison_tables(frame: pd.DataFrame) -> dict[TableKey, pd.DataFrame]:
    """One table of formatted cells per (dataset, arch, objective), keys sorted."""
    return {key: comparison_table(group) for key, group in table_groups(frame)}


def comparison_table(group: pd.DataFrame) -> pd.DataFrame:
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


def best_cells(group: pd.DataFrame, table: pd.DataFrame) -> pd.DataFrame:
    """True at the cells of `comparison_table(group)` with the highest mean robust accuracy of their sparsity
    (ties all marked); never in the dense column, which every row shares."""
    pruned = pruned_runs(group[group["status"] == "done"])
    means = pruned.groupby(["label", "sparsity_pct"])["robust_acc"].mean().dropna()
    best = pd.DataFrame(False, index=table.index, columns=table.columns)
    for sparsity, values in means.groupby(level="sparsity_pct"):
        top = values[values == values.max()].index.get_level_values("label")
        best.loc[best.index.isin(top), percent_label(sparsity)] = True
    return best


def _format_cell(runs: pd.DataFrame) -> str:
    done = runs[runs["status"] == "done"]
    if done.empty:
        return FAILED if (runs["status"] == "failed").any() else MISSING
    return f"{format_stat(done['clean_acc'])} / {format_stat(done['robust_acc'])}"


def table_caption(group: pd.DataFrame) -> str:
    """Caption for one table key's runs: the robust evaluation and the number of seeds."""
    done = group[group["status"] == "done"]
    return (
        f"clean / robust accuracy (%) — robust = {robust_description(done)}; "
        f"mean ± std over {seed_description(done)}; robust is the worst case over the attacks"
    )


def preset_description(done: pd.DataFrame) -> str:
    """"preset quick", or every preset of the runs if they differ."""
    presets = sorted(done["preset"].dropna().astype(str).unique())
    return ("preset " + ", ".join(presets)) if presets else "preset unknown"


def robust_description(done: pd.DataFrame) -> str:
    """The evaluation the runs had, from their `eval_desc` (every distinct one, if they differ)."""
    descriptions = sorted(done["eval_desc"].dropna().astype(str).unique())
    if len(descriptions) == 1:
        return descriptions[0]
    if not descriptions:
        return "PGD accuracy"
    return "PGD accuracy, mixed settings: " + "; ".join(descriptions)


def seed_description(done: pd.DataFrame) -> str:
    """"2 seeds" when every cell has the same count, else a range such as "1–3 seeds"."""
    if done.empty:
        return "0 seeds"
    cells = done.groupby(["method", "scope", "sparsity"], dropna=False)["seed"].nunique(dropna=False)
    low, high = int(cells.min()), int(cells.max())
    if low == high:
        return f"{low} seed" if low == 1 else f"{low} seeds"
    return f"{low}–{high} seeds"


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

"""The attack cascade's tables: accuracy under each attack with the self-check flags, and the eps sweep.

They read the wide frame of `results.frame` (one row per record, in the records' order), so a group's index
points back at its records for what the frame does not hold (the sweep points, the checks' details).
"""

from __future__ import annotations

import pandas as pd

from results.frame import NO_FLAGS
from results.record import RunRecord
from results.report_format import DENSE, MISSING, format_stat, method_rows, percent_label, pruned_runs

CHECK_MEANINGS = {  # what a fired self-check says (benchmark/evaluation/checks.py; tested to name each of its checks)
    "randomness": "two passes over the same inputs differ: the model is random, so attacks chase noise",
    "zero_gradients": "many correct examples have a vanishing input gradient: gradient attacks are blind there "
                      "(often a constant classifier)",
    "autoattack_vs_pgd": "AutoAttack leaves standing examples PGD broke: its own robust accuracy would exceed PGD's",
    "black_box": "Square, which needs no gradients, breaks examples every white-box attack left standing: the "
                 "robust accuracy above overstates robustness (gradient masking)",
    "eps_monotone": "examples robust at a larger sweep eps but broken at a smaller one: the attack is unreliable",
    "eps_falls": "robust accuracy above chance that does not fall from the smallest to the largest sweep eps",
    "large_eps": "robust accuracy above chance at an eps where every input can be moved to the same grey image",
}


def attack_columns(catalogue: pd.DataFrame) -> list[str]:
    """The cascade's metric columns, in the catalogue's order (the worst case last)."""
    return list(catalogue.loc[catalogue["kind"] == "acc", "column"])


def attack_table(group: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """One row per method and sparsity (the dense model first): each attack's accuracy, mean ± std over done seeds,
    and the checks flagged in any seed."""
    done = group[group["status"] == "done"]
    rows = [_attack_row(label, sparsity, runs, columns) for label, sparsity, runs in method_rows(done)]
    return pd.DataFrame(rows, columns=["method", "sparsity", *(c.removesuffix("_acc") for c in columns), "flags"]
                        ).set_index("method")


def _attack_row(label: str, sparsity_pct: float, runs: pd.DataFrame, columns: list[str]) -> list[str]:
    flagged = sorted({name for cell in runs["flags"].dropna() for name in cell.split(", ") if name != NO_FLAGS})
    any_checks = runs["flags"].notna().any()
    flags = ", ".join(flagged) if flagged else (NO_FLAGS if any_checks else MISSING)
    return [label, percent_label(sparsity_pct), *(format_stat(runs[c]) for c in columns), flags]


def attack_caption() -> str:
    return ("accuracy (%) under each evaluator, in the order they ran: each attack attacks only the examples every "
            "attack before it left standing, so its column is the robust accuracy under it and all before it, and "
            "`worst` is the worst case over attacks; `flags` are the self-checks that fired (see below)")


def flag_lines(group: pd.DataFrame, records: list[RunRecord]) -> list[str]:
    """One line per fired check of a done run: where, which check, and its detail."""
    lines = []
    for index, row in group[group["status"] == "done"].iterrows():
        for c in records[index].checks or []:
            if c["flagged"]:
                where = f"{row['method']} {percent_label(row['sparsity'] * 100)} seed {row['seed']}"
                lines.append(f"- {where}: **{c['name']}**: {c['detail']}")
    return lines


def meaning_lines(group: pd.DataFrame, records: list[RunRecord]) -> list[str]:
    """What each check that fired in a done run of the group means, one line per check name."""
    fired = sorted({c["name"] for index in group[group["status"] == "done"].index
                    for c in records[index].checks or [] if c["flagged"]})
    return [f"- `{name}`: {CHECK_MEANINGS.get(name, 'see benchmark/evaluation/checks.py')}" for name in fired]


def sweep_frame(group: pd.DataFrame, records: list[RunRecord]) -> pd.DataFrame:
    """Long form of the done runs' eps sweeps: label, sparsity_pct, seed, multiple, eps, acc (one row per point)."""
    done = group[group["status"] == "done"]
    labels = pruned_runs(done)["label"]
    rows = []
    for index, row in done.iterrows():
        label = DENSE if row["method"] == DENSE else labels[index]
        for point in (records[index].evaluation or {}).get("eps_sweep") or []:
            rows.append({"label": label, "sparsity_pct": round(row["sparsity"] * 100, 6), "seed": row["seed"], **point})
    return pd.DataFrame(rows, columns=["label", "sparsity_pct", "seed", "multiple", "eps", "acc"])


def sweep_sparsity(sweeps: pd.DataFrame, chosen: float | None) -> float | None:
    """The sparsity (percent) to plot: the chosen one, else the highest pruned one with a sweep."""
    pruned = sweeps[sweeps["label"] != DENSE]
    if chosen is not None:
        return round(chosen * 100, 6)
    return float(pruned["sparsity_pct"].max()) if len(pruned) else None


def sweep_points(sweeps: pd.DataFrame, sparsity_pct: float) -> pd.DataFrame:
    """The sweep points of the dense model and of every method at one sparsity."""
    return sweeps[(sweeps["label"] == DENSE) | (sweeps["sparsity_pct"] == sparsity_pct)]


def sweep_table(sweeps: pd.DataFrame, sparsity_pct: float) -> pd.DataFrame:
    """Methods (dense first) x eps: PGD robust accuracy, mean ± std over seeds, at one sparsity."""
    table = sweep_points(sweeps, sparsity_pct).groupby(["label", "eps"])["acc"].apply(format_stat).unstack("eps")
    table.columns = [f"{eps:.4g}" for eps in table.columns]
    order = [DENSE] * (DENSE in table.index) + sorted(set(table.index) - {DENSE})
    table = table.loc[order].fillna(MISSING)
    table.index.name = "method"
    return table


def sweep_caption(sparsity_pct: float) -> str:
    return (f"PGD robust accuracy (%) against eps at {percent_label(sparsity_pct)} sparsity; every point attacks all "
            "correctly classified examples, mean ± std over seeds")

"""What each method cost beyond the shared pretrained model, per run and as a table relative to HYDRA."""

from __future__ import annotations

import pandas as pd

from results.record import RunRecord
from results.report_format import DENSE, MISSING, percent_label, pruned_runs

COST_COLUMNS = ["cost_epochs", "cost_passes", "cost_seconds"]


def method_cost(record: RunRecord) -> dict[str, float | None]:
    """What a run cost beyond the shared pretrained model: its pruner's phases plus finetune.

    For the dense model, the pretraining itself. Passes are batched forward plus backward passes through
    the model, attack steps included.
    """
    cost = record.cost or {}
    own = [cost.get("pretrain")] if record.method == DENSE else [*(cost.get("pruner") or []), cost.get("finetune")]
    phases = [p for p in own if p]
    if not phases:
        return dict.fromkeys(COST_COLUMNS)
    return {
        "cost_epochs": float(sum(p["epochs"] for p in phases)),
        "cost_passes": float(sum(p["forward_passes"] + p["backward_passes"] for p in phases)),
        "cost_seconds": float(sum(p["seconds"] for p in phases)),
    }


def cost_table(group: pd.DataFrame) -> pd.DataFrame:
    """Methods x sparsities: epochs, passes relative to HYDRA at the same sparsity, and seconds (seed means).

    Cost is what a method spends beyond the shared pretrained model (see `method_cost`).
    """
    pruned = pruned_runs(group)
    pruned = pruned[(pruned["status"] == "done") & pruned["cost_passes"].notna()]
    sparsities = sorted(pruned["sparsity_pct"].unique())
    means = pruned.groupby(["label", "sparsity_pct"])[COST_COLUMNS].mean()
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

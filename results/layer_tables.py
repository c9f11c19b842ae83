"""The weights each layer kept: one row per method and sparsity, one column per prunable layer.

An overall sparsity hides bottlenecks: at 99% per layer, a first convolution of 288 weights keeps 3 and a
classifier of 1,280 keeps about one per class. The table shows every layer's kept count (the range over seeds
where they differ, as a global threshold does), with the layer's size in its header.
"""

from __future__ import annotations

import pandas as pd

from results.record import RunRecord
from results.report_format import method_rows, percent_label


def kept_table(group: pd.DataFrame, records: list[RunRecord]) -> pd.DataFrame:
    """Kept weights per layer for the group's done, pruned runs that recorded them (an empty frame if none).

    `group` is a slice of `records_frame(records)`: its index is the position of each row's record.
    """
    done = group[group["status"] == "done"]
    kept_by_row = {f"{label} {percent_label(sparsity)}": layers for label, sparsity, runs in method_rows(done)
                   if sparsity > 0 and (layers := [records[i].kept_per_layer for i in runs.index
                                                   if records[i].kept_per_layer])}
    sizes = {name: total for layers in kept_by_row.values() for kept in layers for name, (_, total) in kept.items()}
    rows = {row: [_kept_range([kept[n][0] for kept in layers if n in kept]) for n in sizes]
            for row, layers in kept_by_row.items()}
    columns = [f"{_short(name)} ({total:,})" for name, total in sizes.items()]
    table = pd.DataFrame.from_dict(rows, orient="index", columns=columns, dtype=object)
    table.index.name = "method"
    return table


def kept_caption() -> str:
    return ("weights kept per prunable layer (the layer's size in brackets; a range where seeds differ): "
            "a layer that keeps a handful of weights is a bottleneck the overall sparsity hides")


def _kept_range(counts: list[int]) -> str:
    if not counts:
        return "–"
    low, high = min(counts), max(counts)
    return f"{low:,}" if low == high else f"{low:,}–{high:,}"


def _short(name: str) -> str:
    """"features.0.weight" -> "features.0": every prunable parameter is a weight."""
    return name.removesuffix(".weight")

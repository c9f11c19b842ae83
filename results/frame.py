"""Records as data frames: the long form of their metrics, the catalogue of metrics they hold, and one wide row per
record (results.csv), which every table and plot of the report reads.

Conventions used throughout the report:

* ``sparsity`` is a fraction (0.9 = 90% of weights removed); columns are labelled in percent.
* Accuracies are fractions in the records and shown in percent with one decimal.
* Aggregation is over seeds: the mean and the *sample* standard deviation (``ddof=1``), since the
  seeds are a small sample of possible training runs. With one seed the std is omitted.
* Only runs with ``status == "done"`` contribute numbers. A cell without a done run shows
  ``"failed"`` if one of its runs failed, otherwise ``"–"`` (nothing run yet, or still running).
  A cell where some seeds are done and others failed shows the done seeds; the failures are listed
  separately by the report.
"""

from __future__ import annotations

from collections.abc import Iterator

import pandas as pd

from results.cost import method_cost
from results.record import WORST, RunRecord
from results.report_format import DENSE

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
    "budget",
    "variant",
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
FIELDS = [c for c in COLUMNS if c in RunRecord.__dataclass_fields__]  # what a row copies from its record
KEY_COLUMNS = ["dataset", "arch", "objective"]
FLOAT_COLUMNS = ["sparsity", "sparsity_actual", "cost_epochs", "cost_passes", "cost_seconds"]
STRUCTURE = ["evaluator", "kind", "eps_multiple", "radius"]  # a metric's fields besides its value
FIRST_ATTACKS = ("clean", "pgd", "autoattack")  # the cascade's usual evaluators, first in every table
NO_FLAGS = "none"

TableKey = tuple[str, str, str]


def metrics_frame(records: list[RunRecord]) -> pd.DataFrame:
    """Long form: one row per metric of each record (``run`` is the record's position), with its column name."""
    rows = [{"run": run, **{name: getattr(m, name) for name in STRUCTURE}, "value": m.value, "column": m.column}
            for run, record in enumerate(records) for m in record.metrics]
    return pd.DataFrame(rows, columns=["run", *STRUCTURE, "value", "column"])


def metric_catalogue(records: list[RunRecord]) -> pd.DataFrame:
    """Every metric any record has (its structure and column, no value), in the report's order: the cascade
    (clean, PGD and AutoAttack first, other attacks by name, the worst case last), then the smoothing certifier's
    (PREDICT, certified accuracy by radius, the average radius), then verified accuracy by name."""
    catalogue = metrics_frame(records).drop_duplicates("column")[[*STRUCTURE, "column"]]
    order = sorted(catalogue.itertuples(index=False), key=_place)
    return pd.DataFrame(order, columns=[*STRUCTURE, "column"])


def _place(metric: tuple) -> tuple:
    evaluator, kind, _, radius, column = metric
    if kind == "acc":
        first = FIRST_ATTACKS.index(evaluator) if evaluator in FIRST_ATTACKS else len(FIRST_ATTACKS)
        return 0, first + (evaluator == WORST), column
    smoothing = ("predict_acc", "certified_acc", "acr")
    if kind in smoothing:
        return 1, smoothing.index(kind), radius if kind == "certified_acc" else 0.0, column
    return 2, 0, 0.0, column


def records_frame(records: list[RunRecord]) -> pd.DataFrame:
    """One row per record, in order: the :data:`COLUMNS`, then a column per metric of the catalogue.

    ``robust_acc`` is the worst case over attacks (``worst_acc``), or PGD's accuracy for records that have no
    worst case. ``flags`` names the self-checks that fired. Missing values become NaN/None; ``seed`` is a
    nullable integer so it stays an int in CSV.
    """
    long = metrics_frame(records)
    metrics = [c for c in metric_catalogue(records)["column"] if c not in COLUMNS]
    values = long.pivot(index="run", columns="column", values="value")
    values = values.reindex(index=range(len(records)), columns=["clean_acc", "pgd_acc", *metrics])
    frame = pd.DataFrame([{**{name: getattr(r, name) for name in FIELDS}, "flags": flags_of(r), **method_cost(r)}
                          for r in records], columns=[c for c in COLUMNS if c not in values])
    frame["variant"] = variants(records)
    frame = pd.concat([frame, values.reset_index(drop=True)], axis=1)
    worst = frame["worst_acc"] if "worst_acc" in frame else pd.Series(float("nan"), index=frame.index)
    frame["robust_acc"] = worst.fillna(frame["pgd_acc"])
    frame = frame[[*COLUMNS, *metrics]]
    for column in [*FLOAT_COLUMNS, "clean_acc", "pgd_acc", "robust_acc", *metrics]:
        frame[column] = pd.to_numeric(frame[column], errors="coerce").astype("float64")
    frame["seed"] = pd.to_numeric(frame["seed"], errors="coerce").astype("Int64")
    return frame


METHOD_FIELDS = ("dataset", "arch", "objective", "pretrain_objective", "preset", "budget", "method", "scope")


def variants(records: list[RunRecord]) -> list[str | None]:
    """Per record, what sets it apart from other runs of its cell (same method, sparsity and seed), as in a
    `--set hydra.lr=...` sweep into one store: the values of the settings that differ within some cell of its
    method ("hydra.lr=0.001"), given to every run of that method so that seeds still pool; or the run's key,
    for a record too old to hold its settings. None where no cell of the method has two runs. Without this the
    report would average such runs as if they were seeds."""
    methods: dict[tuple, list[int]] = {}
    for i, record in enumerate(records):
        methods.setdefault(tuple(getattr(record, name) for name in METHOD_FIELDS), []).append(i)
    out: list[str | None] = [None] * len(records)
    for members in methods.values():
        cells: dict[tuple, list[int]] = {}
        for i in members:
            cells.setdefault((records[i].sparsity, records[i].seed), []).append(i)
        differ: set[str] = set()
        for cell in (c for c in cells.values() if len(c) > 1):
            settings = [records[i].settings for i in cell]
            if any(s is None for s in settings):
                for i in cell:
                    out[i] = f"run {records[i].key[:8]}"
                continue
            names = {name for s in settings for name in s}
            differ |= {n for n in names if len({repr(s.get(n)) for s in settings}) > 1}
        for i in members:
            if differ and records[i].settings is not None:
                out[i] = ", ".join(f"{n}={records[i].settings.get(n, '–')}" for n in sorted(differ))
    return out


def flags_of(record: RunRecord) -> str | None:
    """Comma-joined names of the flagged checks, "none" if every check passed, None if none ran."""
    if not record.checks:
        return None
    return ", ".join(c["name"] for c in record.checks if c["flagged"]) or NO_FLAGS


def table_groups(frame: pd.DataFrame) -> Iterator[tuple[TableKey, pd.DataFrame]]:
    """Split the frame by table key; missing key parts become "unknown" rather than vanish. A preset run that the
    equal-passes view shares (see `_in_equal_passes_view`) is in the groups of both views."""
    keys = frame[KEY_COLUMNS].astype(object).where(frame[KEY_COLUMNS].notna(), "unknown").astype(str)
    other_pretrain = frame["pretrain_objective"].notna() & (frame["pretrain_objective"] != frame["objective"])
    keys.loc[other_pretrain, "objective"] = (keys["objective"] + " on " + frame["pretrain_objective"].astype(str)
                                             + "-pretrained")
    shared = _in_equal_passes_view(frame, keys)
    keys.loc[frame["budget"] == "equal-passes", "objective"] += ", equal passes"  # the equal-compute view
    view = keys[shared].copy()
    view["objective"] += ", equal passes"
    frame, keys = pd.concat([frame, frame[shared]]), pd.concat([keys, view])  # the index stays the record's position
    for key, group in frame.groupby([keys[c].to_numpy() for c in KEY_COLUMNS], sort=True):
        yield tuple(key), group  # type: ignore[misc]


def _in_equal_passes_view(frame: pd.DataFrame, keys: pd.DataFrame) -> pd.Series:
    """The preset runs that belong to an equal-passes view as well: `benchmark.grid.equal_passes` leaves the cells
    it does not raise (the dense model and the costliest method) under their preset key, so one run serves both
    views. Such a run is the dense model of a seed the view has, or a method the view has no run of at a
    sparsity and seed where the view's runs trained exactly its epochs (same table key and preset throughout)."""
    equal = frame["budget"] == "equal-passes"
    if not equal.any():
        return equal
    seed_key = pd.concat([keys[KEY_COLUMNS], frame[["preset", "seed"]].astype(str)], axis=1).agg("|".join, axis=1)
    cell = seed_key + "|" + frame["sparsity"].astype(str)
    view_epochs = frame["cost_epochs"][equal].groupby(cell[equal]).max()
    in_view = (cell + "|" + frame["method"]).isin(set((cell + "|" + frame["method"])[equal]))
    dense = (frame["method"] == DENSE) & seed_key.isin(set(seed_key[equal]))
    costliest = ~in_view & (cell.map(view_epochs) == frame["cost_epochs"])
    return ~equal & (dense | costliest)

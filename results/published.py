"""Published numbers to compare a report with, and the rule that decides where they may be compared.

`published.csv` (package data) is built by `from_sources` from ../shared/reference/: the HYDRA paper's results
table and the Adversarial Pruning Benchmark's re-evaluation of published checkpoints. Every row keeps its source
(the citation, the source's own text, file and metric name) and states what it measured in fields: the metric
(`clean`, `robust`, `certified`), the threat model (norm, eps; smoothing sigma and l2 radius) and the training
objective (`adversarial` where each method used its own adversarial-training recipe). Rebuild it with
``python -m results.published ../shared/reference``.

The matching rule (`match`): a published row is overlaid on a table (dataset, arch, objective) only when

1. the dataset is the same and the arch is the same (`wrn_28_4` is rpbench's `wrn-28-4`);
2. the objective is the same, or the row's is `adversarial` and the table's is `pgd` or `trades`; a table whose
   pruning objective differs from its pretraining objective matches none;
3. every done run of the table ran the `paper` preset (a `smoke` or `quick` budget is not the paper's protocol);
4. the threat model agrees: for `clean` and `robust`, an l-inf evaluation at the row's eps (within
   `EPS_TOLERANCE`: the HYDRA code's 0.031 and 8/255 = 0.03137 are the same setting); for `certified`, the
   runs' smoothing sigma equals the row's and they were certified at the row's l2 radius;
5. the row's method ran in the table (its markers take that method's colour).

`robust` is compared with the table's worst case over its attack cascade (at least as strong as the paper's PGD);
`certified` with the smoothed classifier's certified accuracy at the row's radius (HYDRA's vra-s: 0.435, an
inference recorded in the row's evaluation text). The page lists, per table, which published settings of its
dataset matched and, for the others, the first rule that failed.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import pandas as pd

from results.record import Metric
from results.report_format import DENSE, percent_label
from results.threat import ThreatModel

COLUMNS = ["citation", "dataset", "arch", "objective", "method", "sparsity", "metric", "value_pct", "norm", "eps",
           "sigma", "radius", "evaluation", "note", "source", "source_file", "source_metric", "source_method"]
EPS_TOLERANCE = 0.001  # a quarter of 1/255
ADVERSARIAL = "adversarial"  # a row's objective when each method trained adversarially with its own recipe
ADVERSARIAL_OBJECTIVES = ("pgd", "trades")
PAPER_PRESET = "paper"
METHOD_NAMES = {"radmm": "admm"}  # published name -> rpbench's (R-ADMM is the robust ADMM rpbench runs)
SET_FIELDS = ["citation", "dataset", "arch", "objective", "metric"]  # one published setting

HYDRA = "Sehwag et al. 2020 (HYDRA paper)"
APB = "Piras et al. 2024 (Adversarial Pruning Benchmark)"


def load() -> pd.DataFrame:
    """The shipped table of published numbers."""
    with resources.files("results").joinpath("published.csv").open() as f:
        return pd.read_csv(f)


# --- building the table from the sources -------------------------------------------------------------------------


def from_sources(folder: Path) -> pd.DataFrame:
    """published.csv's rows from ../shared/reference's hydra_paper.csv and adversarial_pruning_benchmark.csv."""
    rows = [*_hydra_rows(pd.read_csv(folder / "hydra_paper.csv")),
            *_apb_rows(pd.read_csv(folder / "adversarial_pruning_benchmark.csv"))]
    return pd.DataFrame(rows, columns=COLUMNS)


def _hydra_rows(source: pd.DataFrame) -> list[dict]:
    measured = {
        "era": dict(metric="robust", norm="linf", eps=0.031, sigma=None, radius=None,
                    evaluation="l-inf PGD at eps 0.031 (8/255) on the whole test set, after TRADES training"),
        "vra_s": dict(metric="certified", norm="l2", eps=None, sigma=0.25, radius=0.435,
                      evaluation="randomized-smoothing certified accuracy, sigma 0.25, at l2 radius 0.435 (the "
                                 "radius is not stated in the paper; 0.435 is inferred, see hydra_protocol.md)"),
    }
    return [{"citation": HYDRA, "dataset": r.dataset, "arch": _arch(r.arch), "objective": r.objective,
             "method": _method(r.method), "sparsity": r.sparsity, "value_pct": r.value_pct, **measured[r.metric],
             "note": ("trained with pseudo-labelled extra images (semi-supervised), which rpbench does not use"
                      if r.dataset == "cifar10" else ""),
             "source": r.source, "source_file": "hydra_paper.csv", "source_metric": r.metric,
             "source_method": r.method} for r in source.itertuples()]


def _apb_rows(source: pd.DataFrame) -> list[dict]:
    rows = []
    for r in source.itertuples():
        for metric, column in (("clean", "clean_pct"), ("robust", "autoattack_pct")):
            rows.append({"citation": APB, "dataset": r.dataset, "arch": _arch(r.arch), "objective": ADVERSARIAL,
                         "method": _method(r.method), "sparsity": r.sparsity, "metric": metric,
                         "value_pct": getattr(r, column), "norm": "linf", "eps": round(8 / 255, 6), "sigma": None,
                         "radius": None, "evaluation": "AutoAttack standard at l-inf eps 8/255, first 10,000 test "
                                                       "images" if metric == "robust" else "clean accuracy",
                         "note": "the authors' published checkpoint, each trained with its own recipe",
                         "source": r.source, "source_file": "adversarial_pruning_benchmark.csv",
                         "source_metric": column, "source_method": r.method})
    return rows


def _arch(name: str) -> str:
    """The sources' `wrn_28_4` is rpbench's `wrn-28-4`; other names are the same."""
    return name.replace("_", "-") if name.startswith("wrn") else name


def _method(name: str) -> str:
    return METHOD_NAMES.get(name, name)


# --- matching ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Setting:
    """What a table's runs share, as far as the matching rule asks: key, presets, threat model, certified radii
    and methods. `objective` is the table key's (``"trades on natural-pretrained"`` for a mixed one)."""

    dataset: str
    arch: str
    objective: str
    presets: frozenset[str]
    threat: ThreatModel
    radii: tuple[float, ...]
    methods: frozenset[str]


@dataclass(frozen=True)
class Overlay:
    """The published rows a table matches (with `column`: the report frame's column they compare with) and one
    line per published setting of the table's dataset, saying whether it matched and, if not, why."""

    rows: pd.DataFrame
    verdicts: list[str]


def column_of(metric: str, radius: float | None) -> str:
    """The report frame's column a published metric compares with."""
    if metric == "certified":
        return Metric("smoothing", "certified_acc", 0.0, radius=float(radius)).column
    return {"clean": "clean_acc", "robust": "robust_acc"}[metric]


def match(published: pd.DataFrame, setting: Setting) -> Overlay:
    """The published rows that match the setting under the module's rule, and the verdict on every setting."""
    candidates = published[published["dataset"] == setting.dataset]
    matched, verdicts = [], []
    for fields, rows in candidates.groupby(SET_FIELDS, sort=True):
        name = "{}: {} on {}/{}/{}".format(fields[0], fields[4], *fields[1:4])
        why = _mismatch(rows.iloc[0], setting)
        ran = rows[rows["method"].isin(setting.methods)]
        if why is None and ran.empty:
            why = "none of its methods ({}) ran here".format(", ".join(sorted(rows["method"].unique())))
        if why is not None:
            verdicts.append(f"{name}: not compared ({why})")
            continue
        matched.append(ran)
        missing = sorted(set(rows["method"]) - setting.methods)
        extra = f"; not run here: {', '.join(missing)}" if missing else ""
        note = rows.iloc[0]["note"]
        extra += f"; note: {note}" if isinstance(note, str) and note else ""
        verdicts.append(f"{name}: compared, {len(ran)} numbers ({rows.iloc[0]['evaluation']}){extra}")
    if candidates.empty:
        verdicts.append(f"no published numbers for {setting.dataset}")
    rows = pd.concat(matched) if matched else published.iloc[:0]
    rows = rows.assign(column=[column_of(m, r) for m, r in zip(rows["metric"], rows["radius"], strict=True)])
    return Overlay(rows.reset_index(drop=True), verdicts)


def _mismatch(row: pd.Series, setting: Setting) -> str | None:
    """The first rule of the module docstring that the published setting `row` fails for `setting`, or None."""
    if row["arch"] != setting.arch:
        return f"arch {row['arch']}, here {setting.arch}"
    objectives = ADVERSARIAL_OBJECTIVES if row["objective"] == ADVERSARIAL else (row["objective"],)
    if setting.objective not in objectives:
        return f"objective {row['objective']}, here {setting.objective}"
    if setting.presets != {PAPER_PRESET}:
        return "preset {} here, not {}".format(", ".join(sorted(setting.presets)) or "unknown", PAPER_PRESET)
    threat = setting.threat
    if row["metric"] == "certified":
        if threat.sigma is None or abs(threat.sigma - row["sigma"]) > 1e-9:
            return f"smoothing sigma {row['sigma']:g}, here {_or_none(threat.sigma)}"
        if not any(abs(r - row["radius"]) < 1e-9 for r in setting.radii):
            return f"certified at l2 radius {row['radius']:g}, not among the radii here"
        return None
    if threat.norm != row["norm"] or threat.eps is None or abs(threat.eps - row["eps"]) > EPS_TOLERANCE:
        return f"{row['norm']} eps {row['eps']:.4g}, here {_or_none(threat.norm)} eps {_or_none(threat.eps)}"
    return None


def _or_none(value: object) -> str:
    return "unknown" if value is None else f"{value:g}" if isinstance(value, float) else str(value)


def published_column(rows: pd.DataFrame, labels: pd.Series, sparsities: list[float]) -> pd.Series:
    """Per table row: the published numbers of its method at the table's sparsities (the dense model's at 0%),
    e.g. ``"robust: 0% 51.9, 90% 49.5 [Sehwag et al. 2020 (HYDRA paper)]"``; "–" where none matched.

    labels: method per row label; sparsities: the table's pruned sparsities in percent."""
    shown = rows[(rows["sparsity"] * 100).round(6).isin([0.0, *sparsities])]
    cells = {}
    for label, method in labels.items():
        own = shown[shown["method"].isin([method, DENSE])]
        parts = []
        for (citation, metric, radius), values in own.groupby(["citation", "metric", "radius"], dropna=False,
                                                              sort=True):
            values = values.sort_values("sparsity")
            numbers = ", ".join(f"{percent_label(s * 100)} {v:.1f}" for s, v in zip(values["sparsity"],
                                                                                   values["value_pct"], strict=True))
            what = metric if pd.isna(radius) else f"{metric} at r = {radius:g}"
            parts.append(f"{what}: {numbers} [{citation}]")
        cells[label] = "; ".join(parts) or "–"
    return pd.Series(cells, name="published", dtype=object)


if __name__ == "__main__":  # rebuild the shipped table: python -m results.published ../shared/reference
    from_sources(Path(sys.argv[1])).to_csv(Path(__file__).with_name("published.csv"), index=False)

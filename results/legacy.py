"""Records of stores before schema version 3, whose metrics were one dict of composed names
(`pgd_acc`, `ibp_verified_x2_acc`, `smoothing_r0.25_acc`): read back into long form, for the migration only.

Every name those versions wrote is `Metric.column` of the metric it becomes, with one exception: `smoothing_acc`
(correct and not abstained) is certified accuracy at radius 0, which the smoothing evaluator now always reports.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from results.record import BEST, Metric

_CERTIFIED = re.compile(r"(?P<evaluator>.+)_r(?P<radius>[0-9.]+)_acc")
_VERIFIED = re.compile(r"(?:(?P<evaluator>.+)_)?verified(?:_x(?P<multiple>[0-9.]+))?_acc")
_OTHER = re.compile(r"(?P<evaluator>.+?)_(?P<kind>predict_acc|acr|acc)")


def long_metrics(metrics: dict[str, float] | None, evaluators: Iterable[str] = ()) -> list[Metric]:
    """An old record's metrics in long form, in their order. `evaluators` are the evaluator names its evaluation
    timed, so `ta_square_acc` becomes `torchattacks:Square`'s metric rather than one of an evaluator `ta_square`."""
    by_column = {Metric(name, "acc", 0.0).column: name for name in evaluators}
    long = []
    for name, value in (metrics or {}).items():
        metric = _metric(name, value, by_column)
        if metric not in long:  # smoothing_acc and smoothing_r0_acc are the same number
            long.append(metric)
    return long


def _metric(name: str, value: float, cascade: dict[str, str]) -> Metric:
    if name == "smoothing_acc":  # before the cascade's names: `smoothing` is among the timed evaluators
        return Metric("smoothing", "certified_acc", value, radius=0.0)
    if name in cascade:
        return Metric(cascade[name], "acc", value)
    if match := _CERTIFIED.fullmatch(name):
        return Metric(match["evaluator"], "certified_acc", value, radius=float(match["radius"]))
    if match := _VERIFIED.fullmatch(name):
        return Metric(match["evaluator"] or BEST, "verified_acc", value, eps_multiple=float(match["multiple"] or 1))
    if match := _OTHER.fullmatch(name):
        return Metric(match["evaluator"], match["kind"], value)
    raise ValueError(f"metric {name!r} of an old store is none rpbench ever wrote")


def migrate_row(metrics: dict[str, float] | None, evaluation: dict[str, Any] | None) -> tuple[list[Metric],
                                                                                             dict[str, Any] | None]:
    """(metrics, evaluation) of an old row as version 3 stores them: long metrics, and the evaluation without its
    list of cascade metric names (the long form's `acc` metrics are the cascade, in order)."""
    if evaluation is None:
        return long_metrics(metrics), None
    evaluation = {k: v for k, v in evaluation.items() if k != "attack_metrics"}
    return long_metrics(metrics, evaluation.get("seconds") or {}), evaluation

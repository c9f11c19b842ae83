"""Metrics in long form: one `Metric` per measured number, with its structure in fields, not in its name.

A foundation type: the evaluation produces metrics, the run record holds them, the report pivots them.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

TORCHATTACKS = "torchattacks:"  # the evaluator prefix of torchattacks' attacks (`torchattacks:Square`)
BEST = "verified"  # the evaluator of the best bound certifier per example (an example any certifier verifies)
WORST = "worst"  # the evaluator of the worst case over the attack cascade


@dataclass(frozen=True)
class Metric:
    """One number an evaluation measured, a fraction in [0, 1] unless `kind` says otherwise.

    evaluator: who measured it. An attack of the cascade (`clean`, `pgd`, `autoattack`, `torchattacks:Square`),
        `worst` (the worst case over the cascade), a certifier (`smoothing`, `ibp`, `crown`, `sym`) or
        `verified` (the best bound certifier per example).
    kind: what it is.
        `acc`: accuracy under the attack and every attack before it in the cascade (`clean`: clean accuracy);
        `verified_acc`: verified accuracy of a bound certifier, at `eps_multiple`;
        `certified_acc`: certified accuracy of the smoothed classifier at l2 `radius` (abstentions count wrong);
        `predict_acc`: accuracy of the smoothed classifier's PREDICT;
        `acr`: the average certified radius (an l2 radius, not a fraction).
    eps_multiple: for `verified_acc`, the multiple of the evaluation eps it was verified at (1.0: that eps).
    radius: for `certified_acc`, the l2 radius.
    """

    evaluator: str
    kind: str
    value: float
    eps_multiple: float | None = None
    radius: float | None = None

    @property
    def column(self) -> str:
        """The metric's column in results.csv, and its name in stores before schema version 3:
        clean_acc, ta_square_acc, ibp_verified_x2_acc, verified_acc, smoothing_r0.25_acc, smoothing_acr."""
        who = self.evaluator.replace(TORCHATTACKS, "ta_").lower()
        if self.kind == "verified_acc":
            stem = who if who == BEST else f"{who}_verified"
            return f"{stem}_acc" if self.eps_multiple == 1.0 else f"{stem}_x{self.eps_multiple:g}_acc"
        if self.kind == "certified_acc":
            return f"{who}_r{self.radius:g}_acc"
        return f"{who}_{self.kind}"


def metric_value(metrics: Iterable[Metric], evaluator: str, kind: str = "acc", *, eps_multiple: float | None = None,
                 radius: float | None = None) -> float | None:
    """The value of the metric with these fields, or None if it was not measured."""
    for m in metrics:
        if (m.evaluator, m.kind, m.eps_multiple, m.radius) == (evaluator, kind, eps_multiple, radius):
            return m.value
    return None


def by_column(metrics: Iterable[Metric]) -> dict[str, float]:
    """The metrics by their results.csv column (`Metric.column`)."""
    return {m.column: m.value for m in metrics}

"""The run record: what one run (one cell, or one foreign checkpoint) produced, as the store keeps it.

`RunRecord` is the one list of a record's fields: the runner builds it, the store derives its columns from it
and the report reads it. Its metrics are long form, one `Metric` per measured number, with the structure in
fields rather than in the metric's name.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from benchmark.core.metrics import BEST, TORCHATTACKS, WORST, Metric, by_column, metric_value

__all__ = ["BEST", "TORCHATTACKS", "WORST", "Metric", "RunRecord", "by_column", "metric_value"]

@dataclass(kw_only=True)
class RunRecord:
    """One run's record. Fields a run may not have (a failed run's metrics, an old store's columns) are None.

    sparsity is the target, sparsity_actual the measured one; cost holds what each phase spent (see
    `results.cost`); evaluation the wall times, attacked-example counts and eps sweep of the evaluation;
    checks the self-checks, one dict per check; kept_per_layer the weights each prunable layer kept (a layer
    that keeps a handful is a bottleneck the overall sparsity hides); settings what the run's key hashes, by
    the names `--set` takes; eval_key the key of the evaluation settings; key_version the key rule
    (`benchmark.core.config.KEY_VERSION`) its keys were made under. Fields typed as a list or dict are stored
    as JSON.
    """

    key: str
    dataset: str | None = None
    arch: str | None = None
    objective: str | None = None
    pretrain_objective: str | None = None
    method: str
    scope: str | None = None
    sparsity: float | None = None
    sparsity_actual: float | None = None
    seed: int | None = None
    preset: str | None = None
    budget: str | None = None  # "preset" or "equal-passes" (see RunConfig.budget; None: before schema 4)
    metrics: list[Metric] = field(default_factory=list)
    cost: dict[str, Any] | None = None
    versions: dict[str, str] | None = None
    eval_desc: str | None = None
    device: str | None = None
    status: str
    error: str | None = None
    finished_at: str | None = None
    evaluation: dict[str, Any] | None = None
    checks: list[dict[str, Any]] | None = None
    eval_key: str | None = None
    key_version: int | None = None  # the key rule its keys were made under (None: version 1, before it was kept)
    kept_per_layer: dict[str, list[int]] | None = None  # prunable weight -> [kept, total] (None: before schema 4)
    settings: dict[str, Any] | None = None  # what the key hashes, by `--set` name (None: before schema 5)

    def value(self, evaluator: str, kind: str = "acc", *, eps_multiple: float | None = None,
              radius: float | None = None) -> float | None:
        """This record's metric with these fields (see `Metric`), or None."""
        return metric_value(self.metrics, evaluator, kind, eps_multiple=eps_multiple, radius=radius)

    def by_column(self) -> dict[str, float]:
        """The metrics by their results.csv column (`Metric.column`)."""
        return by_column(self.metrics)

    def to_dict(self) -> dict[str, Any]:
        """Plain values only (metrics as dicts): what JSON and the store hold."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> RunRecord:
        """The inverse of `to_dict`; metrics None (a failed run in an old store) reads as no metrics."""
        metrics = [Metric(**m) for m in values.get("metrics") or []]
        return cls(**{**values, "metrics": metrics})

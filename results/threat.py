"""A run's threat model, read back from its evaluation description (`RunRecord.eval_desc`).

The record keeps the evaluation's settings only as that one line, written by
`benchmark.evaluation.evaluators.describe` in a fixed shape: ``"<norm> eps <eps>: <attacks>; <n> test examples
[...; randomized smoothing sigma <sigma>, ...]"`` (eps to 4 significant digits). The report needs the norm, eps
and smoothing sigma to decide which published numbers a table may be compared with, and the JSON export names
them, so they are parsed here, in one place.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass

_HEAD = re.compile(r"^(?P<norm>\S+) eps (?P<eps>[-+0-9.eE]+):")
_EXAMPLES = re.compile(r"; (?P<n>\d+) test examples")
_SIGMA = re.compile(r"randomized smoothing sigma (?P<sigma>[-+0-9.eE]+)")
NORMS = {"l-inf": "linf", "l2": "l2"}


@dataclass(frozen=True)
class ThreatModel:
    """norm: `linf` or `l2`; eps in pixel units (4 significant digits); examples: the attacked test examples;
    sigma: the smoothing noise, where a smoothing certificate was computed. Unknown parts are None."""

    norm: str | None = None
    eps: float | None = None
    examples: int | None = None
    sigma: float | None = None

    def to_dict(self) -> dict[str, float | int | str | None]:
        return asdict(self)


def threat_model(eval_desc: str | None) -> ThreatModel:
    """The threat model an evaluation description states; all None for a record without one."""
    if not eval_desc:
        return ThreatModel()
    head, examples, sigma = _HEAD.search(eval_desc), _EXAMPLES.search(eval_desc), _SIGMA.search(eval_desc)
    return ThreatModel(
        norm=NORMS.get(head["norm"], head["norm"]) if head else None,
        eps=float(head["eps"]) if head else None,
        examples=int(examples["n"]) if examples else None,
        sigma=float(sigma["sigma"]) if sigma else None,
    )

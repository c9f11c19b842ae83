"""Verified accuracy by bound propagation: the `ibp`, `crown` and `sym` certifiers, the best of them per
example, and the soundness check that holds them to the attacks.

An example is verified at eps when the lower bound on every margin z_y - z_j over the clamped eps-box is
positive (so it is also classified correctly). Each certifier stores, per example, its worst-case margin (the
smallest lower bound) at the evaluation eps and at each of verify.eps_multiples of it. The verification eps
is the evaluation eps (eval_attack.eps): the dataset's verification eps for a bound-based objective.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from attacks import bounds
from benchmark.core.config import RunConfig, SettingsGroup, setting
from benchmark.core.metrics import BEST, Metric
from benchmark.core.presets import PresetContext

CERTIFIERS = {"ibp": "ibp", "crown": "crown", "sym": "sym"}  # evaluator -> bound method of attacks/bounds.py
TITLES = {"ibp": "IBP", "crown": "CROWN", "sym": "symbolic intervals"}


@dataclass
class VerifySettings:
    """The bound-propagation evaluators `ibp`, `crown` and `sym`: at the evaluation eps (eval_attack.eps) and
    at each of eps_multiples of it, for a verified-accuracy curve. examples: how many evaluation examples are
    verified (None: all); max_batch: examples per bound computation of `crown` and `sym`. Batched, they refine
    each example's own unstable neurons, padded to the batch's largest count; on the 2-core CPU 128 examples at
    once ran 6x (CROWN) and 2.7x (symbolic intervals) the examples/s of one at a time (README), so the default
    takes an evaluation batch whole; lower it only to bound memory. `ibp` takes the whole batch at once."""

    eps_multiples: list[float] = setting(default_factory=lambda: [0.5, 1.5, 2.0], minimum=0.0,
                                         help="also verify at these multiples of the evaluation eps")
    examples: int | None = setting(None, minimum=1, help="evaluation examples verified (default: all)")
    max_batch: int = setting(256, minimum=1, help="examples per CROWN / symbolic-interval bound computation")


def verify_budget(ctx: PresetContext) -> dict[str, Any]:
    return {"examples": 500} if ctx.preset == "quick" else {}


VERIFY = SettingsGroup("verify", VerifySettings, "evaluator", budget=verify_budget)


def multiples(cfg: RunConfig) -> list[float]:
    """The eps multiples every certifier verifies at, 1 (the evaluation eps) included."""
    return sorted({1.0, *cfg.settings_of("verify").eps_multiples})


def margin_field(multiple: float) -> str:
    return f"margin_x{multiple:g}"


def certifier(name: str) -> Any:
    """The `certify` function of evaluator `name`: per example, the worst-case margin at each multiple of the
    evaluation eps, and `robust` (verified) at the evaluation eps."""
    method = CERTIFIERS[name]

    def certify(model: nn.Module, x: Tensor, y: Tensor, cfg: RunConfig) -> dict[str, Tensor]:
        chunk = len(x) if method == "ibp" else cfg.settings_of("verify").max_batch
        fields: dict[str, Tensor] = {}
        with torch.no_grad():
            for multiple in multiples(cfg):
                eps = cfg.eval_attack.eps * multiple
                fields[margin_field(multiple)] = torch.cat([
                    bounds.margin_bounds(model, xs, ys, eps, method).min(1).values.cpu()
                    for xs, ys in zip(x.split(chunk), y.split(chunk), strict=True)])
        return {**fields, "robust": fields[margin_field(1.0)] > 0}

    return certify


def certifier_metrics(name: str) -> Any:
    def metrics(fields: dict[str, Tensor], cfg: RunConfig) -> list[Metric]:
        return [verified_acc(name, [fields], m) for m in multiples(cfg)]

    return metrics


def certifier_settings(name: str) -> Any:
    def settings(cfg: RunConfig) -> dict[str, Any]:
        return {"method": CERTIFIERS[name], "eps": cfg.eval_attack.eps, "multiples": multiples(cfg)}

    return settings


def best_metrics(fields: dict[str, dict[str, Tensor]], cfg: RunConfig) -> list[Metric]:
    """Verified accuracy of the best certifier per example: an example counts once however many verify it."""
    return [verified_acc(BEST, list(fields.values()), m) for m in multiples(cfg)]


def verified_acc(evaluator: str, fields: list[dict[str, Tensor]], multiple: float) -> Metric:
    """The fraction of examples that any of these certifiers' fields verify at `multiple` x the evaluation eps
    (over the examples all of them certified)."""
    count = min(len(f["robust"]) for f in fields)
    verified = torch.stack([f[margin_field(multiple)][:count] > 0 for f in fields]).any(0)
    return Metric(evaluator, "verified_acc", verified.float().mean().item(), eps_multiple=multiple)


def soundness(fields: dict[str, dict[str, Tensor]], broken: Tensor | None, eps: float) -> dict[str, Any]:
    """The check that no verified example was broken by an attack at the same eps (a bug if it fails)."""
    if broken is None:
        return {"name": "soundness", "flagged": False,
                "detail": f"not checked: no attack ran at the verification eps {eps:.4g}"}
    found = []
    for name, f in fields.items():
        verified = f["robust"]
        unsound = (verified & broken[: len(verified)]).nonzero().flatten()
        if len(unsound):
            found.append(f"{TITLES[name]} verified {len(unsound)} examples an attack broke at eps {eps:.4g} "
                         f"(first: {unsound[:5].tolist()})")
    checked = ", ".join(TITLES[n] for n in fields)
    return {"name": "soundness", "flagged": bool(found),
            "detail": "; ".join(found) if found else f"{checked}: no verified example broken by the attacks "
                                                     f"at eps {eps:.4g}"}


def describe(cfg: RunConfig, names: list[str], examples: int) -> str:
    """The caption's part for the certifiers that ran, or '' if none did."""
    used = [TITLES[n] for n in names if n in CERTIFIERS]
    if not used:
        return ""
    count = min(cfg.settings_of("verify").examples or examples, examples)
    others = ", ".join(f"{m:g}" for m in multiples(cfg) if m != 1.0)
    also = f" (and x{others})" if others else ""
    return f"; verified by {', '.join(used)} at l-inf eps {cfg.eval_attack.eps:.4g}{also} on {count} examples"

"""Evaluators: measure a trained model on a fixed set of test examples, per example.

An evaluator maps a batch (x, y) to the point it classifies for each example: x itself for `clean`, the
adversarial point an attack found (x where it found none) otherwise. `outcome` turns that into per-example
results, robust or not and the size of the perturbation that broke the example, so a report can take the
worst case over evaluators and read off the smallest perturbation found.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from attacks import smoothing
from attacks.autoattack import autoattack, parse_version
from attacks.pgd import eval_mode, perturbation_norm, pgd_attack, predict
from benchmark.core.config import RunConfig, SettingsGroup, register_settings, setting
from benchmark.core.data import DATASETS
from benchmark.core.errors import UserError
from benchmark.core.metrics import TORCHATTACKS, Metric
from benchmark.core.presets import PresetContext
from benchmark.core.registry import Registry
from benchmark.evaluation import verification

Attack = Callable[[nn.Module, Tensor, Tensor, RunConfig], Tensor]
Certify = Callable[[nn.Module, Tensor, Tensor, RunConfig], dict[str, Tensor]]


@dataclass(frozen=True)
class Evaluator:
    """attack: (model, x, y, cfg) -> the points to classify. settings: what its result depends on, for its key.

    A certifier has `certify` instead: (model, x, y, cfg) -> per-example fields, "robust" among them
    (certified and correct); it runs on the evaluation examples outside the attack cascade, and `metrics`
    turns its stored fields into the record's metrics.
    """

    attack: Attack | None
    description: str
    settings: Callable[[RunConfig], dict[str, Any]] = field(default=lambda cfg: {})
    certify: Certify | None = None
    metrics: Callable[[dict[str, Tensor], RunConfig], list[Metric]] | None = None
    examples: Callable[[RunConfig], int | None] = field(default=lambda cfg: None)  # a certifier's: None = all
    group: SettingsGroup | None = None  # the evaluator's own settings (certify, verify), with their budgets


@dataclass
class Outcome:
    """Per example: still classified correctly, and the norm of the perturbation that broke it (0 where the
    clean input is already wrong, NaN where the example is robust); a certifier's fields besides."""

    robust: Tensor
    distance: Tensor
    fields: dict[str, Tensor] = field(default_factory=dict)


EVALUATORS: Registry[Evaluator] = Registry("evaluator")


def register_evaluator(name: str, evaluator: Evaluator) -> None:
    EVALUATORS.add(name, evaluator)
    register_settings(evaluator.group, "evaluator", name)


def outcome(model: nn.Module, x: Tensor, x_adv: Tensor, y: Tensor, norm: str) -> Outcome:
    robust = predict(model, x_adv) == y
    distance = perturbation_norm(x_adv - x, norm)
    return Outcome(robust.cpu(), distance.masked_fill(robust, float("nan")).cpu())


def _attack_settings(cfg: RunConfig) -> dict[str, Any]:
    a = cfg.eval_attack
    return {"eps": a.eps, "step_size": a.step_size, "steps": a.steps, "restarts": a.restarts, "norm": a.norm,
            "loss": a.loss, "targeted": a.targeted}


def _pgd(model: nn.Module, x: Tensor, y: Tensor, cfg: RunConfig) -> Tensor:
    a = cfg.eval_attack
    return pgd_attack(model, x, y, a.eps, a.step_size, a.steps, a.restarts, a.norm, a.loss, a.targeted)


def autoattack_queries(cfg: RunConfig) -> int | None:
    """Square's budget inside AutoAttack: the standard 5,000 unless the version is a custom list."""
    version, _ = parse_version(cfg.eval.autoattack)
    return None if version != "custom" else cfg.eval.square_queries


def _autoattack(model: nn.Module, x: Tensor, y: Tensor, cfg: RunConfig) -> Tensor:
    a = cfg.eval_attack
    return autoattack(model, x, y, eps=a.eps, norm=a.norm, spec=cfg.eval.autoattack, seed=cfg.seed,
                      square_queries=autoattack_queries(cfg))


register_evaluator("clean", Evaluator(lambda model, x, y, cfg: x,
                                  "clean accuracy: the prediction on the unperturbed input"))
register_evaluator("pgd", Evaluator(_pgd, "PGD robust accuracy (eval_attack: norm, eps, steps, step size, restarts, "
                                      "loss, targeted; worst case over restarts)", _attack_settings))
register_evaluator("autoattack", Evaluator(
    _autoattack, "the official AutoAttack (eval.autoattack: standard, rand, or a list such as apgd-ce,apgd-t)",
    lambda cfg: {"eps": cfg.eval_attack.eps, "norm": cfg.eval_attack.norm, "version": cfg.eval.autoattack,
                 "square_queries": autoattack_queries(cfg), "seed": cfg.seed}))


@dataclass
class CertifySettings:
    """Cohen et al.'s CERTIFY for the `smoothing` evaluator (`paper`: HYDRA's N0 100, N 10,000, alpha 0.001).

    sigma None: the run's training sigma (`smoothing.sigma`, filled in when the grid is resolved). radii: the
    l2 radii at which certified accuracy is reported (0.435 is the l2 ball around the l-inf ball of 2/255 on
    32x32x3, the radius read as HYDRA's vra-s). examples: how many evaluation examples are certified (None:
    all). max_batch: noisy inputs per forward pass.
    """

    n0: int = setting(100, minimum=1, help="selection draws")
    n: int = setting(10_000, minimum=1, help="estimation draws")
    alpha: float = setting(0.001, minimum=0.0, help="failure probability of the certificate")
    sigma: float | None = setting(None, minimum=0.0, help="noise sigma (default: the training sigma)")
    radii: list[float] = setting(default_factory=lambda: [0.0, 0.25, 0.435, 0.5, 0.75, 1.0], minimum=0.0,
                                 help="l2 radii of the certified-accuracy columns")
    examples: int | None = setting(None, minimum=1, help="evaluation examples certified (default: all)")
    max_batch: int = setting(4096, minimum=1, help="noisy inputs per forward pass")


def certify_budget(ctx: PresetContext) -> dict[str, Any]:
    if ctx.preset == "smoke":
        return {"n0": 20, "n": 200, "examples": 32}
    if ctx.preset == "quick":
        return {"n": 1000} if ctx.small else {"n": 1000, "examples": 500}
    return {}


CERTIFY = SettingsGroup("certify", CertifySettings, "evaluator", budget=certify_budget)


def smoothing_sigma(cfg: RunConfig) -> float:
    sigma = cfg.settings_of("certify").sigma
    assert sigma is not None, "the grid resolution fills certify.sigma in"
    return sigma


def _certify_smoothed(model: nn.Module, x: Tensor, y: Tensor, cfg: RunConfig) -> dict[str, Tensor]:
    c = cfg.settings_of("certify")
    fields = smoothing.certify(model, x, n0=c.n0, n=c.n, alpha=c.alpha, sigma=smoothing_sigma(cfg),
                               num_classes=DATASETS.get(cfg.dataset).num_classes, max_batch=c.max_batch)
    return {**fields, "label": y.cpu(), "robust": fields["certified_class"] == y.cpu()}


def _smoothing_metrics(fields: dict[str, Tensor], cfg: RunConfig) -> list[Metric]:
    """Certified accuracy at radius 0 and at each of certify.radii (abstentions count as wrong), the average
    certified radius (0 where wrong or abstained) and PREDICT's accuracy, over the certified examples."""
    robust, radius = fields["robust"], fields["radius"]
    return [*(Metric("smoothing", "certified_acc", (robust & (radius >= r)).float().mean().item(),
                     radius=float(r)) for r in sorted({0.0, *cfg.settings_of("certify").radii})),
            Metric("smoothing", "acr", (radius * robust).mean().item()),
            Metric("smoothing", "predict_acc", (fields["predicted_class"] == fields["label"]).float().mean().item())]


def _smoothing_settings(cfg: RunConfig) -> dict[str, Any]:
    c = cfg.settings_of("certify")
    return {"n0": c.n0, "n": c.n, "alpha": c.alpha, "sigma": smoothing_sigma(cfg), "seed": cfg.seed}


register_evaluator("smoothing", Evaluator(
    None, "randomized-smoothing certification, Cohen et al.'s CERTIFY and PREDICT (certify: n0, n, alpha, "
          "sigma, radii, examples)",
    _smoothing_settings, certify=_certify_smoothed, metrics=_smoothing_metrics,
    examples=lambda cfg: cfg.settings_of("certify").examples, group=CERTIFY))

for _name, _line in (("ibp", "interval bound propagation (IBP)"),
                     ("crown", "CROWN with CROWN bounds on every ReLU input (tightest here, costliest)"),
                     ("sym", "symbolic intervals, as MixTrain's verification")):
    register_evaluator(_name, Evaluator(
        None, f"verified accuracy by {_line} at the evaluation eps and verify.eps_multiples of it (verify.*)",
        verification.certifier_settings(_name), certify=verification.certifier(_name),
        metrics=verification.certifier_metrics(_name), examples=lambda cfg: cfg.settings_of("verify").examples,
        group=verification.VERIFY))

def get_evaluator(name: str) -> Evaluator:
    """A registered evaluator, or `torchattacks:<Attack>` for any attack class of the torchattacks package."""
    if name.startswith(TORCHATTACKS):
        return torchattacks_evaluator(name.removeprefix(TORCHATTACKS))
    return EVALUATORS.get(name)


def torchattacks_norm(attack: str) -> str:
    """The threat model of a torchattacks attack: its l2 attacks say so in their names (PGDL2, ...)."""
    return "l2" if "L2" in attack else "linf"


def torchattacks_evaluator(attack: str) -> Evaluator:
    """Robust accuracy under torchattacks' `attack`, built with the run's eval eps (and steps, step size)
    where its constructor takes them; everything else keeps torchattacks' defaults. Examples the model
    already gets wrong are left as they are (as every evaluator does), and the attack's threat model must be
    the evaluation's (checked when the grid is resolved)."""
    try:
        import torchattacks
    except ImportError:
        raise UserError("torchattacks evaluators need the torchattacks package: pip install torchattacks") from None
    cls = getattr(torchattacks, attack, None)
    if not isinstance(cls, type) or not issubclass(cls, torchattacks.attack.Attack):
        raise UserError(f"torchattacks has no attack {attack!r}")
    accepted = inspect.signature(cls.__init__).parameters

    def offered(cfg: RunConfig) -> dict[str, Any]:
        a = cfg.eval_attack
        return {k: v for k, v in {"eps": a.eps, "steps": a.steps, "alpha": a.step_size}.items() if k in accepted}

    def run(model: nn.Module, x: Tensor, y: Tensor, cfg: RunConfig) -> Tensor:
        with eval_mode(model):
            x_adv = cls(model, **offered(cfg))(x, y)
        correct = (predict(model, x) == y).view(-1, *[1] * (x.dim() - 1))
        return torch.where(correct, x_adv, x)

    return Evaluator(run, f"torchattacks' {attack}", lambda cfg: {"attack": attack, **offered(cfg)})


def scaled_attack(cfg: RunConfig, multiple: float) -> RunConfig:
    """cfg with the evaluation eps and step size scaled by `multiple` (the eps sweep, the large-eps check)."""
    a = cfg.eval_attack
    return cfg.replace(eval_attack=dataclasses.replace(a, eps=a.eps * multiple, step_size=a.step_size * multiple))


def run_evaluator(evaluator: Evaluator, model: nn.Module, x: Tensor, y: Tensor, cfg: RunConfig) -> Outcome:
    """One batch; the model's mode and parameter gradients are left as they were."""
    if evaluator.certify is not None:
        fields = {k: v.cpu() for k, v in evaluator.certify(model, x, y, cfg).items()}
        return Outcome(fields["robust"], torch.full((len(y),), float("nan")), fields)
    with torch.enable_grad():
        x_adv = evaluator.attack(model, x, y, cfg)
    return outcome(model, x, x_adv, y, cfg.eval_attack.norm)


def describe(cfg: RunConfig, examples: int, names: list[str]) -> str:
    """One line for a table's caption: the attacks, in the order they ran, and on how many examples."""
    parts = []
    for name in names:
        if name == "pgd":
            a = cfg.eval_attack
            restarts = f" x {a.restarts} restarts" if a.restarts > 1 else ""
            loss = "" if a.loss == "ce" and not a.targeted else f" ({'targeted ' if a.targeted else ''}{a.loss} loss)"
            parts.append(f"PGD-{a.steps}{restarts}{loss}, step {a.step_size:.4g}")
        elif name == "autoattack":
            queries = autoattack_queries(cfg)
            square = f", Square {queries} queries" if queries and "square" in cfg.eval.autoattack else ""
            parts.append(f"AutoAttack {cfg.eval.autoattack}{square}")
        elif name != "clean" and get_evaluator(name).certify is None:
            parts.append(name)
    norm = "l-inf" if cfg.eval_attack.norm == "linf" else cfg.eval_attack.norm
    attacks = " then ".join(parts) if parts else "no attack"
    text = f"{norm} eps {cfg.eval_attack.eps:.4g}: {attacks}; {examples} test examples"
    text += verification.describe(cfg, names, examples)
    if "smoothing" in names:
        c = cfg.settings_of("certify")
        text += (f"; randomized smoothing sigma {smoothing_sigma(cfg):g}, N0 {c.n0}, N {c.n}, alpha {c.alpha:g} "
                 f"on {min(c.examples or examples, examples)} examples")
    return text


"""Self-checks for gradient masking and unreliable evaluation, recorded with every evaluation.

A pruned network can look robust because its gradients are masked rather than because it is robust. Each
check looks for one symptom and returns a flag with a one-line detail:

- randomness: the same input gives different outputs (attacks then chase noise);
- zero_gradients: the attack loss has zero or vanishing input gradients on a large share of examples;
- autoattack_vs_pgd: AutoAttack leaves standing examples that PGD broke, so its own robust accuracy would be
  above PGD's (AutoAttack is run on a sample of PGD's successes, since in the cascade it never sees them);
- black_box: Square, which needs no gradients, breaks examples every white-box attack left standing;
- eps_monotone: examples robust at a larger eps but broken at a smaller one (true robust accuracy cannot rise);
- eps_falls: robust accuracy above chance that does not fall from the smallest to the largest sweep eps;
- large_eps: robust accuracy above chance at an eps where every input can be moved to the same grey image.

"Beyond noise" is a one-sided binomial test: a count is flagged when it is significantly (p < 0.01) above
what a tolerated rate would give, so a handful of unlucky examples does not raise a flag.
"""

from __future__ import annotations

import dataclasses
import math
from typing import TYPE_CHECKING, Any

import torch

from attacks.pgd import attack_loss
from benchmark.core.config import RunConfig
from benchmark.core.data import DATASETS
from benchmark.evaluation.evaluators import Outcome, scaled_attack

if TYPE_CHECKING:  # the evaluation runs the checks; they only use the session it hands them
    from benchmark.evaluation.cascade import Evaluating

SIGNIFICANCE = 0.01
VANISHING_GRADIENT = 1e-10  # l1 norm of an example's input gradient below which it counts as vanished
TOLERATED = {  # the rate of each symptom an honest evaluation may show by chance
    "zero_gradients": 0.10,
    "autoattack_vs_pgd": 0.05,
    "black_box": 0.02,
    "eps_monotone": 0.01,
}
RANDOMNESS = 1e-4  # largest tolerated output difference between two passes, relative to the largest logit
FLAT = 0.01  # a sweep whose accuracy falls by less than this (as a fraction) from smallest to largest eps
LARGE_LINF_EPS = 0.5  # l-inf: every image in [0, 1] is within 0.5 of the all-0.5 image


def beyond(count: int, total: int, rate: float) -> bool:
    """Whether `count` of `total` is significantly above `rate`."""
    from scipy.stats import binomtest  # about a second to import; only an evaluation needs it

    return total > 0 and count > rate * total and binomtest(count, total, rate, "greater").pvalue < SIGNIFICANCE


def check(name: str, flagged: bool, detail: str) -> dict[str, Any]:
    return {"name": name, "flagged": bool(flagged), "detail": detail}


def run_checks(session: Evaluating, outcomes: dict[str, Outcome], sweep: list[tuple[float, float, Outcome]],
               keys: list[str]) -> list[dict[str, Any]]:
    """Every check that applies to this evaluation, in a fixed order."""
    results = [randomness(session, outcomes["clean"]), zero_gradients(session, outcomes["clean"])]
    names = list(outcomes)
    if "pgd" in outcomes and "autoattack" in outcomes:
        results.append(autoattack_vs_pgd(session, outcomes, keys[names.index("pgd")]))
    results.append(black_box(session, outcomes, keys[-1]))
    if len(sweep) >= 2:
        results += eps_sweep_checks(sweep, outcomes["clean"], session.cfg)
    results.append(large_eps(session, outcomes["clean"], keys[0]))
    return results


def _first(mask: torch.Tensor, k: int) -> torch.Tensor:
    return mask.nonzero().flatten()[:k]


def randomness(session: Evaluating, clean: Outcome) -> dict[str, Any]:
    idx = torch.arange(min(session.cfg.eval.check_examples, len(clean.robust)))
    x, _ = session.take(idx)
    with torch.no_grad():
        first, second = session.model(x), session.model(x)
    scale = first.abs().max().clamp_min(1e-12)
    relative = ((first - second).abs().max() / scale).item()
    changed = int((first.argmax(1) != second.argmax(1)).sum())
    return check("randomness", relative > RANDOMNESS or changed > 0,
                 f"two passes over {len(idx)} inputs differ by {relative:.2g} (relative), {changed} predictions")


def zero_gradients(session: Evaluating, clean: Outcome) -> dict[str, Any]:
    idx = _first(clean.robust, session.cfg.eval.check_examples)
    if len(idx) == 0:
        return check("zero_gradients", False, "no correctly classified example to take gradients at")
    x, y = session.take(idx)
    x.requires_grad_(True)
    with torch.enable_grad():
        (grad,) = torch.autograd.grad(attack_loss(session.cfg.eval_attack.loss, y)(session.model(x)), x)
    vanished = int((grad.flatten(1).abs().sum(1) < VANISHING_GRADIENT).sum())
    return check("zero_gradients", beyond(vanished, len(idx), TOLERATED["zero_gradients"]),
                 f"{vanished} of {len(idx)} correct examples have a vanishing input gradient of the attack loss")


def autoattack_vs_pgd(session: Evaluating, outcomes: dict[str, Outcome], pgd_key: str) -> dict[str, Any]:
    broken_by_pgd = outcomes["clean"].robust & ~outcomes["pgd"].robust
    idx = _first(broken_by_pgd, session.cfg.eval.check_examples)
    aa, _ = session.run("autoattack", session.cfg, idx, [pgd_key, "on PGD's successes"], label="check:autoattack")
    missed = int(aa.robust[idx].sum())
    excess = missed / max(len(idx), 1) * int(broken_by_pgd.sum()) / len(broken_by_pgd)
    return check("autoattack_vs_pgd", beyond(missed, len(idx), TOLERATED["autoattack_vs_pgd"]),
                 f"AutoAttack left {missed} of {len(idx)} examples PGD broke standing (its own robust accuracy "
                 f"would be about {100 * excess:.1f} points above the cascade's)")


def _square(cfg: RunConfig) -> RunConfig:
    """Square alone, with another seed than AutoAttack's own Square (which may already have run)."""
    return cfg.replace(seed=cfg.seed + 1, eval=dataclasses.replace(cfg.eval, autoattack="square"))


def black_box(session: Evaluating, outcomes: dict[str, Outcome], last_key: str) -> dict[str, Any]:
    standing = list(outcomes.values())[-1].robust
    idx = _first(standing, session.cfg.eval.check_examples)
    square, _ = session.run("autoattack", _square(session.cfg), idx, [last_key, "white-box survivors"],
                            label="check:square")
    broke = len(idx) - int(square.robust[idx].sum())
    return check("black_box", beyond(broke, len(idx), TOLERATED["black_box"]),
                 f"Square ({session.cfg.eval.square_queries} queries) broke {broke} of {len(idx)} examples every "
                 "white-box attack left standing")


def eps_sweep_checks(sweep: list[tuple[float, float, Outcome]], clean: Outcome, cfg: RunConfig) -> \
        list[dict[str, Any]]:
    correct = int(clean.robust.sum())
    rises = torch.zeros_like(clean.robust)
    for (_, _, smaller), (_, _, larger) in zip(sweep, sweep[1:], strict=False):
        rises |= larger.robust & ~smaller.robust
    n_rises = int(rises.sum())
    (m_low, eps_low, low), (m_high, eps_high, high) = sweep[0], sweep[-1]
    n, classes = len(clean.robust), _num_classes(cfg)
    acc_low, acc_high = low.robust.float().mean().item(), high.robust.float().mean().item()
    flat = beyond(int(low.robust.sum()), n, 1 / classes) and acc_low - acc_high < FLAT
    return [
        check("eps_monotone", beyond(n_rises, correct, TOLERATED["eps_monotone"]),
              f"{n_rises} of {correct} correct examples are robust at a larger sweep eps but broken at a smaller"),
        check("eps_falls", flat, f"robust accuracy {100 * acc_low:.1f}% at eps {eps_low:.4g} ({m_low:g}x), "
                                 f"{100 * acc_high:.1f}% at eps {eps_high:.4g} ({m_high:g}x)"),
    ]


def large_eps(session: Evaluating, clean: Outcome, clean_key: str) -> dict[str, Any]:
    cfg = session.cfg
    eps = LARGE_LINF_EPS if cfg.eval_attack.norm == "linf" else LARGE_LINF_EPS * math.sqrt(_input_size(session))
    big = scaled_attack(cfg, eps / cfg.eval_attack.eps)
    k = min(cfg.eval.check_examples, len(clean.robust))
    outcome, _ = session.run("pgd", big, clean.robust[:k].nonzero().flatten(), [clean_key], label="check:large_eps")
    robust = int(outcome.robust[:k].sum())
    return check("large_eps", beyond(robust, k, 1 / _num_classes(cfg)),
                 f"{robust} of {k} examples robust at {cfg.eval_attack.norm} eps {eps:.3g}, where every input "
                 f"can be moved to the same grey image (chance: 1 in {_num_classes(cfg)})")


def _num_classes(cfg: RunConfig) -> int:
    return DATASETS.get(cfg.dataset).num_classes


def _input_size(session: Evaluating) -> int:
    x, _ = session.take(torch.arange(1))
    return x[0].numel()


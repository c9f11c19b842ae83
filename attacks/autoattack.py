"""The one adapter to the official AutoAttack code (PyPI `pyautoattack`); nothing else imports it.

AutoAttack runs its attacks in sequence, each on the examples the ones before it left standing, and returns
per example the adversarial point it found (the input itself where none). Versions: `standard` (APGD-CE,
APGD-T, FAB-T, Square), `rand` (APGD-CE and APGD-DLR with expectation over transformation, for randomized
models) and custom lists such as `apgd-ce,apgd-t,square`, the cheaper tier of the `quick` preset.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

from torch import Tensor, nn

from attacks.pgd import eval_mode
from benchmark.core.errors import UserError

VERSIONS = ("standard", "rand")
ATTACKS = ("apgd-ce", "apgd-dlr", "apgd-t", "fab", "fab-t", "square")
NORMS = {"linf": "Linf", "l2": "L2"}


def parse_version(spec: str) -> tuple[str, list[str] | None]:
    """`standard` / `rand`, or a comma list of AutoAttack's attacks -> (version, attacks or None)."""
    if spec in VERSIONS:
        return spec, None
    attacks = [a.strip() for a in spec.split(",") if a.strip()]
    unknown = [a for a in attacks if a not in ATTACKS]
    if not attacks or unknown:
        raise UserError(f"unknown AutoAttack version or attack {spec!r}; valid: {', '.join(VERSIONS)}, or a comma "
                        f"list of {', '.join(ATTACKS)}")
    return "custom", attacks


def autoattack(model: nn.Module, x: Tensor, y: Tensor, *, eps: float, norm: str, spec: str, seed: int,
               square_queries: int | None = None) -> Tensor:
    """AutoAttack's adversarial points for (x, y), in [0, 1] pixels (the model normalises inside itself).

    square_queries overrides Square's query budget (5,000 in the standard version).
    """
    try:
        from pyautoattack import AutoAttack
    except ImportError:
        raise UserError("the autoattack evaluator needs the official code: pip install pyautoattack") from None
    if norm not in NORMS:
        raise UserError(f"AutoAttack supports norms {', '.join(NORMS)}, not {norm!r}")
    version, attacks = parse_version(spec)
    grads = [p.grad for p in model.parameters()]  # FAB calls backward(), which would accumulate into them
    with eval_mode(model), _quiet():
        adversary = AutoAttack(model, attacks=attacks, device=x.device, eps=eps, norm=NORMS[norm], seed=seed,
                               version=version)
        adversary.verbose = False
        if square_queries is not None:
            adversary.square.n_queries = square_queries
        if attacks is not None:  # a custom list: the standard version's settings for each attack
            adversary.apgd.n_restarts = 1
            adversary.apgd_targeted.n_target_classes = 9
            adversary.fab.n_target_classes = 9
        x_adv, _ = adversary.run_standard_evaluation(x, y, batch_size=len(x))
    for p, grad in zip(model.parameters(), grads, strict=True):
        p.grad = grad
    return x_adv.detach()


@contextmanager
def _quiet() -> Iterator[None]:
    """AutoAttack logs its own checks as warnings; rpbench runs and records its own (benchmark/evaluation/checks.py)."""
    logger = logging.getLogger("auto-attack")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)

"""Evaluator contracts, parametrized over the registry (and two torchattacks attacks, which go through the same
lookup), so an evaluator added later is checked too: robust implies correct on the clean input, attack points stay
in the eps ball and in [0, 1], an input the model already gets wrong is left as it is, the model's mode and
parameter gradients are left as they were, and a bound certifier's verified example survives a strong attack (with
a check that this last test catches a certifier that claims too much).

Everything runs on one batch of digits test images that holds misclassified examples next to correct ones: an
evaluator that counted a wrong example robust, or moved it, has the chance to show it.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
from collections.abc import Callable
from dataclasses import dataclass

import pytest
import torch
from torch import Tensor, nn

from attacks import bounds
from attacks.pgd import perturbation_norm, pgd_attack, predict
from attacks.smoothing import ABSTAIN
from benchmark.core.config import RunConfig
from benchmark.core.errors import UserError
from benchmark.evaluation import verification
from benchmark.evaluation.evaluators import EVALUATORS, Evaluator, Outcome, get_evaluator, run_evaluator
from tests.conftest import smoke_config

TORCHATTACKS = ["torchattacks:PGD", "torchattacks:FGSM"]
NAMES = [*EVALUATORS.names(), *TORCHATTACKS]
CERTIFIERS = list(verification.CERTIFIERS)  # the deterministic bound certifiers
ATTACK_EPS = {"linf": 0.1, "l2": 0.5}
# Where the naturally trained cnn-small has some, not all, correct examples verified (IBP is the loosest)
VERIFY_EPS = {"ibp": 0.01, "crown": 0.04, "sym": 0.04}
CHEAP = {"autoattack": {"eval.autoattack": "apgd-ce"},
         "smoothing": {"certify.sigma": 0.25, "certify.n0": 20, "certify.n": 200}}



def config(name: str, norm: str = "linf") -> RunConfig:
    """The smoke preset, resolved as the CLI does, with cheap settings for `name` at its test eps."""
    eps = VERIFY_EPS[name] if name in VERIFY_EPS else ATTACK_EPS[norm]
    settings = {"eval_attack.norm": norm, "eval_attack.eps": eps, "verify.eps_multiples": [0.5],
                **CHEAP.get(name, {})}
    return smoke_config(**settings)


def seeded_run(evaluator: Evaluator, model: nn.Module, x: Tensor, y: Tensor, cfg: RunConfig) -> Outcome:
    torch.manual_seed(0)
    return run_evaluator(evaluator, model, x, y, cfg)


@dataclass
class Run:
    outcome: Outcome
    points: Tensor | None  # the points an attack handed to `outcome`; None for a certifier


def run_capturing(name: str, model: nn.Module, x: Tensor, y: Tensor, cfg: RunConfig) -> Run:
    """run_evaluator on the registered evaluator, its attack wrapped to keep the points it returns."""
    evaluator = get_evaluator(name)
    seen: list[Tensor] = []
    if evaluator.attack is not None:
        attack = evaluator.attack

        def capture(model: nn.Module, x: Tensor, y: Tensor, cfg: RunConfig) -> Tensor:
            seen.append(attack(model, x, y, cfg))
            return seen[-1]

        evaluator = dataclasses.replace(evaluator, attack=capture)
    result = seeded_run(evaluator, model, x, y, cfg)
    return Run(result, seen[0] if seen else None)


def margins(model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
    """z_y - max_{j != y} z_j per example: positive exactly where the model is right."""
    with torch.no_grad():
        logits = model(x)
    true = logits.gather(1, y[:, None])[:, 0]
    return true - logits.scatter(1, y[:, None], float("-inf")).amax(1)


@pytest.fixture(scope="module")
def model(trained_digits_model: nn.Module) -> nn.Module:
    """A copy of conftest's naturally trained cnn-small (a Sequential the bound certifiers take): tests that
    switch its mode cannot disturb the session's model."""
    return copy.deepcopy(trained_digits_model).eval()


@pytest.fixture(scope="module")
def batch(model: nn.Module) -> tuple[Tensor, Tensor]:
    """48 digits test images: up to 8 the model gets wrong, then correct ones."""
    from benchmark.core.data import DATASETS, load_dataset

    _, test = load_dataset(DATASETS.get("digits"), None, False)
    x, y = test.tensors
    right = predict(model, x) == y
    picked = torch.cat([(~right).nonzero().flatten()[:8], right.nonzero().flatten()])[:48]
    assert (~right[picked]).sum() >= 2, "the batch needs misclassified examples for the contracts to bite"
    return x[picked], y[picked]


@pytest.fixture(scope="module")
def correct(model: nn.Module, batch: tuple[Tensor, Tensor]) -> Tensor:
    x, y = batch
    return predict(model, x) == y


@pytest.fixture(scope="module")
def evaluated(model: nn.Module, batch: tuple[Tensor, Tensor]) -> Callable[..., Run]:
    """Each evaluator's run on the batch at its test settings (and norm), computed once and shared by the tests."""

    @functools.cache
    def run(name: str, norm: str) -> Run:
        return run_capturing(name, model, *batch, config(name, norm))

    return lambda name, norm="linf": run(name, norm)


@pytest.fixture(scope="module")
def strong_pgd(model: nn.Module, batch: tuple[Tensor, Tensor]) -> Callable[[float], Tensor]:
    """PGD's points at l-inf eps: 50 steps of 2.5 eps / 50, 5 restarts, the margin loss (computed once per eps)."""

    @functools.cache
    def attack(eps: float) -> Tensor:
        torch.manual_seed(0)
        return pgd_attack(model, *batch, eps, 2.5 * eps / 50, 50, restarts=5, norm="linf", loss="margin")

    return attack


def _needs_torchattacks(name: str) -> None:
    if name.startswith("torchattacks:"):
        pytest.importorskip("torchattacks")


@pytest.mark.parametrize("name", NAMES)
def test_an_evaluator_is_either_an_attack_or_a_certifier_with_metrics(name):
    _needs_torchattacks(name)
    evaluator = get_evaluator(name)
    assert (evaluator.attack is None) != (evaluator.certify is None)
    assert (evaluator.metrics is not None) == (evaluator.certify is not None)
    assert isinstance(evaluator.settings(config(name)), dict)


@pytest.mark.parametrize("name", NAMES)
def test_robust_implies_correct_on_the_clean_input(name, evaluated, correct, batch):
    _needs_torchattacks(name)
    result = evaluated(name).outcome
    robust = result.robust
    assert robust.dtype == torch.bool and robust.shape == correct.shape
    if name == "smoothing":
        # the smoothed classifier may disagree with the base model on x: certified means its class is the label
        fields = result.fields
        assert torch.equal(fields["label"], batch[1].cpu())
        assert torch.equal(robust, fields["certified_class"] == fields["label"])
        assert (fields["certified_class"][robust] != ABSTAIN).all() and (fields["radius"][robust] > 0).all()
        assert robust.any()
        return
    assert not (robust & ~correct).any(), f"robust but wrong on the clean input: {(robust & ~correct).nonzero()}"
    if name == "clean":
        assert torch.equal(robust, correct)
    elif get_evaluator(name).certify is not None:
        assert 0 < robust.sum() < correct.sum()  # verifies some, not all: the check is not vacuous
    else:
        assert robust.sum() < correct.sum()  # the attack breaks something
        assert torch.equal(result.distance.isnan(), robust)  # NaN exactly where robust
        assert (result.distance[~robust] <= config(name).eval_attack.eps + 1e-6).all()


@pytest.mark.parametrize(("name", "norm"), [
    *[(name, "linf") for name in NAMES],
    *[(name, "l2") for name in [*EVALUATORS.names(), "torchattacks:PGDL2"]]])
def test_attack_points_stay_in_the_eps_ball_and_in_pixel_range(name, norm, evaluated, batch):
    _needs_torchattacks(name)
    if get_evaluator(name).attack is None:
        pytest.skip("a certifier returns no points to classify")
    x, _ = batch
    x_adv = evaluated(name, norm).points
    assert x_adv is not None and x_adv.shape == x.shape
    distance = perturbation_norm(x_adv - x, norm)
    eps = config(name, norm).eval_attack.eps
    assert (distance <= eps + 1e-6).all(), f"largest {norm} perturbation {distance.max():.6g} > eps {eps}"
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    if name != "clean":
        assert (distance > 0).any()  # it did move points


@pytest.mark.parametrize("name", NAMES)
def test_an_input_the_model_already_gets_wrong_is_left_as_it_is(name, evaluated, batch, correct):
    """Outcome's contract: distance 0 where the clean input is already wrong (nothing needed to break it)."""
    _needs_torchattacks(name)
    if get_evaluator(name).attack is None:
        pytest.skip("a certifier returns no points to classify")
    x, _ = batch
    run, wrong = evaluated(name), ~correct
    assert run.points is not None and torch.equal(run.points[wrong], x[wrong])
    assert (run.outcome.distance[wrong] == 0).all()


def test_an_attack_of_another_norm_than_the_evaluation_is_refused():
    _needs_torchattacks("torchattacks:PGD")
    with pytest.raises(UserError, match="torchattacks:PGD attacks in linf, but eval_attack.norm is l2"):
        smoke_config(**{"eval_attack.norm": "l2", "eval_attack.eps": 0.5,
                        "eval.evaluators": ["clean", "torchattacks:PGD"]})


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("name", NAMES)
def test_the_model_mode_is_restored(name, training, model, batch):
    _needs_torchattacks(name)
    x, y = batch
    model.train(training)
    try:
        seeded_run(get_evaluator(name), model, x[:8], y[:8], config(name))
        assert [m.training for m in model.modules()] == [training] * len(list(model.modules()))
    finally:
        model.eval()


@pytest.mark.parametrize("name", NAMES)
def test_parameter_gradients_are_left_as_they_were(name, model, batch):
    """run_evaluator's contract: a model evaluated between a backward pass and its optimizer step must step with
    its own gradients (and keep training the parameters it trained)."""
    _needs_torchattacks(name)
    x, y = batch
    params = list(model.parameters())
    params[0].requires_grad_(False)
    try:
        for p in params:
            p.grad = None
        seeded_run(get_evaluator(name), model, x[:8], y[:8], config(name))
        assert all(p.grad is None for p in params)
        for i, p in enumerate(params):
            p.grad = torch.full_like(p, float(i + 1))
        seeded_run(get_evaluator(name), model, x[:8], y[:8], config(name))
        assert all(p.grad is not None and (p.grad == i + 1).all() for i, p in enumerate(params))
        assert [p.requires_grad for p in params] == [False] + [True] * (len(params) - 1)
    finally:
        for p in params:
            p.grad = None
            p.requires_grad_(True)


def unsound(fields: dict[str, Tensor], multiples: list[float], model: nn.Module, x: Tensor, y: Tensor,
            x_adv: Tensor) -> list[str]:
    """What an attack's points `x_adv` (in the eps ball) show wrong with a bound certifier's fields: a verified
    example broken, or a lower bound on the margin above the margin at a point of the box (x_adv, or x itself)."""
    problems = []
    verified = fields["robust"]
    broken = (predict(model, x) == y) & (predict(model, x_adv) != y)
    if (verified & broken).any():
        problems.append(f"verified yet broken: {(verified & broken).nonzero().flatten().tolist()}")
    if not torch.equal(verified, fields[verification.margin_field(1.0)] > 0):
        problems.append("robust is not 'lower bound on the margin > 0'")
    for multiple in multiples:
        lower = fields[verification.margin_field(multiple)]
        for point, at in ((x, "the clean input"), (x_adv, "the attack's point"))[: 1 + (multiple == 1.0)]:
            above = (lower > margins(model, point, y) + 1e-5).nonzero().flatten()
            if len(above):
                problems.append(f"margin bound at {multiple:g}x eps above the margin at {at}: {above.tolist()}")
    return problems


@pytest.mark.parametrize("name", CERTIFIERS)
def test_a_verified_example_is_never_broken_by_a_strong_attack(name, model, batch, correct, evaluated, strong_pgd):
    """PGD (50 steps, 5 restarts, margin loss) at the verification eps breaks no verified example, and no point it
    reaches, nor the clean input, has a margin below the certifier's lower bound on it."""
    x, y = batch
    eps = VERIFY_EPS[name]
    x_adv = strong_pgd(eps)
    assert (x_adv - x).abs().max() <= eps + 1e-6
    outcome = evaluated(name).outcome
    assert 0 < outcome.robust.sum() < correct.sum()  # it verifies some, not all: the check is not vacuous
    assert unsound(outcome.fields, verification.multiples(config(name)), model, x, y, x_adv) == []


def test_the_soundness_check_catches_a_certifier_that_claims_the_clean_margin_for_the_whole_box(
        model, batch, strong_pgd, monkeypatch):
    def clean_margins(model: nn.Module, x: Tensor, y: Tensor, eps: float, method: str) -> Tensor:
        logits = model(x)
        others = torch.ones_like(logits, dtype=torch.bool).scatter(1, y[:, None], False)
        return (logits.gather(1, y[:, None]) - logits)[others].view(len(x), -1)  # z_y - z_j at x, j != y

    monkeypatch.setattr(bounds, "margin_bounds", clean_margins)
    x, y = batch
    cfg = config("crown")
    fields = run_capturing("crown", model, x, y, cfg).outcome.fields
    problems = unsound(fields, verification.multiples(cfg), model, x, y, strong_pgd(cfg.eval_attack.eps))
    assert [p.split(":")[0] for p in problems] == [
        "verified yet broken", "margin bound at 1x eps above the margin at the attack's point"]

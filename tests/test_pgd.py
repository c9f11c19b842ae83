import pytest
import torch

from attacks.pgd import cross_entropy_loss, pgd_linf, pgd_robust, predict
from benchmark.objectives import OBJECTIVES, build_objective
from tests.conftest import smoke_config


@pytest.mark.parametrize("start", ["uniform", "normal", "none"])
@pytest.mark.parametrize("eps", [0.05, 0.3])
def test_perturbation_stays_in_the_eps_ball_and_in_pixel_range(trained_digits_model, digits_batch, start, eps):
    x, y = digits_batch
    x_adv = pgd_linf(trained_digits_model, x, cross_entropy_loss(y), eps, eps / 4, 7, start=start)
    assert (x_adv - x).abs().max() <= eps + 1e-6
    assert x_adv.min() >= 0 and x_adv.max() <= 1


def test_robust_accuracy_is_at_most_clean_and_pgd_does_real_damage(trained_digits_model, digits_batch):
    x, y = digits_batch
    clean = predict(trained_digits_model, x) == y
    robust = pgd_robust(trained_digits_model, x, y, eps=0.2, step_size=0.05, steps=10, restarts=2)
    assert clean.float().mean() > 0.8
    assert torch.all(robust <= clean)
    assert robust.float().mean() < clean.float().mean() - 0.2  # a naturally trained model is not robust


def test_more_steps_and_restarts_are_never_weaker(trained_digits_model, digits_batch):
    x, y = digits_batch
    torch.manual_seed(0)
    weak = pgd_robust(trained_digits_model, x, y, eps=0.1, step_size=0.025, steps=1, restarts=1).float().mean()
    torch.manual_seed(0)
    strong = pgd_robust(trained_digits_model, x, y, eps=0.1, step_size=0.025, steps=20, restarts=3).float().mean()
    assert strong <= weak


@pytest.mark.parametrize("training", [True, False])
def test_model_mode_is_restored(trained_digits_model, digits_batch, training):
    x, y = digits_batch
    trained_digits_model.train(training)
    pgd_robust(trained_digits_model, x, y, eps=0.1, step_size=0.05, steps=2)
    assert trained_digits_model.training is training
    trained_digits_model.eval()


def test_attack_leaves_parameter_gradients_alone(trained_digits_model, digits_batch):
    x, y = digits_batch
    for p in trained_digits_model.parameters():
        p.grad = None
    pgd_linf(trained_digits_model, x, cross_entropy_loss(y), 0.1, 0.05, 3)
    assert all(p.grad is None for p in trained_digits_model.parameters())


@pytest.mark.parametrize("name", OBJECTIVES.names())
def test_every_objective_gives_a_finite_differentiable_loss(name, tiny_model, digits_batch):
    x, y = digits_batch
    objective = build_objective(name, smoke_config())
    tiny_model.train()
    loss, logits = objective.loss(tiny_model, x, y)
    assert torch.isfinite(loss) and logits.shape == (len(y), 10)
    loss.backward()
    assert tiny_model.training
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in tiny_model.parameters())

import pytest
import torch

from attacks.pgd import LOSSES, NORMS, attack_loss, cross_entropy_loss, pgd, pgd_linf, pgd_robust, predict
from benchmark.training.objectives import OBJECTIVES, build_objective
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


@pytest.mark.parametrize("eps", [0.5, 2.0])
def test_l2_perturbation_stays_in_the_ball_and_in_pixel_range(trained_digits_model, digits_batch, eps):
    x, y = digits_batch
    x_adv = pgd(trained_digits_model, x, cross_entropy_loss(y), eps, eps / 4, 10, norm="l2")
    assert (x_adv - x).flatten(1).norm(dim=1).max() <= eps + 1e-5
    assert x_adv.min() >= 0 and x_adv.max() <= 1


@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize("targeted", [False, True])
@pytest.mark.parametrize("norm", NORMS)
def test_every_loss_norm_and_target_mode_attacks_for_real(trained_digits_model, digits_batch, loss, targeted, norm):
    x, y = digits_batch
    eps = 0.2 if norm == "linf" else 1.5
    clean = predict(trained_digits_model, x) == y
    robust = pgd_robust(trained_digits_model, x, y, eps, eps / 4, 10, restarts=1, norm=norm, loss=loss,
                        targeted=targeted)
    assert torch.all(robust <= clean)
    assert robust.float().mean() < clean.float().mean() - 0.2


def test_margin_and_dlr_losses_are_positive_exactly_when_misclassified():
    logits = torch.tensor([[3.0, 1.0, 0.0, -1.0], [0.0, 2.0, 1.0, -1.0]])
    y = torch.tensor([0, 0])
    per_example = [attack_loss(name, y[i:i + 1])(logits[i:i + 1]) for name in ("margin", "dlr") for i in range(2)]
    assert per_example[0] < 0 and per_example[1] > 0 and per_example[2] < 0 and per_example[3] > 0
    assert attack_loss("dlr", y[:1])(logits[:1]).item() == pytest.approx((1.0 - 3.0) / (3.0 - 0.0))


torchattacks = pytest.importorskip("torchattacks")


def test_our_pgd_is_at_least_as_strong_as_torchattacks(trained_digits_model):
    """Same settings (l-inf, CE, eps 0.1, 10 steps of 0.025) on the 360 digits test images."""
    from benchmark.core.data import DATASETS, load_dataset

    _, test = load_dataset(DATASETS.get("digits"), None, False)
    x, y = test.tensors
    model = trained_digits_model
    torch.manual_seed(0)
    theirs_fixed = predict(model, torchattacks.PGD(model, eps=0.1, alpha=0.025, steps=10, random_start=False)(x, y))
    ours_fixed = predict(model, pgd(model, x, cross_entropy_loss(y), 0.1, 0.025, 10, start="none"))
    assert torch.equal(ours_fixed == y, theirs_fixed == y)  # without random starts: the same attack

    theirs = []
    for seed in range(3):  # the same random start (both draw it first, uniformly in the ball): the same attack
        torch.manual_seed(seed)
        theirs.append(predict(model, torchattacks.PGD(model, eps=0.1, alpha=0.025, steps=10)(x, y)) == y)
        torch.manual_seed(seed)
        ours = predict(model, pgd(model, x, cross_entropy_loss(y), 0.1, 0.025, 10, start="uniform")) == y
        assert torch.equal(ours, theirs[-1])
    theirs = [t.float() for t in theirs]
    ours_restarts = pgd_robust(model, x, y, 0.1, 0.025, 10, restarts=5).float().mean()
    assert ours_restarts <= min(t.mean() for t in theirs)  # worst case over restarts beats any single run

"""Every registered name builds; presets resolve for every dataset; unknown names list the valid ones."""

import pytest

from benchmark.core.data import DATASETS
from benchmark.core.errors import UserError
from benchmark.core.models import ARCHS
from benchmark.core.presets import PRESETS
from benchmark.core.registry import Registry
from benchmark.training.objectives import OBJECTIVES, build_objective
from methods import METHODS, Pruner, build_pruner
from tests.conftest import resolved, smoke_config


@pytest.mark.parametrize("name", METHODS.names())
def test_every_method_builds_and_describes_itself(name):
    pruner = build_pruner(name, smoke_config())
    assert isinstance(pruner, Pruner) and pruner.name == name
    assert pruner.description and pruner.taxonomy.schedule in ("one-shot", "iterative")
    assert pruner.taxonomy.when in ("after training", "before training", "during training")


@pytest.mark.parametrize("name", OBJECTIVES.names())
def test_every_objective_builds(name):
    assert build_objective(name, smoke_config()).name == name


@pytest.mark.parametrize("preset", PRESETS.names())
@pytest.mark.parametrize("dataset", DATASETS.names())
def test_every_preset_resolves_for_every_dataset(preset, dataset):
    cfg = resolved({"preset": preset, "data": dataset})
    info = DATASETS.get(dataset)
    assert cfg.arch in ARCHS and cfg.train_attack.eps == info.eps and cfg.eval_attack.eps == info.eps
    assert cfg.eval_attack.steps > cfg.train_attack.steps  # evaluation is stronger than training
    assert cfg.pretrain.epochs > 0
    travel = cfg.train_attack.steps * cfg.train_attack.step_size
    assert travel >= 2 * cfg.train_attack.eps  # a training attack short enough to mask gradients is refused


@pytest.mark.parametrize(("steps", "step_size"), [(10, 0.025), (20, 0.025), (5, 0.05), (2, 0.125)])
def test_short_training_attacks_take_longer_steps(steps, step_size):
    """The dataset's step (eps/4) at 10 steps or more; below, the step that still travels 2.5 eps."""
    cfg = resolved({"data": "fashion-mnist", "train_attack.steps": steps})
    assert cfg.train_attack.step_size == pytest.approx(step_size)


def test_paper_preset_is_hydras_protocol():
    cfg = resolved({"preset": "paper", "data": "cifar10"})
    prune = cfg.settings_of("hydra")
    assert (cfg.pretrain.epochs, prune.epochs, cfg.finetune.epochs) == (100, 20, 100)
    assert (cfg.pretrain.lr, prune.lr, cfg.finetune.lr) == (0.1, 0.1, 0.01)
    assert cfg.pretrain.momentum == 0.9 and cfg.pretrain.weight_decay == 1e-4 and cfg.pretrain.batch_size == 128
    assert cfg.objective == "trades" and cfg.settings_of("trades").beta == 6.0 and cfg.arch == "vgg16_bn"
    assert cfg.train_attack.eps == pytest.approx(8 / 255) and cfg.train_attack.steps == 10
    assert cfg.train_attack.step_size == pytest.approx(2 / 255) and cfg.eval_attack.steps == 50
    assert cfg.train_examples is None and cfg.eval_examples is None


def test_unknown_names_list_the_valid_ones():
    registry: Registry[int] = Registry("thing")
    registry.add("b", 2)
    registry.add("a", 1)
    with pytest.raises(UserError, match=r"unknown thing 'c'; valid: a, b"):
        registry.get("c")
    with pytest.raises(ValueError, match="twice"):
        registry.add("a", 3)

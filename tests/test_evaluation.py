"""Evaluation in cascade: per-example results, AutoAttack through its adapter, exact resume, reuse of results."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import TensorDataset

import benchmark.evaluation.cascade
import benchmark.evaluation.evaluators
from attacks.autoattack import parse_version
from benchmark.core.errors import UserError
from benchmark.core.progress import Progress
from benchmark.evaluation.cascade import evaluate_model
from results.record import by_column, metric_value
from tests.conftest import smoke_config


class Killed(BaseException):
    pass


@pytest.fixture(scope="module")
def examples():
    from benchmark.core.data import DATASETS, load_dataset

    _, test = load_dataset(DATASETS.get("digits"), None, False)
    return TensorDataset(test.tensors[0][:96], test.tensors[1][:96])


def config(**settings):
    return smoke_config(**{"eval.evaluators": ["clean", "pgd", "autoattack"], "eval.checks": False,
                           "eval.eps_sweep": [1.0], "eval.batch_size": 32, **settings})


def evaluate(model, examples, cfg, folder=None):
    return evaluate_model(model, examples, cfg, torch.device("cpu"), folder, Progress(quiet=True))


def test_an_attack_only_attacks_what_the_attacks_before_it_left_standing(trained_digits_model, examples,
                                                                        monkeypatch):
    attacked = []
    real = benchmark.evaluation.evaluators.autoattack

    def spy(model, x, y, **kwargs):
        attacked.append(len(x))
        return real(model, x, y, **kwargs)

    monkeypatch.setattr(benchmark.evaluation.evaluators, "autoattack", spy)
    result = evaluate(trained_digits_model, examples, config())
    m = by_column(result.metrics)
    assert sum(attacked) == round(m["pgd_acc"] * len(examples))  # PGD's survivors, nothing else
    assert m["worst_acc"] == m["autoattack_acc"] <= m["pgd_acc"] <= m["clean_acc"]
    assert set(result.seconds) >= {"clean", "pgd", "autoattack", "pgd@1x"}


def test_per_example_results_give_the_perturbation_that_broke_each_example(trained_digits_model, examples, tmp_path):
    cfg = config()
    evaluate(trained_digits_model, examples, cfg, tmp_path)
    (clean_file,) = tmp_path.glob("clean-*.pt")
    for path in tmp_path.glob("*.pt"):
        state = torch.load(path, weights_only=True)
        robust, distance = state["robust"], state["distance"]
        assert state["complete"] and distance[robust].isnan().all()
        broken = ~robust & ~distance.isnan()
        assert (distance[broken] <= cfg.eval_attack.eps + 1e-6).all()
    clean = torch.load(clean_file, weights_only=True)
    assert (clean["distance"][~clean["robust"]] == 0).all()  # misclassified as it is


def test_autoattack_is_at_least_as_strong_as_pgd_and_stays_in_the_ball(trained_digits_model, examples):
    pgd_only = evaluate(trained_digits_model, examples, config(**{"eval.evaluators": ["clean", "pgd"]}))
    aa_only = evaluate(trained_digits_model, examples, config(**{"eval.evaluators": ["clean", "autoattack"]}))
    assert metric_value(aa_only.metrics, "autoattack") <= metric_value(pgd_only.metrics, "pgd")
    assert metric_value(aa_only.metrics, "autoattack") < metric_value(aa_only.metrics, "clean")
    assert trained_digits_model.training is False


def test_a_killed_evaluation_resumes_at_its_last_batch_and_ends_where_an_uninterrupted_one_ends(
        trained_digits_model, examples, tmp_path, monkeypatch):
    cfg = config(**{"eval.checks": True, "eval.check_examples": 16, "eval.eps_sweep": [0.5, 1.0]})
    reference = evaluate(trained_digits_model, examples, cfg, tmp_path / "reference")
    calls = []
    real = benchmark.evaluation.cascade.run_evaluator

    def die_on_the_fourth_batch(*args):
        calls.append(1)
        if len(calls) == 4:  # clean's 3 batches, then PGD's first
            raise Killed
        return real(*args)

    monkeypatch.setattr(benchmark.evaluation.cascade, "run_evaluator", die_on_the_fourth_batch)
    with pytest.raises(Killed):
        evaluate(trained_digits_model, examples, cfg, tmp_path / "killed")
    monkeypatch.setattr(benchmark.evaluation.cascade, "run_evaluator", real)
    resumed = evaluate(trained_digits_model, examples, cfg, tmp_path / "killed")
    assert resumed.metrics == reference.metrics
    assert resumed.eps_sweep == reference.eps_sweep and resumed.checks == reference.checks

    counted = []
    monkeypatch.setattr(benchmark.evaluation.cascade, "run_evaluator", lambda *args: counted.append(1) or real(*args))
    again = evaluate(trained_digits_model, examples, cfg, tmp_path / "killed")
    assert counted == [] and again.metrics == reference.metrics  # everything was stored: nothing recomputed


def test_autoattack_versions_are_checked():
    assert parse_version("standard") == ("standard", None)
    assert parse_version("apgd-ce, apgd-t") == ("custom", ["apgd-ce", "apgd-t"])
    with pytest.raises(UserError, match="unknown AutoAttack version or attack 'apgd'"):
        parse_version("apgd")


def test_bad_evaluation_settings_fail_before_any_training(capsys, tmp_path):
    from benchmark.cli import main

    for argv, expected in [(["--eval", "clean,nope"], "unknown evaluator 'nope'"),
                           (["--set", "eval.autoattack=fast"], "unknown AutoAttack version"),
                           (["--set", "eval.eps_sweep=0,1"], "eps_sweep multiples must be positive")]:
        assert main(["run", "--preset", "smoke", "--out", str(tmp_path), *argv]) == 2
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1 and expected in err
    assert not (tmp_path / "pretrained").exists()

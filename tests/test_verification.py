"""Bound-based objectives (ibp, crown-ibp, mixtrain) and the verification evaluators (ibp, crown, sym): their
schedules, gradients to HYDRA's scores, the eps they default to, and the soundness check that fails a run."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from attacks import bounds
from benchmark.cli import main
from benchmark.core.config import TrainSettings
from benchmark.core.data import DATASETS, load_dataset
from benchmark.core.progress import Progress
from benchmark.evaluation import verification
from benchmark.evaluation.cascade import evaluate_model
from benchmark.runner import Environment, new_model, run_grid
from benchmark.training.loop import Phase, effective_weights_once
from benchmark.training.objectives import build_objective
from methods.hydra import Hydra
from results.record import Metric, RunRecord, metric_value
from results.store import Store
from tests.conftest import smoke_config

BOUND_OBJECTIVES = ["ibp", "crown-ibp", "mixtrain"]


def _ramped(objective: str, **settings: object):
    cfg = smoke_config(objective=objective)
    return build_objective(objective, cfg.with_settings("verifiable", **settings), ramped=True)


def test_eps_and_kappa_follow_the_ramp_per_batch_after_the_warmup():
    objective = _ramped("crown-ibp", warmup_epochs=1, ramp_epochs=2, kappa_start=1.0, kappa_end=0.5)
    full = objective.attack.eps
    seen = []
    for epoch in range(4):
        objective.on_epoch_start(epoch, 4)
        for step in (0, 5):
            objective.on_batch_start(step, 10)
            seen += [objective.eps / full, objective.kappa]
    assert seen == pytest.approx([0, 1, 0, 1, 0, 1, 0.25, 0.875, 0.5, 0.75, 0.75, 0.625, 1, 0.5, 1, 0.5])


def test_prune_and_finetune_phases_run_at_full_eps_from_the_first_step():
    cfg = smoke_config(objective="ibp")
    objective = build_objective("ibp", cfg)
    objective.on_epoch_start(0, 3)
    objective.on_batch_start(0, 10)
    assert objective.eps == cfg.train_attack.eps and objective.kappa == cfg.settings_of("verifiable").kappa_end


def test_mixtrain_ramps_eps_per_epoch_and_grows_its_interval_weight_every_5_epochs():
    objective = _ramped("mixtrain", ramp_epochs=4)
    weights, fractions = [], []
    for epoch in (0, 2, 4, 8, 9, 14, 60):
        objective.on_epoch_start(epoch, 61)
        objective.on_batch_start(7, 10)  # no effect: MixTrain's eps moves once per epoch
        weights.append(objective.interval_weight)
        fractions.append(objective.eps / objective.attack.eps)
    assert fractions == pytest.approx([0, 0.5, 1, 1, 1, 1, 1])
    assert weights == pytest.approx([0.1, 0.1, 0.1, 0.1, 0.25, 0.625, 50.0])


@pytest.mark.parametrize("objective", BOUND_OBJECTIVES)
def test_hydra_scores_get_gradients_through_every_bound_based_loss(objective, digits_batch):
    cfg = smoke_config(objective=objective).replace(method="hydra", sparsity=0.9)
    torch.manual_seed(0)
    model = new_model(cfg)
    hydra, phase = Hydra(cfg.sparsity, cfg.scope), Phase("prune", TrainSettings())
    hydra.prepare(model, phase)
    x, y = digits_batch
    loss_fn = build_objective(objective, cfg.with_settings("verifiable", mixtrain_alpha=1.0, kappa_end=0.0,
                                                           beta_end=0.5))
    with effective_weights_once(model):
        loss, _ = loss_fn.loss(model.train(), x, y)
    loss.backward()
    scores = list(hydra.trainable(model, phase))
    assert scores and all(s.grad is not None and s.grad.abs().sum() > 0 for s in scores)


def test_bound_based_objectives_default_to_the_dataset_verification_eps():
    info = DATASETS.get("mnist")
    for objective, eps in (("ibp", info.verify_eps), ("trades", info.eps)):
        cfg = smoke_config(objective=objective, data="mnist")
        assert cfg.train_attack.eps == cfg.eval_attack.eps == eps


def test_schedules_key_only_the_runs_whose_objective_reads_them():
    for objective, changes in (("trades", False), ("ibp", True), ("mixtrain", True)):
        cfg = smoke_config(objective=objective)
        other = cfg.with_settings("verifiable", ramp_epochs=7)
        assert (cfg.key() != other.key()) is changes
        assert (cfg.pretrain_key() != other.pretrain_key()) is changes


def test_an_architecture_bounds_cannot_take_fails_before_training_in_one_line(tmp_path, capsys):
    code = main(["run", "--data", "cifar10", "--arch", "vgg16_bn", "--objective", "crown-ibp", "--out",
                 str(tmp_path), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert "objective crown-ibp and evaluators ibp, crown, sym cannot bound layer VGG" in err
    assert not (tmp_path / "runs.db").exists()


@pytest.fixture(scope="module")
def evaluated(trained_digits_model):
    cfg = smoke_config(objective="ibp", eval={"evaluators": ["clean", "pgd", "ibp", "crown", "sym"]},
                       eval_attack={"eps": 0.02})  # small enough that a naturally trained model verifies some
    _, test = load_dataset(DATASETS.get("digits"), None, False)
    examples = torch.utils.data.Subset(test, range(48))
    return cfg, evaluate_model(trained_digits_model, examples, cfg, torch.device("cpu"), None, Progress(True))


def test_verified_accuracy_is_at_most_pgd_accuracy_and_the_best_takes_any_certifier(evaluated):
    cfg, evaluation = evaluated
    def m(evaluator, kind="acc", multiple=None):
        return metric_value(evaluation.metrics, evaluator, kind, eps_multiple=multiple)

    names = list(verification.CERTIFIERS)
    for multiple in verification.multiples(cfg):
        best = m("verified", "verified_acc", multiple)
        assert best >= max(m(n, "verified_acc", multiple) for n in names)
    assert m("verified", "verified_acc", 1.0) <= m("pgd") <= m("clean")
    assert m("verified", "verified_acc", 1.0) > 0  # the check is not vacuous: this model verifies some examples
    soundness = next(c for c in evaluation.checks if c["name"] == "soundness")
    assert not soundness["flagged"] and evaluation.failure is None
    assert "verified by IBP, CROWN, symbolic intervals" in evaluation.description


def test_soundness_flags_a_verified_example_an_attack_broke():
    fields = {"ibp": {"robust": torch.tensor([True, True, False])}}
    assert not verification.soundness(fields, torch.tensor([False, False, True]), 0.1)["flagged"]
    flagged = verification.soundness(fields, torch.tensor([False, True, True]), 0.1)
    assert flagged["flagged"] and "IBP verified 1 examples an attack broke" in flagged["detail"]


def test_an_unsound_certifier_fails_its_run_with_the_reason_and_the_grid_goes_on(tmp_path, monkeypatch):
    """A certifier that 'verifies' everything, with PGD breaking examples: the run is failed, its numbers kept."""
    def verifies_everything(model, x, y, eps, method):
        return torch.ones(len(y), 9)

    monkeypatch.setattr(bounds, "margin_bounds", verifies_everything)
    cfg = smoke_config(objective="natural", eval={"evaluators": ["clean", "pgd", "ibp"]})
    env = Environment(out=tmp_path, device="cpu", quiet=True)
    cells = [cfg.replace(method="dense"), cfg.replace(method="lwm", sparsity=0.9)]
    records = run_grid(cells, env, Store(tmp_path / "runs.db"))
    assert [r.status for r in records] == ["failed", "failed"]
    for record in records:
        assert record.error.startswith("unsound verification: IBP verified")
        assert record.value("ibp", "verified_acc", eps_multiple=1.0) == 1.0 and record.value("pgd") is not None


def _verified_record(method: str, sparsity: float, ibp: float, crown: float) -> RunRecord:
    metrics = [Metric("clean", "acc", 0.8), Metric("pgd", "acc", 0.6), Metric("worst", "acc", 0.6),
               *(Metric(evaluator, "verified_acc", value / multiple, eps_multiple=multiple) for multiple in (1.0, 2.0)
                 for evaluator, value in (("ibp", ibp), ("crown", crown), ("verified", max(ibp, crown))))]
    return RunRecord(key=f"{method}-{sparsity}", dataset="fashion-mnist", arch="cnn-small", objective="crown-ibp",
                     method=method, scope="layer", sparsity=sparsity, seed=0, status="done", metrics=metrics,
                     eval_desc="PGD")


def test_the_report_tabulates_and_plots_verified_accuracy_against_sparsity(tmp_path):
    from results.report import write_report

    records = [_verified_record("dense", 0.0, 0.5, 0.55), _verified_record("hydra", 0.9, 0.45, 0.5),
               _verified_record("lwm", 0.9, 0.3, 0.35)]
    text = write_report(records, tmp_path)
    assert "#### verified: fashion-mnist · cnn-small · crown-ibp" in text
    table = pd.read_csv(tmp_path / "fashion-mnist_cnn-small_crown-ibp_verified.csv", index_col=0)
    assert list(table.columns) == ["sparsity", "clean", "PGD", "IBP", "CROWN", "verified", "verified @ 2x eps"]
    assert table.loc["hydra", "CROWN"] == 50.0 and table.loc["lwm", "verified @ 2x eps"] == 17.5
    assert (tmp_path / "fashion-mnist_cnn-small_crown-ibp_verified.png").read_bytes()[:4] == b"\x89PNG"

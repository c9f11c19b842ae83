"""Runner contract: cached work is never redone, killed runs resume exactly, keys are stable, failures are kept."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from benchmark import runner
from benchmark.core.io import safe_load
from benchmark.evaluation.cascade import Evaluation
from benchmark.grid import cells_of
from benchmark.training import loop as train
from methods import METHODS
from results.record import Metric
from results.store import Store
from tests.conftest import smoke_config


class Killed(BaseException):
    """Stands in for SIGKILL / Ctrl-C: not an Exception, so nothing records it as a failure."""


def grid(methods=("hydra", "lwm"), sparsities=(0.9,)):
    return cells_of(smoke_config(), list(methods), list(sparsities), [0])


def kill_during(monkeypatch, phase_name: str, at_step: int) -> None:
    """Make the next run of `phase_name` die (as if killed) at its `at_step`-th optimizer step."""
    real = train.run_phase

    def run_phase_then_die(model, phase, *args, **kwargs):
        if phase.name == phase_name:
            seen = []

            def maybe_kill(_model):
                seen.append(1)
                if len(seen) == at_step:
                    raise Killed

            phase.step_callbacks.append(maybe_kill)
        return real(model, phase, *args, **kwargs)

    monkeypatch.setattr(runner.train, "run_phase", run_phase_then_die)


def count_phases(monkeypatch) -> list[str]:
    names: list[str] = []
    real = train.run_phase

    def spy(model, phase, *args, **kwargs):
        names.append(phase.name)
        return real(model, phase, *args, **kwargs)

    monkeypatch.setattr(runner.train, "run_phase", spy)
    return names


def test_pretrained_model_is_shared_and_a_second_invocation_does_no_work(env, monkeypatch):
    store = Store(env.out / "runs.db")
    phases = count_phases(monkeypatch)
    records = runner.run_grid(grid(), env, store)
    assert [r.status for r in records] == ["done"] * 3
    assert phases.count("pretrain") == 1
    assert phases.count("prune") == 1 and phases.count("finetune") == 2
    phases.clear()
    again = runner.run_grid(grid(), env, store)
    assert phases == []
    assert [r.metrics for r in again] == [r.metrics for r in records]


def test_records_and_the_report_give_the_weights_each_layer_kept(env, tmp_path):
    from results.report import write_report

    records = runner.run_grid(grid(methods=("lwm",), sparsities=(0.99,)), env, Store(env.out / "runs.db"))
    dense, lwm = records
    mask = safe_load(runner.run_dir(env, cells_of(smoke_config(), ["lwm"], [0.99], [0])[1]) / "mask.pt")
    assert lwm.kept_per_layer == {n: [int(m.sum()), m.numel()] for n, m in mask.items()}
    assert all(kept == total for kept, total in dense.kept_per_layer.values())
    first, (kept, total) = next(iter(lwm.kept_per_layer.items()))
    assert 0 < kept < total
    text = write_report(records, tmp_path / "report")
    assert "weights kept per layer" in text
    assert f"| lwm 99% | {kept:,} |" in text and f"{first.removesuffix('.weight')} ({total:,})" in text


def test_a_killed_run_resumes_from_its_last_epoch_and_ends_where_an_uninterrupted_run_ends(tmp_path, monkeypatch):
    cfg = smoke_config().replace(method="hydra", sparsity=0.9)
    cfg = dataclasses.replace(cfg, finetune=dataclasses.replace(cfg.finetune, epochs=3))
    reference_env = runner.Environment(out=tmp_path / "reference", quiet=True)
    reference = runner.run_cell(cfg, reference_env)

    env = runner.Environment(out=tmp_path / "killed", quiet=True)
    steps_per_epoch = -(-cfg.train_examples // cfg.finetune.batch_size)
    kill_during(monkeypatch, "finetune", at_step=steps_per_epoch + 2)
    with pytest.raises(Killed):
        runner.run_cell(cfg, env)
    assert safe_load(runner.run_dir(env, cfg) / "finetune.ckpt.pt")["epoch"] == 1

    monkeypatch.undo()
    phases = count_phases(monkeypatch)
    resumed = runner.run_cell(cfg, env)
    assert phases == ["finetune"]  # pretrain and prune are not redone
    assert resumed.cost["finetune"]["epochs"] == 3
    assert resumed.metrics == reference.metrics
    a = safe_load(runner.run_dir(env, cfg) / "model.pt")
    b = safe_load(runner.run_dir(reference_env, cfg) / "model.pt")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not list(runner.run_dir(env, cfg).glob("*.ckpt.pt"))


@pytest.mark.parametrize("method", METHODS.names())
def test_every_method_killed_inside_its_own_phase_resumes_exactly(method, tmp_path, monkeypatch):
    """Killed in the second epoch of the method's last own phase (finetune if it has none): the resumed run
    ends with the very weights of an uninterrupted one, so pruner state (ADMM's Z, U, rho) is checkpointed."""
    two = {f"{name}.epochs": 2 for name in ("prune", "admm", "lottery", "finetune")}
    cfg = smoke_config(**two).replace(method=method, sparsity=0.9)
    reference_env = runner.Environment(out=tmp_path / "reference", quiet=True)
    phases = count_phases(monkeypatch)
    reference = runner.run_cell(cfg, reference_env)
    own = [p for p in phases if p not in ("pretrain", "finetune")]
    target = own[-1] if own else "finetune"
    steps_per_epoch = -(-cfg.train_examples // 32)
    monkeypatch.undo()

    env = runner.Environment(out=tmp_path / "killed", quiet=True)
    kill_during(monkeypatch, target, at_step=steps_per_epoch + 2)
    with pytest.raises(Killed):
        runner.run_cell(cfg, env)
    monkeypatch.undo()
    resumed = runner.run_cell(cfg, env)
    assert resumed.metrics == reference.metrics
    a = safe_load(runner.run_dir(env, cfg) / "model.pt")
    b = safe_load(runner.run_dir(reference_env, cfg) / "model.pt")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_keys_differ_by_what_matters_and_pretrain_is_shared():
    a = smoke_config().replace(method="hydra", sparsity=0.9)
    assert a.key() != a.replace(sparsity=0.95).key() != a.replace(seed=1).key()
    assert a.pretrain_key() == a.replace(method="lwm", sparsity=0.99).pretrain_key()
    assert a.pretrain_key() != a.replace(seed=1).pretrain_key()
    assert a.pretrain_key() != a.replace(pretrain_objective="natural").pretrain_key()


def test_a_failed_cell_is_recorded_and_the_grid_goes_on(env, monkeypatch):
    real = runner._finetune

    def fail_for_lwm(cfg, *args, **kwargs):
        if cfg.method == "lwm":
            raise RuntimeError("boom\nsecond line")
        return real(cfg, *args, **kwargs)

    monkeypatch.setattr(runner, "_finetune", fail_for_lwm)
    store = Store(env.out / "runs.db")
    records = runner.run_grid(grid(), env, store)
    by_method = {r.method: r for r in records}
    assert by_method["lwm"].status == "failed" and by_method["lwm"].error == "RuntimeError: boom"
    assert by_method["hydra"].status == "done"
    assert "Traceback" in (runner.run_dir(env, grid()[2]) / "log.txt").read_text()
    monkeypatch.undo()
    records = runner.run_grid(grid(), env, store)  # the failed cell is retried, the rest is kept
    assert [r.status for r in records] == ["done"] * 3


def test_corrupt_pretrained_checkpoint_names_the_file_and_loses_nothing(env):
    store = Store(env.out / "runs.db")
    dense = runner.run_grid(grid(methods=()), env, store)[0]
    path = runner.pretrained_dir(env, grid()[0]) / "model.pt"
    path.write_bytes(b"not a checkpoint")
    records = runner.run_grid(grid(methods=("lwm",)), env, store)
    assert records[0] == dense
    assert records[1].status == "failed" and str(path) in records[1].error


def test_store_round_trips_and_keeps_full_precision(tmp_path):
    store = Store(tmp_path / "runs.db")
    cfg = smoke_config()
    checks = [{"name": "black_box", "flagged": True, "detail": "Square broke 9 of 10"}]
    evaluation = Evaluation([Metric("clean", "acc", 1 / 3), Metric("pgd", "acc", 2 / 7)], {"pgd": 0.1},
                            [{"eps": 0.1, "acc": 2 / 7}], checks, "PGD")
    record = runner.record_for(cfg, runner.Environment(out=tmp_path), status="done", evaluation=evaluation,
                               cost={"x": 1.5})
    store.put(record)
    got = Store(tmp_path / "runs.db").get(cfg.key())
    assert got.value("clean") == 1 / 3 and got.value("pgd") == 2 / 7 and got.cost == {"x": 1.5}
    assert got.checks == checks and got.evaluation["eps_sweep"][0]["acc"] == 2 / 7
    assert got.eval_key == cfg.eval_key()


def test_a_version_1_store_is_migrated_and_keeps_its_rows(tmp_path):
    import sqlite3

    from results.store import ADDED_IN, COLUMNS

    old_columns = [name for name in COLUMNS if not any(name in added for added in ADDED_IN.values())]
    db = sqlite3.connect(tmp_path / "runs.db")
    db.execute(f"CREATE TABLE runs ({', '.join(f'{n} {COLUMNS[n]}' for n in old_columns)})")
    db.execute("INSERT INTO runs (key, method, status, metrics) VALUES ('k', 'lwm', 'done', '{\"pgd_acc\": 0.5}')")
    db.execute("PRAGMA user_version = 1")
    db.commit()
    db.close()
    got = Store(tmp_path / "runs.db").get("k")
    assert got.value("pgd") == 0.5 and got.checks is None and got.eval_key is None


def test_new_evaluation_settings_reevaluate_without_retraining(env, monkeypatch):
    """A finished grid asked for another evaluator or attack strength only evaluates, from the stored model."""
    store = Store(env.out / "runs.db")
    first = runner.run_grid(grid(methods=("lwm",)), env, store)
    phases = count_phases(monkeypatch)
    more = [cfg.replace(eval=dataclasses.replace(cfg.eval, eps_sweep=[1.0, 3.0])) for cfg in grid(("lwm",))]
    again = runner.run_grid(more, env, store)
    assert phases == []
    assert [r.key for r in again] == [r.key for r in first]
    assert [r.metrics for r in again] == [r.metrics for r in first]  # the 1x results are reused
    assert [p["multiple"] for p in again[1].evaluation["eps_sweep"]] == [1.0, 3.0]
    assert runner.pending(more, store) == []


def test_zero_finetune_epochs_gives_the_mask_alone_and_pretrain_objective_keys_the_cache(env):
    """HYDRA's experiment: prune a naturally pretrained network with a robust loss, no finetune."""
    from tests.conftest import smoke_config as make

    cfg = make(pretrain_objective="natural", **{"finetune.epochs": 0}).replace(method="lwm", sparsity=0.9)
    assert cfg.effective_pretrain_objective == "natural" and cfg.objective == "trades"
    record = runner.run_cell(cfg, env)
    assert record.status == "done" and record.pretrain_objective == "natural"
    assert record.cost["finetune"]["epochs"] == 0
    pretrained = safe_load(runner.pretrained_dir(env, cfg) / "model.pt")
    exported = safe_load(runner.run_dir(env, cfg) / "model.pt")
    mask = safe_load(runner.run_dir(env, cfg) / "mask.pt")
    for name, keep in mask.items():
        assert torch.equal(exported[name], pretrained[name] * keep)
    assert runner.pretrained_dir(env, cfg) != runner.pretrained_dir(env, cfg.replace(pretrain_objective=None))

"""`benchmark eval`: checkpoints rpbench did not train, in our layout or torchvision's, strict and safe; the
model the AutoAttack package ships, end to end."""

import pickle
from pathlib import Path

import pyautoattack
import pytest
import torch
from pyautoattack.examples.resnet import ResNet18

from benchmark import runner
from benchmark.cli import main
from benchmark.core.layouts import body_of
from benchmark.external import load_external
from results.store import Store
from tests.conftest import smoke_config
from tests.test_datasets import dump_pickle, write_cifar10

AUTOATTACK_MODEL = Path(pyautoattack.__file__).parent / "examples" / "model_test.pt"


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A pruned model exported by a smoke run, and its record."""
    out = tmp_path_factory.mktemp("export")
    env = runner.Environment(out=out, quiet=True)
    cfg = smoke_config().replace(method="lwm", sparsity=0.9)
    record = runner.run_grid([cfg], env, Store(out / "runs.db"))[0]
    return runner.run_dir(env, cfg) / "model.pt", record


def eval_argv(path, out, *extra):
    return ["eval", "--checkpoint", str(path), "--arch", "cnn-small", "--data", "digits", "--preset", "smoke",
            "--out", str(out), "--quiet", *extra]


def test_an_exported_checkpoint_evaluates_like_its_run(exported, tmp_path, capsys):
    path, record = exported
    assert main(eval_argv(path, tmp_path, "--name", "ours")) == 0
    assert "### digits · cnn-small · external" in capsys.readouterr().out
    (stored,) = Store(tmp_path / "runs.db").all()
    assert stored.method == "ours" and stored.value("clean") == record.value("clean")
    assert stored.sparsity_actual == pytest.approx(record.sparsity_actual, abs=1e-6)
    assert main(eval_argv(path, tmp_path, "--name", "ours")) == 0  # same file, same settings: same key
    assert len(Store(tmp_path / "runs.db").all()) == 1


def test_a_torchvision_style_body_state_dict_loads_and_computes_the_same(exported, tmp_path, digits_batch):
    path, _ = exported
    ours = runner.new_model(smoke_config())
    ours.load_state_dict(torch.load(path, weights_only=True))
    body = torch.nn.Sequential(*list(ours)[1:])  # what a paper's code saves: no normalisation layer, keys from 0
    wrapped = {"state_dict": {f"module.{k}": v for k, v in body.state_dict().items()}, "epoch": 7}
    torch.save(wrapped, tmp_path / "paper.pth")
    loaded = load_external(tmp_path / "paper.pth", smoke_config()).model
    x, _ = digits_batch
    assert torch.equal(loaded.eval()(x), ours.eval()(x))


@pytest.mark.parametrize("problem", ["wrong-arch", "corrupt", "missing", "evaluator"])
def test_bad_checkpoints_give_one_line_naming_the_file(exported, tmp_path, capsys, problem):
    path, _ = exported
    argv = eval_argv(path, tmp_path)
    if problem == "wrong-arch":
        argv[argv.index("cnn-small")] = "cnn-large"
    elif problem == "corrupt":
        path = tmp_path / "broken.pt"
        path.write_bytes(b"\x80 not a checkpoint")
        argv = eval_argv(path, tmp_path)
    elif problem == "missing":
        path = tmp_path / "nowhere.pt"
        argv = eval_argv(path, tmp_path)
    else:
        argv += ["--eval", "nope"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and err.startswith("error: ")
    assert (str(path) in err) if problem != "evaluator" else ("unknown evaluator 'nope'" in err)


def test_any_torchattacks_attack_is_an_evaluator(trained_digits_model, digits_batch):
    pytest.importorskip("torchattacks")
    from torch.utils.data import TensorDataset

    from benchmark.core.errors import UserError
    from benchmark.core.progress import Progress
    from benchmark.evaluation.cascade import evaluate_model
    from benchmark.evaluation.evaluators import get_evaluator
    from results.record import by_column

    cfg = smoke_config(**{"eval.evaluators": ["clean", "torchattacks:FGSM", "torchattacks:PGD"],
                          "eval.checks": False, "eval.eps_sweep": [1.0]})
    result = evaluate_model(trained_digits_model, TensorDataset(*digits_batch), cfg, torch.device("cpu"), None,
                            Progress(quiet=True))
    metrics = by_column(result.metrics)
    assert set(metrics) == {"clean_acc", "ta_fgsm_acc", "ta_pgd_acc", "worst_acc"}
    # in cascade: PGD attacks what FGSM left standing, so each column is at most the one before it
    assert metrics["worst_acc"] == metrics["ta_pgd_acc"] <= metrics["ta_fgsm_acc"] < metrics["clean_acc"]
    assert trained_digits_model.training is False
    with pytest.raises(UserError, match="no attack 'Nope'"):
        get_evaluator("torchattacks:Nope")


def test_eval_command_takes_torchattacks_evaluators(exported, tmp_path, capsys):
    pytest.importorskip("torchattacks")
    path, _ = exported
    assert main(eval_argv(path, tmp_path, "--eval", "clean", "pgd", "torchattacks:FGSM")) == 0
    (stored,) = Store(tmp_path / "runs.db").all()
    assert stored.value("torchattacks:FGSM") <= stored.value("clean")


def test_the_normalization_is_recorded_and_keyed(exported, tmp_path):
    path, _ = exported
    assert main(eval_argv(path, tmp_path, "--name", "stored")) == 0
    assert main(eval_argv(path, tmp_path, "--name", "raw", "--normalize", "none")) == 0
    # the dataset's mean/std are the file's own buffers here: the default, so the same key, no new record
    assert main(eval_argv(path, tmp_path, "--name", "stored", "--normalize", "dataset")) == 0
    records = {r.method: r for r in Store(tmp_path / "runs.db").all()}
    assert len(Store(tmp_path / "runs.db").all()) == 2 and records["stored"].key != records["raw"].key
    assert records["raw"].eval_desc.endswith("; checkpoint layout rpbench, input normalization none")
    assert "input normalization mean " in records["stored"].eval_desc
    assert records["raw"].evaluation["checkpoint"]["std"] == [1.0]


@pytest.mark.parametrize("value", ["imagenet", "0.5,0"])
def test_a_bad_normalize_value_is_one_line_and_exit_2(exported, tmp_path, capsys, value):
    path, _ = exported
    assert main(eval_argv(path, tmp_path, "--normalize", value)) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and err.startswith("error: --normalize")


def test_autoattack_s_example_model_loads_strictly_and_computes_as_its_own_code():
    state = torch.load(AUTOATTACK_MODEL, map_location="cpu", weights_only=True)
    loaded = load_external(AUTOATTACK_MODEL, smoke_config(data="cifar10", arch="resnet18"))
    assert loaded.layout == "kuangliu" and loaded.normalization.describe() == "none"
    # every key of the file is a key of the model and the other way round: nothing missing, nothing unexpected
    assert {k.replace("linear.", "fc.") for k in state} == set(body_of(loaded.model).state_dict())
    reference = ResNet18()
    reference.load_state_dict(state)
    x = torch.rand(4, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded.model.eval()(x), reference.eval()(x))


def test_autoattack_s_example_model_evaluates_end_to_end(tmp_path, capsys):
    """On a CIFAR-10-format fixture whose labels are the package's own model's predictions on [0, 1] inputs
    for half the test images and wrong for the other half, the clean accuracy is 50% exactly."""
    write_cifar10(tmp_path / "data", per_batch=8)
    batch = tmp_path / "data" / "cifar-10-batches-py" / "test_batch"
    with batch.open("rb") as f:
        test = pickle.load(f)
    reference = ResNet18()
    reference.load_state_dict(torch.load(AUTOATTACK_MODEL, map_location="cpu", weights_only=True))
    x = torch.tensor(test[b"data"]).view(-1, 3, 32, 32).float() / 255
    with torch.no_grad():
        predicted = reference.eval()(x).argmax(1).tolist()
    test[b"labels"] = [p if i % 2 == 0 else (p + 1) % 10 for i, p in enumerate(predicted)]
    dump_pickle(batch, test)
    argv = ["eval", "--checkpoint", str(AUTOATTACK_MODEL), "--arch", "resnet18", "--data", "cifar10",
            "--data-dir", str(tmp_path / "data"), "--preset", "smoke", "--out", str(tmp_path / "out"), "--quiet",
            "--set", "eval.eps_sweep=[1.0]", "--set", "eval.checks=false"]  # the smoke preset's PGD, no more
    assert main(argv) == 0
    assert "checkpoint layout kuangliu, input normalization none" in capsys.readouterr().out
    (stored,) = Store(tmp_path / "out" / "runs.db").all()
    assert stored.status == "done" and stored.method == "model_test" and stored.sparsity_actual == 0
    assert stored.value("clean") == pytest.approx(0.5) and stored.value("pgd") <= stored.value("clean")

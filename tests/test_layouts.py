"""Checkpoint layouts (benchmark/core/layouts.py, benchmark/external.py): wrappers, DataParallel's prefix, the
kuangliu/RobustBench and TRADES names, HYDRA's popup_scores, the one-line misfit, --normalize."""

from __future__ import annotations

import re

import pytest
import torch

from benchmark.core.data import DATASETS
from benchmark.core.errors import UserError
from benchmark.core.layouts import Normalization, apply_popup_scores, body_of, parse_normalize
from benchmark.core.models import build_model
from benchmark.external import load_external
from tests.conftest import smoke_config

CIFAR = smoke_config(data="cifar10", arch="resnet18")
DIGITS = smoke_config()  # digits, cnn-small


def model_of(arch: str, seed: int = 0) -> torch.nn.Sequential:
    torch.manual_seed(seed)
    model = build_model(arch, (3, 32, 32), 10, (0.4914, 0.4822, 0.4465), (0.2471, 0.2435, 0.2616)).eval()
    for m in model.modules():  # BN statistics that are not the identity, so a misplaced one shows
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    return model


def renamed(state: dict[str, torch.Tensor], rules: list[tuple[str, str]]) -> dict[str, torch.Tensor]:
    """state with its keys rewritten by regex rules, as another codebase would name them."""
    out = {}
    for key, value in state.items():
        for pattern, repl in rules:
            key = re.sub(pattern, repl, key)
        out[key] = value
    return out


def same_function(loaded: torch.nn.Module, reference: torch.nn.Module, normalized: bool = True) -> bool:
    x = torch.rand(4, 3, 32, 32)
    with torch.no_grad():
        want = reference(x) if normalized else reference[1](x)
        return torch.allclose(loaded.eval()(x), want, atol=1e-5)


@pytest.mark.parametrize(("wrap", "prefix"), [("plain", ""), ("net", "module."), ("state_dict", ""),
                                             ("model", "module.")])
def test_wrappers_and_the_dataparallel_prefix(tmp_path, wrap, prefix):
    reference = model_of("resnet18")
    state = {f"{prefix}{k}": v for k, v in renamed(body_of(reference).state_dict(), [(r"^fc\.", "linear.")]).items()}
    obj = state if wrap == "plain" else {wrap: state, "acc": 91.5, "epoch": 200}
    torch.save(obj, tmp_path / "ckpt.pth")
    loaded = load_external(tmp_path / "ckpt.pth", CIFAR)
    assert loaded.layout == "kuangliu" and loaded.normalization.describe() == "none"
    assert same_function(loaded.model, reference, normalized=False)


def test_robustbench_wideresnet_names_and_an_unused_sub_block(tmp_path):
    reference = model_of("wrn-28-4")
    trades = renamed(body_of(reference).state_dict(), [
        (r"^(block\d)\.(\d+)\.", r"\1.layer.\2."), (r"\.shortcut\.", ".convShortcut."), (r"^bn\.", "bn1.")])
    assert "block2.layer.0.convShortcut.weight" in trades and "bn1.running_var" in trades
    trades.update({k.replace("block1.", "sub_block1.", 1): v + 1 for k, v in trades.items() if k.startswith("block1.")})
    torch.save({"state_dict": trades}, tmp_path / "trades.pt")
    loaded = load_external(tmp_path / "trades.pt", smoke_config(data="cifar10", arch="wrn-28-4"))
    assert loaded.layout == "robustbench-wrn"
    assert same_function(loaded.model, reference, normalized=False)


def test_preact_resnet18_in_robustbench_names(tmp_path):
    reference = model_of("preact-resnet18")
    state = renamed(body_of(reference).state_dict(), [(r"^fc\.", "linear.")])
    assert "layer2.0.shortcut.0.weight" in state and not any(k.startswith("bn.") for k in state)
    torch.save(state, tmp_path / "preact.pt")
    loaded = load_external(tmp_path / "preact.pt", smoke_config(data="cifar10", arch="preact-resnet18"))
    assert loaded.layout == "kuangliu" and same_function(loaded.model, reference, normalized=False)


def test_our_export_keeps_its_normalization_and_the_body_gets_the_dataset_s(tmp_path):
    reference = model_of("resnet18")
    reference[0].mean.fill_(0.25)
    torch.save(reference.state_dict(), tmp_path / "ours.pt")
    ours = load_external(tmp_path / "ours.pt", CIFAR)
    assert ours.layout == "rpbench"
    assert ours.normalization.describe() == "mean 0.25,0.25,0.25 std 0.2471,0.2435,0.2616"
    assert same_function(ours.model, reference)
    torch.save(body_of(reference).state_dict(), tmp_path / "body.pt")
    body = load_external(tmp_path / "body.pt", CIFAR)
    cifar = DATASETS.get("cifar10")
    assert body.layout == "body" and body.normalization == Normalization(cifar.mean, cifar.std)
    given = load_external(tmp_path / "ours.pt", CIFAR, Normalization.identity(3))
    assert given.normalization.describe() == "none" and given.default_normalization == ours.normalization
    assert same_function(given.model, reference, normalized=False)


def hydra_state(seed: int = 0) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """A HYDRA subnet checkpoint of cnn-small (a flat Sequential, as HYDRA's `cifar_model`): dense weights, a
    popup_scores tensor beside every conv/linear weight. Returns (its state, the plain body state)."""
    torch.manual_seed(seed)
    body = body_of(build_model("cnn-small", (1, 8, 8), 10, (0.5,), (0.25,)))
    plain = body.state_dict()
    scored = dict(plain)
    for key, value in plain.items():
        if key.endswith(".weight"):
            scored[key.removesuffix("weight") + "popup_scores"] = torch.randn_like(value)
    return scored, plain


def test_hydra_popup_scores_give_the_per_layer_top_k_mask(tmp_path):
    scored, plain = hydra_state()
    k = 0.07
    torch.save({"epoch": 20, "arch": "cifar_model", "state_dict": {f"module.{n}": t for n, t in scored.items()},
                "best_prec1": 12.5}, tmp_path / "hydra.pth.tar")
    loaded = load_external(tmp_path / "hydra.pth.tar", DIGITS, hydra_k=k)
    assert loaded.layout == "body" and loaded.normalization.describe() == "none" and loaded.hydra_k == k
    state = body_of(loaded.model).state_dict()
    assert set(state) == set(plain)
    for key, weight in plain.items():
        if not key.endswith(".weight"):
            assert torch.equal(state[key], weight)
            continue
        n, scores = weight.numel(), scored[key.removesuffix("weight") + "popup_scores"].abs()
        kept = state[key] != 0
        assert int(kept.sum()) == n - int((1 - k) * n)  # HYDRA's GetSubnet: j = int((1 - k) * n) pruned
        assert scores[kept].min() >= scores[~kept].max()  # the largest |scores| are kept
        assert torch.equal(state[key][kept], weight[kept])


def test_hydra_scores_need_k_and_k_needs_scores(tmp_path):
    scored, plain = hydra_state()
    torch.save(scored, tmp_path / "scored.pt")
    torch.save(plain, tmp_path / "plain.pt")
    with pytest.raises(UserError, match="--hydra-k"):
        load_external(tmp_path / "scored.pt", DIGITS)
    with pytest.raises(UserError, match="holds no popup_scores"):
        load_external(tmp_path / "plain.pt", DIGITS, hydra_k=0.1)
    with pytest.raises(UserError, match=r"in \(0, 1\]"):
        apply_popup_scores(scored, 1.5, tmp_path / "scored.pt")


def test_an_unknown_layout_gets_one_short_line_naming_a_few_keys(tmp_path):
    state = renamed(body_of(model_of("resnet18")).state_dict(), [(r"^layer(\d)\.", r"stage\1."),
                                                                  (r"^fc\.", "linear.")])
    torch.save({"net": state}, tmp_path / "odd.pt")
    with pytest.raises(UserError) as err:
        load_external(tmp_path / "odd.pt", CIFAR)
    line = str(err.value)
    assert "\n" not in line and len(line) < 500, line
    assert "nearest, kuangliu: 114 missing (layer1.0.conv1.weight, " in line
    assert "114 unexpected (stage1.0.conv1.weight, " in line and line.count("stage") == 3


@pytest.mark.parametrize(("text", "mean", "std"), [
    ("dataset", (0.4914, 0.4822, 0.4465), (0.247, 0.2435, 0.2616)),
    ("none", (0.0,) * 3, (1.0,) * 3),
    ("0.5,0.25", (0.5,) * 3, (0.25,) * 3),
    ("0.1,0.2,0.3,1,2,3", (0.1, 0.2, 0.3), (1.0, 2.0, 3.0)),
])
def test_normalize_values(text, mean, std):
    assert parse_normalize(text, (0.4914, 0.4822, 0.4465), (0.247, 0.2435, 0.2616)) == Normalization(mean, std)


@pytest.mark.parametrize("text", ["imagenet", "1,2,3", "0.5,0", "0.5,-1", "nan,1", "", "0.5;0.25"])
def test_bad_normalize_values_are_one_line(text):
    with pytest.raises(UserError) as err:
        parse_normalize(text, (0.5,) * 3, (0.25,) * 3)
    assert "\n" not in str(err.value) and "--normalize" in str(err.value)

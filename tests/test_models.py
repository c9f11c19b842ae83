"""Tests for benchmark.core.models: registry, shapes, exact parameter counts, Normalize, errors."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from benchmark.core.errors import UserError
from benchmark.core.models import ARCHS, ArchInfo, Normalize, build_model, prunable_weight_count

CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2471, 0.2435, 0.2616)
EXPECTED_ARCHS = {"mlp", "cnn-small", "cnn-large", "vgg16_bn", "wrn-28-4", "wrn-28-10", "wrn-34-10", "resnet18",
                  "preact-resnet18", "resnet50"}
FLAT_ARCHS = ("mlp", "cnn-small", "cnn-large")


def _build(arch: str, shape: tuple[int, int, int] = (3, 32, 32), classes: int = 10) -> nn.Sequential:
    c = shape[0]
    mean = CIFAR_MEAN if c == 3 else (0.5,) * c
    std = CIFAR_STD if c == 3 else (0.25,) * c
    return build_model(arch, shape, classes, mean, std)


def test_registry_contents() -> None:
    assert set(ARCHS.names()) == EXPECTED_ARCHS
    for name in ARCHS.names():
        info = ARCHS.get(name)
        assert isinstance(info, ArchInfo)
        assert info.name == name
        assert info.description and "\n" not in info.description
        assert info.input_sizes


@pytest.mark.parametrize("arch", sorted(EXPECTED_ARCHS - {"resnet50"}))
def test_forward_shape(arch: str) -> None:
    torch.manual_seed(0)
    size = 32 if 32 in ARCHS.get(arch).input_sizes else ARCHS.get(arch).input_sizes[0]
    model = _build(arch, (3, size, size), classes=7).eval()
    assert isinstance(model, nn.Sequential)
    assert isinstance(model[0], Normalize)
    with torch.no_grad():
        out = model(torch.rand(2, 3, size, size))
    assert out.shape == (2, 7)
    assert torch.isfinite(out).all()


def test_forward_resnet50() -> None:
    model = _build("resnet50", (3, 224, 224), classes=5).eval()
    with torch.no_grad():
        out = model(torch.rand(1, 3, 224, 224))
    assert out.shape == (1, 5)
    assert not any(isinstance(m, nn.ReLU) and m.inplace for m in model.modules())


def test_train_mode_backward_wrn() -> None:
    model = _build("wrn-28-4").train()
    model(torch.rand(2, 3, 32, 32)).sum().backward()
    assert all(p.grad is not None for p in model.parameters())


@pytest.mark.parametrize("arch", FLAT_ARCHS)
def test_flat_bodies(arch: str) -> None:
    model = _build(arch)
    assert isinstance(model[0], Normalize)
    allowed = (nn.Conv2d, nn.Linear, nn.ReLU, nn.Flatten)
    for layer in list(model)[1:]:
        assert isinstance(layer, allowed), type(layer)
        if isinstance(layer, nn.ReLU):
            assert not layer.inplace


@pytest.mark.parametrize("size", [8, 28])
def test_cnn_small_grayscale(size: int) -> None:
    model = _build("cnn-small", (1, size, size), classes=10)
    out = model(torch.rand(2, 1, size, size))
    assert out.shape == (2, 10)
    linear = [m for m in model if isinstance(m, nn.Linear)][0]
    assert linear.in_features == 32 * (size // 4) ** 2


def test_no_inplace_relu_anywhere() -> None:
    for arch in sorted(EXPECTED_ARCHS - {"resnet50"}):
        size = ARCHS.get(arch).input_sizes[-1]
        for m in _build(arch, (3, size, size)).modules():
            if isinstance(m, nn.ReLU):
                assert not m.inplace, arch


def test_prunable_count_vgg16_bn() -> None:
    assert prunable_weight_count(_build("vgg16_bn")) == 15_302_848


def test_prunable_count_wrn_28_4() -> None:
    assert prunable_weight_count(_build("wrn-28-4")) == 5_841_840


def test_wrn_28_10_has_the_published_size() -> None:
    # HYDRA's WRN-28-10 without its unused sub_block1 (hydra_protocol.md, section 4)
    assert sum(p.numel() for p in _build("wrn-28-10").parameters()) == 36_479_194


def test_prunable_count_small() -> None:
    # cnn-small on 3x32x32: 3*16*16 + 16*32*16 + 2048*100 + 100*10 (biases excluded)
    assert prunable_weight_count(_build("cnn-small")) == 768 + 8192 + 204_800 + 1000
    # biases and BatchNorm are not counted
    assert prunable_weight_count(nn.Sequential(nn.Linear(4, 3), nn.BatchNorm2d(5))) == 12


def test_normalize_values() -> None:
    norm = Normalize(CIFAR_MEAN, CIFAR_STD)
    x = torch.rand(4, 3, 5, 5)
    expected = (x - torch.tensor(CIFAR_MEAN).view(1, 3, 1, 1)) / torch.tensor(CIFAR_STD).view(1, 3, 1, 1)
    torch.testing.assert_close(norm(x), expected)
    state = norm.state_dict()
    assert set(state) == {"mean", "std"}
    torch.testing.assert_close(state["mean"].flatten(), torch.tensor(CIFAR_MEAN))
    assert not list(norm.parameters())


def test_normalize_rejects_bad_std() -> None:
    with pytest.raises(UserError):
        Normalize((0.5,), (0.0,))
    with pytest.raises(UserError):
        Normalize((0.5, 0.5), (0.2,))


@pytest.mark.parametrize("arch", ["cnn-large", "resnet18"])
def test_state_dict_roundtrip(arch: str) -> None:
    torch.manual_seed(0)
    model = build_model(arch, (3, 32, 32), 10, (0.1, 0.2, 0.3), (0.4, 0.5, 0.6)).eval()
    assert "0.mean" in model.state_dict() and "0.std" in model.state_dict()
    torch.manual_seed(1)
    fresh = build_model(arch, (3, 32, 32), 10, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)).eval()
    fresh.load_state_dict(model.state_dict(), strict=True)
    torch.testing.assert_close(fresh[0].mean.flatten(), torch.tensor([0.1, 0.2, 0.3]))
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(fresh(x), model(x))


@pytest.mark.parametrize(("arch", "shape"), [("vgg16_bn", (3, 28, 28)), ("cnn-small", (1, 16, 16))])
def test_unsupported_size(arch: str, shape: tuple[int, int, int]) -> None:
    with pytest.raises(UserError) as err:
        _build(arch, shape)
    msg = str(err.value)
    assert "\n" not in msg
    assert arch in msg and f"{shape[1]}x{shape[2]}" in msg
    for s in ARCHS.get(arch).input_sizes:
        assert f"{s}x{s}" in msg


def test_non_square_input_rejected() -> None:
    with pytest.raises(UserError, match="32x28"):
        _build("mlp", (3, 32, 28))


def test_mean_std_length_mismatch() -> None:
    with pytest.raises(UserError, match="per input channel"):
        build_model("mlp", (1, 28, 28), 10, CIFAR_MEAN, CIFAR_STD)


def test_unknown_arch() -> None:
    with pytest.raises(UserError) as err:
        _build("vgg19")
    msg = str(err.value)
    assert "\n" not in msg
    for name in EXPECTED_ARCHS:
        assert name in msg

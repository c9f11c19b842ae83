"""The fast bound propagation (attacks/bounds.py) against the implementation it replaced
(benchmarks/bounds_reference.py): the same bounds and the same gradients; batched or one example at a time, by
windows or by whole tensors, in chunks of any size, the same bounds."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from attacks import bounds
from benchmark.core.models import Normalize
from benchmarks import bounds_reference as reference
from tests.test_bounds import NETS


def _odd_conv_net() -> nn.Sequential:
    """Rectangular kernels, strides and padding, a dilation, a ReLU straight after the input normalisation and
    a BatchNorm between two convolutions with no ReLU in between (so a window must be cut to the tensor)."""
    net = nn.Sequential(Normalize([0.5], [0.25]), nn.ReLU(), nn.Conv2d(1, 3, (3, 2), stride=(2, 1), padding=(1, 0)),
                        nn.ReLU(), nn.Conv2d(3, 4, 3, padding=2, dilation=2), nn.BatchNorm2d(4),
                        nn.Conv2d(4, 5, 2, stride=2, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(60, 6), nn.ReLU(),
                        nn.Linear(6, 4))
    bn = net[5]
    bn.running_mean.uniform_(-0.5, 0.5)
    bn.running_var.uniform_(0.5, 2.0)
    nn.init.uniform_(bn.weight, -1.5, 1.5)  # negative scales too
    return net.eval()


ALL_NETS = {**NETS, "odd-conv": (_odd_conv_net, (1, 9, 7))}


def _inputs(name: str, batch: int, dtype: torch.dtype = torch.float64) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    torch.manual_seed(5)
    build, shape = ALL_NETS[name]
    model = build().to(dtype)
    classes = model[-1].out_features
    return model, torch.rand(batch, *shape, dtype=dtype), torch.randint(0, classes, (batch,))


@pytest.mark.parametrize("method", bounds.METHODS)
@pytest.mark.parametrize("net", ALL_NETS)
def test_the_bounds_are_the_reference_bounds(net, method):
    model, x, y = _inputs(net, 5)
    with torch.no_grad():
        fast = bounds.margin_bounds(model, x, y, 0.08, method)
        slow = reference.margin_bounds(model, x, y, 0.08, method)
    assert torch.allclose(fast, slow, atol=1e-9, rtol=0), (fast - slow).abs().max()


@pytest.mark.parametrize("method", ["crown", "sym"])
@pytest.mark.parametrize("net", ["mlp", "conv", "odd-conv"])
def test_a_batch_bounds_each_example_as_alone(net, method):
    model, x, y = _inputs(net, 7, torch.float32)
    with torch.no_grad():
        batched = bounds.margin_bounds(model, x, y, 0.1, method)
        alone = torch.cat([bounds.margin_bounds(model, x[i:i + 1], y[i:i + 1], 0.1, method) for i in range(len(x))])
    assert torch.allclose(batched, alone, atol=1e-5, rtol=0)


@pytest.mark.parametrize("method", ["crown-ibp", "crown", "sym"])
def test_chunks_of_examples_and_of_rows_give_the_same_bounds(method, monkeypatch):
    model, x, y = _inputs("odd-conv", 7)
    with torch.no_grad():
        whole = bounds.margin_bounds(model, x, y, 0.1, method)
        monkeypatch.setattr(bounds, "ROW_BUDGET", 50)  # one example per chunk, a few rows per chunk
        chunked = bounds.margin_bounds(model, x, y, 0.1, method)
    assert torch.allclose(chunked, whole, atol=1e-10, rtol=0)


@pytest.mark.parametrize("net", ["conv", "masked-conv", "odd-conv"])
@pytest.mark.parametrize("parallel", [False, True])
def test_windows_and_small_chunks_give_the_whole_tensors_bounds(net, parallel, monkeypatch):
    model, x, _ = _inputs(net, 3)
    network = bounds.network(model, tuple(x.shape[1:]))
    lower, upper = bounds.input_box(x, 0.1)
    _, _, pre = bounds.interval(network, lower, upper, len(network.ops))
    stop = max(i for i in pre if network.local(i))
    assert bounds._windowed(network, stop)
    n = bounds._flat(pre[stop][0]).shape[1]
    ex, neuron = torch.arange(3).repeat_interleave(n), torch.arange(n).repeat(3)
    signs = x.new_tensor([1.0, -1.0])
    with torch.no_grad():
        dense = bounds._dense_rows(network, stop, ex, neuron, signs, pre, parallel, lower, upper)
        windows = bounds.rows_bound(network, stop, ex, neuron, (1.0, -1.0), pre, parallel, lower, upper)
        monkeypatch.setattr(bounds, "ROW_BUDGET", 100)
        chunked = bounds.rows_bound(network, stop, ex, neuron, (1.0, -1.0), pre, parallel, lower, upper)
    assert torch.allclose(windows, dense, atol=1e-10, rtol=0)
    assert torch.allclose(chunked, windows, atol=1e-12, rtol=0)


def _grads(model: nn.Module, bound: torch.Tensor, y: torch.Tensor) -> list[torch.Tensor]:
    loss = F.cross_entropy(bounds.worst_case_logits(bound, y), y)
    return torch.autograd.grad(loss, list(model.parameters()))


@pytest.mark.parametrize("method", ["ibp", "crown-ibp", "crown", "sym"])
@pytest.mark.parametrize("net", ["mlp", "conv", "odd-conv"])
def test_gradients_are_the_reference_gradients(net, method):
    model, x, y = _inputs(net, 4)
    with torch.no_grad():  # some exact zeros, as a pruned model has: their gradients must match too
        for p in model.parameters():
            if p.dim() > 1:
                p.mul_(torch.rand_like(p) < 0.7)
    if method == "crown-ibp":  # the training bound, IBP and CROWN-IBP mixed
        fast = bounds.crown_ibp_bounds(model, x, y, 0.1, 0.4)
        slow = reference.crown_ibp_bounds(model, x, y, 0.1, 0.4)
    else:
        fast = bounds.margin_bounds(model, x, y, 0.1, method)
        slow = reference.margin_bounds(model, x, y, 0.1, method)
    for got, want in zip(_grads(model, fast, y), _grads(model, slow, y), strict=True):
        assert torch.allclose(got, want, atol=1e-9, rtol=1e-7), (got - want).abs().max()

"""Bound propagation (attacks/bounds.py): sound on every point of the box, exact at eps 0, no looser than it
must be against exact worst-case margins, differentiable, and strict about the layers it accepts."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from scipy.optimize import linprog
from torch import nn

from attacks import bounds
from benchmark.core.errors import UserError
from benchmark.core.models import Normalize

METHODS = bounds.METHODS


def _margins(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The exact margins z_y - z_j for j != y, shape (B, K-1), in the order of bounds.margin_spec."""
    logits = model(x)
    return (bounds.margin_spec(y, logits.shape[1], logits.dtype) @ logits.unsqueeze(2)).squeeze(2)


def _conv_net() -> nn.Sequential:
    """Every supported layer kind: Normalize, Conv2d (stride, padding), BatchNorm in eval mode, Flatten, Linear."""
    net = nn.Sequential(Normalize([0.4, 0.5], [0.3, 0.2]), nn.Conv2d(2, 4, 3, stride=2, padding=1), nn.ReLU(),
                        nn.BatchNorm2d(4), nn.Conv2d(4, 6, 3, padding=1), nn.ReLU(), nn.Flatten(),
                        nn.Linear(6 * 4 * 4, 12), nn.ReLU(), nn.Linear(12, 5))
    bn = net[3]
    bn.running_mean.uniform_(-0.5, 0.5)
    bn.running_var.uniform_(0.5, 2.0)
    nn.init.uniform_(bn.weight, 0.5, 1.5)
    return net.eval()


def _mlp() -> nn.Sequential:
    return nn.Sequential(nn.Flatten(), nn.Linear(12, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(),
                         nn.Linear(16, 7)).eval()


def _masked(net: nn.Sequential) -> nn.Sequential:
    """Half the weights of every layer pruned through a parametrization, as a pruner leaves the model."""
    from torch.nn.utils import parametrize

    class Keep(nn.Module):
        def __init__(self, keep: torch.Tensor) -> None:
            super().__init__()
            self.register_buffer("keep", keep)

        def forward(self, w: torch.Tensor) -> torch.Tensor:
            return w * self.keep

    for module in net.modules():
        if isinstance(module, nn.Linear | nn.Conv2d):
            parametrize.register_parametrization(module, "weight", Keep(torch.rand_like(module.weight) < 0.5))
    return net


NETS = {"mlp": (_mlp, (3, 2, 2)), "conv": (_conv_net, (2, 8, 8)),
        "masked-mlp": (lambda: _masked(_mlp()), (3, 2, 2)), "masked-conv": (lambda: _masked(_conv_net()), (2, 8, 8))}


def _box_points(x: torch.Tensor, eps: float, random: int) -> torch.Tensor:
    """(P, B, *shape): random points and random corners of each example's clamped box."""
    lower, upper = bounds.input_box(x, eps)
    inside = lower + (upper - lower) * torch.rand(random, *x.shape)
    corners = torch.where(torch.rand(random, *x.shape) < 0.5, lower, upper)
    return torch.cat([inside, corners])


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("net", NETS)
def test_no_point_of_the_box_falls_below_the_lower_bounds(net, method):
    torch.manual_seed(0)
    build, shape = NETS[net]
    model = build()
    x, y = torch.rand(6, *shape), torch.randint(0, 5, (6,))
    eps = 0.05
    with torch.no_grad():
        lower = bounds.margin_bounds(model, x, y, eps, method)
        points = _box_points(x, eps, 1000)  # 2,000 points per example
        margins = _margins(model, points.flatten(0, 1), y.repeat(len(points))).view(len(points), *lower.shape)
    assert torch.all(margins >= lower - 1e-5), (margins.min(0).values - lower).min()


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("net", ["mlp", "masked-conv"])
def test_at_eps_0_the_bounds_are_the_forward_pass(net, method):
    torch.manual_seed(1)
    build, shape = NETS[net]
    model = build()
    x, y = torch.rand(4, *shape), torch.randint(0, 5, (4,))
    with torch.no_grad():
        assert torch.allclose(bounds.margin_bounds(model, x, y, 0.0, method), _margins(model, x, y), atol=1e-5)


def test_the_box_is_clamped_to_the_pixel_range_not_to_the_batch():
    x = torch.tensor([[0.02, 0.5, 0.99]])
    lower, upper = bounds.input_box(x, 0.1)
    assert torch.allclose(lower, torch.tensor([[0.0, 0.4, 0.89]]))
    assert torch.allclose(upper, torch.tensor([[0.12, 0.6, 1.0]]))


def _exact_worst_margins(layers: list[nn.Linear], x: np.ndarray, y: int, eps: float) -> np.ndarray:
    """min over the box of z_y - z_j for each j != y, for Linear-ReLU-...-Linear, by enumerating the activation
    patterns of all hidden ReLUs: on each pattern the network is affine in x, so the minimum over the box and
    the pattern's region is a linear program."""
    weights = [(m.weight.detach().double().numpy(), m.bias.detach().double().numpy()) for m in layers]
    hidden = [w.shape[0] for w, _ in weights[:-1]]
    box = list(zip(np.clip(x - eps, 0, 1), np.clip(x + eps, 0, 1), strict=True))
    out_w, out_b = weights[-1]
    others = [j for j in range(out_w.shape[0]) if j != y]
    best = np.full(len(others), np.inf)
    for pattern in itertools.product((0.0, 1.0), repeat=sum(hidden)):
        a, c = np.eye(len(x)), np.zeros(len(x))  # the current layer's input as a x + c
        rows, limits = [], []
        for (w, b), d in zip(weights[:-1], np.split(np.array(pattern), np.cumsum(hidden)[:-1]), strict=True):
            a, c = w @ a, w @ c + b  # pre-activation
            sign = 1 - 2 * d  # active: -(a x + c) <= 0; inactive: a x + c <= 0
            rows.append(sign[:, None] * a)
            limits.append(-sign * c)
            a, c = d[:, None] * a, d * c
        for k, j in enumerate(others):
            row = out_w[y] - out_w[j]
            result = linprog(row @ a, A_ub=np.vstack(rows), b_ub=np.concatenate(limits), bounds=box, method="highs")
            if result.status == 0:
                best[k] = min(best[k], result.fun + row @ c + out_b[y] - out_b[j])
    return best


def test_every_method_bounds_the_exact_worst_case_margin_from_below(capsys):
    torch.manual_seed(3)
    layers = [nn.Linear(3, 5), nn.Linear(5, 4), nn.Linear(4, 4)]
    model = nn.Sequential(layers[0], nn.ReLU(), layers[1], nn.ReLU(), layers[2]).double()
    x = torch.rand(5, 3, dtype=torch.float64)
    y = torch.randint(0, 4, (5,))
    eps = 0.15
    exact = np.stack([_exact_worst_margins(layers, x[i].numpy(), int(y[i]), eps) for i in range(len(x))])
    with torch.no_grad():
        sampled = _margins(model, _box_points(x, eps, 2000).flatten(0, 1), y.repeat(4000)).view(4000, 5, 3).min(0)
        assert np.all(exact <= sampled.values.numpy() + 1e-9)  # the enumeration really is the minimum
        gaps = {}
        for method in METHODS:
            lower = bounds.margin_bounds(model, x, y, eps, method).numpy()
            assert np.all(lower <= exact + 1e-9), method
            gaps[method] = float((exact - lower).mean())
    with capsys.disabled():
        print("\nmean gap to the exact worst-case margin (2 hidden layers of 5 and 4 ReLUs): "
              + ", ".join(f"{m} {g:.4f}" for m, g in gaps.items()))
    assert gaps["crown"] <= gaps["crown-ibp"] + 1e-9  # CROWN's own intermediate bounds are never looser
    assert gaps["crown"] < gaps["ibp"]


class _BoundOf(nn.Module):
    """The margin lower bounds as a module's output, so torch.func.functional_call can vary the weights."""

    def __init__(self, net: nn.Module, x: torch.Tensor, y: torch.Tensor, method: str) -> None:
        super().__init__()
        self.net, self.x, self.y, self.method = net, x, y, method

    def forward(self) -> torch.Tensor:
        return bounds.margin_bounds(self.net, self.x, self.y, 0.1, self.method)


@pytest.mark.parametrize("method", METHODS)
def test_gradients_through_the_bounds_match_finite_differences(method):
    torch.manual_seed(4)
    net = nn.Sequential(nn.Linear(3, 5), nn.ReLU(), nn.Linear(5, 4), nn.ReLU(), nn.Linear(4, 3)).double()
    module = _BoundOf(net, torch.rand(3, 3, dtype=torch.float64), torch.tensor([0, 1, 2]), method)
    names = [name for name, _ in module.named_parameters()]

    def bound(*weights: torch.Tensor) -> torch.Tensor:
        return torch.func.functional_call(module, dict(zip(names, weights, strict=True)), ())

    weights = tuple(p.detach().clone().requires_grad_(True) for p in module.parameters())
    assert torch.autograd.gradcheck(bound, weights, eps=1e-6, atol=1e-5)


def test_an_unsupported_layer_is_named_in_one_line():
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(2, 2))
    with pytest.raises(UserError, match="objective ibp cannot bound layer MaxPool2d") as raised:
        bounds.layers_of(model, "objective ibp")
    assert "\n" not in str(raised.value)


def test_worst_case_logits_put_zero_at_the_true_class():
    lower = torch.tensor([[1.0, -2.0], [0.5, 3.0]])
    logits = bounds.worst_case_logits(lower, torch.tensor([2, 0]))
    assert torch.equal(logits, torch.tensor([[-1.0, 2.0, 0.0], [0.0, -0.5, -3.0]]))

"""The bound propagation of attacks/bounds.py before it was batched and sped up (commit 0212837), kept as the
oracle the fast code is tested against (same bounds, same gradients) and timed against by
benchmarks/bound_speed.py. Not used by rpbench itself.

Bound propagation on l-inf input boxes: lower bounds on the margins z_y - z_j of a feed-forward network.

The box around x is [max(x - eps, 0), min(x + eps, 1)]: clamped to the valid pixel range, never to the
batch's min and max (HYDRA's official code does that, which shrinks the threat set). Four methods:

- `ibp`: interval bound propagation (Gowal et al. 2018);
- `crown-ibp`: CROWN's backward linear relaxation with IBP bounds on every ReLU input (Zhang et al. 2020);
- `crown`: the same backward pass, with every ReLU input bounded by CROWN itself (tighter, costlier;
  for evaluating small networks);
- `sym`: symbolic intervals as in MixTrain (Wang et al. 2018): a forward pass of linear functions of the
  input, with one new error term per unstable ReLU (a zonotope).

Bounds are on a specification C z (rows e_y - e_j for every j != y), and C is folded into the affine layers
after the last ReLU, as the CROWN-IBP code does, so even `ibp` bounds the margins and not the logits one by one.
The layers are ordinary modules read through their `.weight`, so a pruner's masked (parametrized) weights are
what the bounds see, and gradients reach whatever the pruner trains (HYDRA's scores).

Supported: Linear, Conv2d, ReLU, Flatten, the models' Normalize, and BatchNorm as its eval-mode affine map,
in a flat (or nested) nn.Sequential. Everything is batched: no loop over examples or output classes.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from benchmark.core.errors import UserError
from benchmark.core.models import Normalize

METHODS = ("ibp", "crown-ibp", "crown", "sym")
SUPPORTED = (nn.Linear, nn.Conv2d, nn.ReLU, nn.Flatten, Normalize, nn.BatchNorm1d, nn.BatchNorm2d)


class UnsupportedLayer(UserError):
    """A layer bound propagation cannot handle."""


def layers_of(model: nn.Module, needed_by: str = "bound propagation") -> list[nn.Module]:
    """The model as a flat list of supported layers, or one line naming the first unsupported one."""
    if not isinstance(model, nn.Sequential):
        raise UnsupportedLayer(f"{needed_by} needs a feed-forward nn.Sequential model, got {type(model).__name__}")
    flat: list[nn.Module] = []
    for module in model:
        if isinstance(module, nn.Sequential):
            flat += layers_of(module, needed_by)
        elif isinstance(module, SUPPORTED):
            flat.append(module)
        else:
            raise UnsupportedLayer(f"{needed_by} cannot bound layer {type(module).__name__}; supported, in an "
                                   "nn.Sequential: Linear, Conv2d, ReLU, Flatten, Normalize, BatchNorm")
    for module in flat:
        if isinstance(module, nn.Conv2d) and module.padding_mode != "zeros":
            raise UnsupportedLayer(f"{needed_by} cannot bound Conv2d with padding_mode {module.padding_mode!r}")
        if isinstance(module, nn.BatchNorm1d | nn.BatchNorm2d) and module.running_mean is None:
            raise UnsupportedLayer(f"{needed_by} needs BatchNorm with running statistics ({module})")
    return flat


# --- affine layers: forward, |L|, adjoint and bias -------------------------------------------------------------


@dataclass
class Affine:
    """One affine layer f(x) = L x + b on tensors of shape (N, *in_shape)."""

    linear: Callable[[Tensor], Tensor]  # L x
    linear_abs: Callable[[Tensor], Tensor]  # |L| x
    adjoint: Callable[[Tensor, tuple[int, ...]], Tensor]  # L^T a, for a of shape (N, *out_shape)
    bias: Tensor | None  # broadcastable to out_shape
    mixing: bool = False  # Linear or Conv2d (combines inputs), not elementwise

    def __call__(self, x: Tensor) -> Tensor:
        out = self.linear(x)
        return out if self.bias is None else out + self.bias


def affine(module: nn.Module, in_shape: tuple[int, ...]) -> Affine:
    if isinstance(module, nn.Linear):
        w = module.weight
        return Affine(lambda x: F.linear(x, w), lambda x: F.linear(x, w.abs()), lambda a, shape: a @ w, module.bias,
                      mixing=True)
    if isinstance(module, nn.Conv2d):
        return _conv(module, in_shape)
    if isinstance(module, nn.Flatten):
        return Affine(lambda x: x.flatten(1), lambda x: x.flatten(1), lambda a, shape: a.reshape(-1, *shape), None)
    scale, shift = _elementwise(module, len(in_shape))
    return Affine(lambda x: x * scale, lambda x: x * scale.abs(), lambda a, shape: a * scale, shift)


def _conv(conv: nn.Conv2d, in_shape: tuple[int, ...]) -> Affine:
    w = conv.weight
    options = {"stride": conv.stride, "padding": conv.padding, "dilation": conv.dilation, "groups": conv.groups}

    def adjoint(a: Tensor, shape: tuple[int, ...]) -> Tensor:
        # conv_transpose2d is the adjoint of conv2d up to the rows and columns the stride dropped.
        size = [(o - 1) * s - 2 * p + d * (k - 1) + 1 for o, s, p, d, k in
                zip(a.shape[-2:], conv.stride, conv.padding, conv.dilation, w.shape[-2:], strict=True)]
        extra = tuple(int(i - s) for i, s in zip(shape[-2:], size, strict=True))
        # channels-last input: about 2x faster on the CPU for the many-channel adjoints (measured here)
        return F.conv_transpose2d(a.contiguous(memory_format=torch.channels_last), w, output_padding=extra,
                                  **options).contiguous()

    bias = conv.bias.view(-1, 1, 1) if conv.bias is not None else None
    return Affine(lambda x: F.conv2d(x, w, **options), lambda x: F.conv2d(x, w.abs(), **options), adjoint, bias,
                  mixing=True)


def _elementwise(module: nn.Module, dims: int) -> tuple[Tensor, Tensor]:
    """(scale, shift) of Normalize or an eval-mode BatchNorm, shaped to broadcast over (C, *spatial)."""
    if isinstance(module, Normalize):
        scale, shift = 1 / module.std.flatten(), -module.mean.flatten() / module.std.flatten()
    else:
        assert isinstance(module, nn.BatchNorm1d | nn.BatchNorm2d)
        scale = torch.rsqrt(module.running_var + module.eps)
        if module.weight is not None:
            scale = scale * module.weight
        shift = -module.running_mean * scale
        if module.bias is not None:
            shift = shift + module.bias
    view = (-1,) + (1,) * (dims - 1)
    return scale.view(view), shift.view(view)


# --- the network as a chain of affine maps and ReLUs -------------------------------------------------------------


@dataclass
class Network:
    """Supported layers with their input shapes; `ops[i]` is an Affine or None (a ReLU)."""

    ops: list[Affine | None]
    shapes: list[tuple[int, ...]]  # shapes[i]: input of ops[i] (without the batch); shapes[-1]: the output

    @property
    def first_mixing_relu(self) -> int:
        """The first ReLU preceded by two or more linear/conv layers: IBP is exact on the inputs of the ReLUs
        before it (a box through one linear map and elementwise maps), so CROWN starts refining there."""
        mixing = 0
        for i, op in enumerate(self.ops):
            if op is None and mixing >= 2:
                return i
            mixing += op is not None and op.mixing
        return len(self.ops)

    @property
    def last_relu(self) -> int:
        return max((i for i, op in enumerate(self.ops) if op is None), default=-1)


_SHAPES: weakref.WeakKeyDictionary[nn.Module, dict[tuple[int, ...], list[tuple[int, ...]]]] = \
    weakref.WeakKeyDictionary()  # model -> input shape -> layer shapes (a probe pass, once per model)


def network(model: nn.Module, input_shape: tuple[int, ...]) -> Network:
    known = _SHAPES.setdefault(model, {}).get(input_shape)
    ops: list[Affine | None] = []
    shapes = [tuple(input_shape)]
    param = next(model.parameters())
    probe = None if known else torch.zeros(1, *input_shape, device=param.device, dtype=param.dtype)
    for module in layers_of(model):
        ops.append(None if isinstance(module, nn.ReLU) else affine(module, shapes[-1]))
        if known:
            shapes.append(known[len(shapes)])
            continue
        with torch.no_grad():
            probe = probe if ops[-1] is None else ops[-1](probe)
        shapes.append(tuple(probe.shape[1:]))
    _SHAPES[model][input_shape] = shapes
    return Network(ops, shapes)


def margin_spec(y: Tensor, num_classes: int, dtype: torch.dtype = torch.float32) -> Tensor:
    """C of shape (B, K-1, K): row j is e_y - e_j for the j-th class other than y."""
    eye = torch.eye(num_classes, device=y.device, dtype=dtype)
    others = torch.arange(num_classes, device=y.device).expand(len(y), -1)
    others = others[others != y.unsqueeze(1)].view(len(y), num_classes - 1)
    return eye[y].unsqueeze(1) - eye[others]


def worst_case_logits(margin_lower: Tensor, y: Tensor) -> Tensor:
    """Logits whose CE is the robust CE of the bounds: 0 at the true class, -lower bound elsewhere."""
    num_classes = margin_lower.shape[1] + 1
    logits = torch.zeros(len(y), num_classes, dtype=margin_lower.dtype, device=margin_lower.device)
    keep = torch.ones_like(logits, dtype=torch.bool).scatter_(1, y.unsqueeze(1), False)
    return logits.masked_scatter(keep, -margin_lower)


def input_box(x: Tensor, eps: float) -> tuple[Tensor, Tensor]:
    return (x - eps).clamp(0, 1), (x + eps).clamp(0, 1)


# --- IBP ---------------------------------------------------------------------------------------------------------


def interval(net: Network, lower: Tensor, upper: Tensor, stop: int) -> tuple[Tensor, Tensor, list[tuple]]:
    """Intervals through ops[:stop]; also every ReLU's input bounds, as {index: (lower, upper)} pairs."""
    mid, rad = (upper + lower) / 2, (upper - lower) / 2
    pre: list[tuple] = []
    for i, op in enumerate(net.ops[:stop]):
        if op is None:
            lo, hi = (mid - rad).relu(), (mid + rad).relu()
            pre.append((i, mid - rad, mid + rad))
            mid, rad = (hi + lo) / 2, (hi - lo) / 2
        else:
            mid, rad = op(mid), op.linear_abs(rad)
    return mid - rad, mid + rad, pre


def _fold(net: Network, spec: Tensor, start: int) -> tuple[Tensor, Tensor]:
    """The spec composed with the affine ops from `start` to the end: (A on ops[start]'s input, constant)."""
    a, const = spec, spec.new_zeros(spec.shape[:2])
    for i in reversed(range(start, len(net.ops))):
        a, const = _through_affine(net.ops[i], a, const, net.shapes[i])
    return a, const


def _through_affine(op: Affine, a: Tensor, const: Tensor, in_shape: tuple[int, ...]) -> tuple[Tensor, Tensor]:
    """Move the linear function a . op(x) + const back to a' . x + const'."""
    batch, specs = a.shape[:2]
    if op.bias is not None:
        const = const + _dot(a, op.bias)
    a = op.adjoint(a.reshape(batch * specs, *a.shape[2:]), in_shape)
    return a.reshape(batch, specs, *in_shape), const


def _dot(a: Tensor, b: Tensor) -> Tensor:
    """a . b per example and spec row, for a of shape (B, S, *shape) and b broadcastable to shape (a
    per-channel bias is summed against a's channel sums, not multiplied out)."""
    spread = tuple(i - b.dim() for i, size in enumerate(b.shape) if size == 1)
    if spread:
        a = a.sum(spread, keepdim=True)
    return a.flatten(2) @ b.flatten()


def _concretize(a: Tensor, const: Tensor, lower: Tensor, upper: Tensor) -> Tensor:
    """The minimum of a . x + const over the box [lower, upper], per example and spec row."""
    mid, rad = ((upper + lower) / 2).flatten(1).unsqueeze(2), ((upper - lower) / 2).flatten(1).unsqueeze(2)
    a = a.flatten(2)
    return (a @ mid).squeeze(2) - (a.abs() @ rad).squeeze(2) + const


def ibp(net: Network, lower: Tensor, upper: Tensor, spec: Tensor) -> tuple[Tensor, list[tuple]]:
    start = net.last_relu + 1
    lo, hi, pre = interval(net, lower, upper, start)
    a, const = _fold(net, spec, start)
    return _concretize(a, const, lo, hi), pre


# --- CROWN -------------------------------------------------------------------------------------------------------


def _relu_relaxation(lower: Tensor, upper: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """(lower slope, upper slope, upper intercept) of CROWN's relaxation of ReLU on [lower, upper].

    Unstable neurons: upper line through (l, 0) and (u, u); lower line with slope 1 where u > -l, else 0.
    """
    unstable = (lower < 0) & (upper > 0)
    active = lower >= 0
    slope = torch.where(unstable, upper / (upper - lower).clamp_min(1e-12), active.to(lower.dtype))
    lower_slope = torch.where(unstable, (upper > -lower).to(lower.dtype), active.to(lower.dtype))
    intercept = torch.where(unstable, -slope * lower, torch.zeros_like(lower))
    return lower_slope, slope, intercept


def backward_bound(net: Network, a: Tensor, const: Tensor, stop: int, relu_bounds: dict[int, tuple],
                   lower: Tensor, upper: Tensor) -> Tensor:
    """Lower bound of a . z + const, where z is the input of ops[stop], over the input box."""
    for i in reversed(range(stop)):
        op = net.ops[i]
        if op is None:
            lo_slope, up_slope, intercept = _relu_relaxation(*relu_bounds[i])
            const = const + (a.clamp(max=0).flatten(2) @ intercept.flatten(1).unsqueeze(2)).squeeze(2)
            # the lower slope where a >= 0, the upper one elsewhere (cheaper than torch.where on the CPU)
            a = a * up_slope.unsqueeze(1) + a.clamp(min=0) * (lo_slope - up_slope).unsqueeze(1)
        else:
            a, const = _through_affine(op, a, const, net.shapes[i])
    return _concretize(a, const, lower, upper)


def _unstable_rows(lower: Tensor, upper: Tensor) -> tuple[Tensor, Tensor]:
    """Per example, the indices of its unstable neurons (l < 0 < u), padded to the batch's largest count with
    distinct stable ones, and which of them are real: (B, count) each. Per example, not the batch's union, so
    a batch costs what its most unstable example costs."""
    unstable = (lower < 0) & (upper > 0)
    count = int(unstable.sum(1).max())
    order = unstable.to(torch.int8).argsort(dim=1, descending=True, stable=True)[:, :count]
    return order, unstable.gather(1, order)


def _one_hot(order: Tensor, values: Tensor, neurons: int) -> Tensor:
    """(B, count, neurons): row k of example b is values[b, k] at neuron order[b, k], zero elsewhere."""
    rows = values.new_zeros(*order.shape, neurons)
    return rows.scatter(2, order.unsqueeze(2), values.unsqueeze(2))


def _tighten(net: Network, i: int, lo: Tensor, hi: Tensor, bounds: dict[int, tuple], lower: Tensor,
             upper: Tensor) -> tuple[Tensor, Tensor]:
    """CROWN bounds on the input of ReLU i for each example's unstable neurons (a stable neuron's relaxation is
    exact whatever its bounds), each kept where tighter than the bound it had."""
    flat_lo, flat_hi = lo.flatten(1), hi.flatten(1)
    order, real = _unstable_rows(flat_lo, flat_hi)
    count = order.shape[1]
    if count == 0:
        return lo, hi
    rows = _one_hot(order, real.to(lo.dtype), flat_lo.shape[1]).view(len(lo), count, *lo.shape[1:])
    bound = backward_bound(net, torch.cat([rows, -rows], 1), lo.new_zeros(len(lo), 2 * count), i, bounds, lower,
                           upper)
    old_lo, old_hi = flat_lo.gather(1, order), flat_hi.gather(1, order)
    new_lo = torch.where(real, torch.maximum(old_lo, bound[:, :count]), old_lo)
    new_hi = torch.where(real, torch.minimum(old_hi, -bound[:, count:]), old_hi)
    return flat_lo.scatter(1, order, new_lo).view_as(lo), flat_hi.scatter(1, order, new_hi).view_as(hi)


def crown(net: Network, lower: Tensor, upper: Tensor, spec: Tensor, intermediate: str) -> Tensor:
    """CROWN with IBP ("ibp") or CROWN ("crown") bounds on every ReLU's input; both are sound, and "crown"
    keeps the tighter of the two per neuron."""
    _, _, pre = interval(net, lower, upper, len(net.ops))
    bounds = {i: (lo, hi) for i, lo, hi in pre}
    if intermediate == "crown":
        for i in sorted(bounds):
            if i >= net.first_mixing_relu:
                bounds[i] = _tighten(net, i, *bounds[i], bounds, lower, upper)
    start = net.last_relu + 1
    a, const = _fold(net, spec, start)
    return backward_bound(net, a, const, start, bounds, lower, upper)


# --- symbolic intervals ---------------------------------------------------------------------------------------------


def symbolic(net: Network, lower: Tensor, upper: Tensor, spec: Tensor) -> Tensor:
    """Forward linear bounds: each neuron is center + sum_k g_k e_k over error terms e_k in [-1, 1], one per
    input pixel and one more for every unstable ReLU, whose relaxation slope u / (u - l) leaves a gap of
    -slope * l, split evenly around the new center."""
    batch = len(lower)
    center = (upper + lower) / 2
    inputs = lower[0].numel()
    gens = torch.diag_embed(((upper - lower) / 2).flatten(1)).view(batch, inputs, *lower.shape[1:])
    start = net.last_relu + 1
    for i, op in enumerate(net.ops[:start]):
        shape = net.shapes[i + 1]
        if op is not None:
            center = op(center)
            gens = op.linear(gens.reshape(-1, *net.shapes[i])).reshape(batch, -1, *shape)
            continue
        spread = gens.abs().sum(1)
        lo, hi = center - spread, center + spread
        unstable = (lo < 0) & (hi > 0)
        slope = torch.where(unstable, hi / (hi - lo).clamp_min(1e-12), (lo >= 0).to(lo.dtype))  # MixTrain's
        gap = torch.where(unstable, -slope * lo / 2, torch.zeros_like(lo))
        center = slope * center + gap
        gens = gens * slope.unsqueeze(1)
        order, _ = _unstable_rows(lo.flatten(1), hi.flatten(1))  # one new error term per unstable neuron
        fresh = _one_hot(order, gap.flatten(1).gather(1, order), gap[0].numel())
        gens = torch.cat([gens, fresh.view(batch, order.shape[1], *shape)], 1)
    a, const = _fold(net, spec, start)
    a = a.flatten(2)
    return (a @ center.flatten(1).unsqueeze(2)).squeeze(2) + const - (a @ gens.flatten(2).transpose(1, 2)).abs().sum(2)


# --- public entry points ---------------------------------------------------------------------------------------------


def margin_bounds(model: nn.Module, x: Tensor, y: Tensor, eps: float, method: str) -> Tensor:
    """Lower bounds (B, K-1) on z_y - z_j over the clamped eps-box around x, by `method` (one of METHODS).

    The example is verified when every entry is positive. Runs with the model's gradients enabled or not, as
    the caller has them: a training objective backpropagates through the result.
    """
    net = network(model, tuple(x.shape[1:]))
    lower, upper = input_box(x, eps)
    spec = margin_spec(y, net.shapes[-1][0], x.dtype)
    if method == "ibp":
        return ibp(net, lower, upper, spec)[0]
    if method in ("crown-ibp", "crown"):
        return crown(net, lower, upper, spec, intermediate="ibp" if method == "crown-ibp" else "crown")
    if method == "sym":
        return symbolic(net, lower, upper, spec)
    raise ValueError(f"unknown bound method {method!r}; valid: {', '.join(METHODS)}")


def crown_ibp_bounds(model: nn.Module, x: Tensor, y: Tensor, eps: float, beta: float) -> Tensor:
    """CROWN-IBP's training bound: beta x CROWN-IBP + (1 - beta) x IBP, one IBP pass shared by both; pure IBP
    (no backward pass) when beta is below 1e-5, as in the CROWN-IBP code."""
    net = network(model, tuple(x.shape[1:]))
    lower, upper = input_box(x, eps)
    spec = margin_spec(y, net.shapes[-1][0], x.dtype)
    ibp_lower, pre = ibp(net, lower, upper, spec)
    if beta < 1e-5:
        return ibp_lower
    start = net.last_relu + 1
    a, const = _fold(net, spec, start)
    crown_lower = backward_bound(net, a, const, start, {i: (lo, hi) for i, lo, hi in pre}, lower, upper)
    return beta * crown_lower + (1 - beta) * ibp_lower

"""Bound propagation on l-inf input boxes: lower bounds on the margins z_y - z_j of a feed-forward network.

The box around x is [max(x - eps, 0), min(x + eps, 1)]: clamped to the valid pixel range, never to the
batch's min and max (HYDRA's official code does that, which shrinks the threat set). Four methods:

- `ibp`: interval bound propagation (Gowal et al. 2018);
- `crown-ibp`: CROWN's backward linear relaxation with IBP bounds on every ReLU input (Zhang et al. 2020);
- `crown`: the same backward pass, with every ReLU input bounded by CROWN itself (tighter, costlier;
  for evaluating small networks);
- `sym`: symbolic intervals as in MixTrain (Wang et al. 2018): linear functions of the input with one new
  error term per unstable ReLU (a zonotope). Its relaxation of an unstable ReLU is CROWN's upper line
  s z - s l (s = u / (u - l)) with the parallel line s z below, so it is computed as a backward pass too:
  each neuron's bound is one backward pass from it, the margins' one from the specification.

Bounds are on a specification C z (rows e_y - e_j for every j != y), and C is folded into the affine layers
after the last ReLU, as the CROWN-IBP code does, so even `ibp` bounds the margins and not the logits one by one.
The layers are ordinary modules read through their `.weight`, so a pruner's masked (parametrized) weights are
what the bounds see, and gradients reach whatever the pruner trains (HYDRA's scores).

How it is fast:

- IBP computes each ReLU's input bounds once and shares them and the folded specification with CROWN-IBP;
- the backward pass keeps its rows channels-last (the CPU's conv-transposes run about 2x faster on them) and
  relaxes a ReLU with one multiply by its 0/1 activity plus a sparse correction on the unstable neurons only
  (CROWN), or with one multiply by its slopes (symbolic intervals, whose relaxation ignores a's sign);
- the certifiers batch across examples without padding: one backward pass per (example, neuron) row, in
  chunks of a fixed memory budget, and a row that starts at a convolution's output is carried as the window
  of the tensor it can reach (its receptive field), not as the whole tensor.

Supported: Linear, Conv2d, ReLU, Flatten, the models' Normalize, and BatchNorm as its eval-mode affine map,
in a flat (or nested) nn.Sequential. Nothing loops over examples or output classes.
"""

from __future__ import annotations

import math
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
ROW_BUDGET = 1 << 20  # elements of the largest tensor one chunk of rows may span (4 MiB in float32: fastest here)


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


# --- affine layers: forward, intervals, adjoint, windows ---------------------------------------------------------

Geometry = tuple[tuple[int, int], tuple[int, int], tuple[int, int]]  # per spatial dim: stride, offset, size


@dataclass
class Affine:
    """One affine layer f(x) = L x + b on tensors of shape (N, *in_shape)."""

    linear: Callable[[Tensor], Tensor]  # L x
    linear_abs: Callable[[Tensor], Tensor]  # |L| x
    adjoint: Callable[[Tensor, tuple[int, ...]], Tensor]  # L^T a, for a of shape (N, *out_shape)
    bias: Tensor | None  # broadcastable to out_shape
    mixing: bool = False  # Linear or Conv2d (combines inputs), not elementwise
    fused: Callable[[Tensor], Tensor] | None = None  # L x + b in one call (the bias inside conv2d / linear)
    window: Callable[[Tensor], Tensor] | None = None  # L^T on windows (no cropping), for local layers
    grow: Callable[[Geometry], Geometry] | None = None  # a window's geometry on the input, from the output's

    def __call__(self, x: Tensor) -> Tensor:
        if self.fused is not None:
            return self.fused(x)
        out = self.linear(x)
        return out if self.bias is None else out + self.bias


def affine(module: nn.Module, in_shape: tuple[int, ...]) -> Affine:
    if isinstance(module, nn.Linear):
        w, b = module.weight, module.bias
        return Affine(lambda x: F.linear(x, w), lambda x: F.linear(x, w.abs()), lambda a, shape: a @ w, b,
                      mixing=True, fused=lambda x: F.linear(x, w, b))
    if isinstance(module, nn.Conv2d):
        return _conv(module)
    if isinstance(module, nn.Flatten):
        return Affine(lambda x: x.flatten(1), lambda x: x.flatten(1), lambda a, shape: a.reshape(-1, *shape), None)
    scale, shift = _elementwise(module, len(in_shape))
    local = len(in_shape) == 3
    return Affine(lambda x: x * scale, lambda x: x * scale.abs(), lambda a, shape: a * scale, shift,
                  window=(lambda a: a * scale) if local else None, grow=(lambda g: g) if local else None)


def _conv(conv: nn.Conv2d) -> Affine:
    w, b = conv.weight, conv.bias
    options = {"stride": conv.stride, "padding": conv.padding, "dilation": conv.dilation, "groups": conv.groups}

    def adjoint(a: Tensor, shape: tuple[int, ...]) -> Tensor:
        # conv_transpose2d is the adjoint of conv2d up to the rows and columns the stride dropped.
        size = [(o - 1) * s - 2 * p + d * (k - 1) + 1 for o, s, p, d, k in
                zip(a.shape[-2:], conv.stride, conv.padding, conv.dilation, w.shape[-2:], strict=True)]
        extra = tuple(int(i - s) for i, s in zip(shape[-2:], size, strict=True))
        return F.conv_transpose2d(a.contiguous(memory_format=torch.channels_last), w, output_padding=extra,
                                  **options)

    def grow(geometry: Geometry) -> Geometry:
        stride, offset, size = geometry
        return (tuple(t * s for t, s in zip(stride, conv.stride, strict=True)),
                tuple(o * s + p for o, s, p in zip(offset, conv.stride, conv.padding, strict=True)),
                tuple((n - 1) * s + d * (k - 1) + 1 for n, s, d, k in
                      zip(size, conv.stride, conv.dilation, w.shape[-2:], strict=True)))

    def window(a: Tensor) -> Tensor:
        # as a matrix product and col2im: conv_transpose2d takes a slow path on many tiny windows (measured here)
        if conv.groups != 1:
            return F.conv_transpose2d(a, w, stride=conv.stride, dilation=conv.dilation, groups=conv.groups)
        rows, channels, height, width = a.shape
        cols = (a.reshape(rows, channels, height * width).transpose(1, 2) @ w.flatten(1)).transpose(1, 2)
        if height == width == 1:
            return cols.reshape(rows, *w.shape[1:])
        size = tuple((n - 1) * s + d * (k - 1) + 1 for n, s, d, k in
                     zip((height, width), conv.stride, conv.dilation, w.shape[-2:], strict=True))
        return F.fold(cols, size, w.shape[-2:], dilation=conv.dilation, stride=conv.stride)

    return Affine(lambda x: F.conv2d(x, w, **options), lambda x: F.conv2d(x, w.abs(), **options), adjoint,
                  b.view(-1, 1, 1) if b is not None else None, mixing=True,
                  fused=lambda x: F.conv2d(x, w, b, **options), window=window, grow=grow)


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

    def local(self, stop: int) -> bool:
        """Whether every layer before ops[stop] is local (Conv2d, elementwise on images, ReLU), so a row that
        starts at ops[stop]'s input is zero outside a window of every tensor below it."""
        return len(self.shapes[stop]) == 3 and all(op is None or op.window is not None for op in self.ops[:stop])


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


# --- the backward pass's layout: rows flat, channels last ------------------------------------------------------------


def _flat(t: Tensor) -> Tensor:
    """(N, *shape) as (N, neurons) in the order of the backward pass: channels last for (C, H, W) (a view of a
    channels-last tensor)."""
    return (t.permute(0, 2, 3, 1) if t.dim() == 4 else t).reshape(len(t), -1)


def _unflat(f: Tensor, shape: tuple[int, ...]) -> Tensor:
    """The inverse of _flat: (N, *shape), channels-last in memory for (C, H, W)."""
    if len(shape) == 3:
        return f.reshape(-1, shape[1], shape[2], shape[0]).permute(0, 3, 1, 2)
    return f.reshape(-1, *shape)


def _dot(a: Tensor, b: Tensor) -> Tensor:
    """a . b per row, for a of shape (N, *shape) and b broadcastable to shape (a per-channel bias is summed
    against a's channel sums, not multiplied out)."""
    spread = tuple(i - b.dim() for i, size in enumerate(b.shape) if size == 1)
    if spread:
        a = a.sum(spread, keepdim=True)
    return a.flatten(1) @ b.flatten()


def _concretize(a: Tensor, const: Tensor, mid: Tensor, rad: Tensor) -> Tensor:
    """The minimum of a . x + const over the box mid +- rad: a of shape (G * K, *shape) (K rows per group),
    const (G, K), mid and rad (G, *shape)."""
    groups, k = const.shape
    a = _flat(a).view(groups, k, -1)
    return (a @ _flat(mid).unsqueeze(2)).squeeze(2) - (a.abs() @ _flat(rad).unsqueeze(2)).squeeze(2) + const


# --- IBP ---------------------------------------------------------------------------------------------------------


def interval(net: Network, lower: Tensor, upper: Tensor, stop: int) -> tuple[Tensor, Tensor, dict[int, tuple]]:
    """Intervals through ops[:stop] as centre and radius; also every ReLU's input bounds, as {index: (lower,
    upper)}. (Measured here, [lower; upper] through one call per layer with the block weight [[W+, W-], [W-,
    W+]] is slower: twice the flops, and a copy per layer.)"""
    mid, rad = (upper + lower) / 2, (upper - lower) / 2
    pre: dict[int, tuple] = {}
    for i, op in enumerate(net.ops[:stop]):
        if op is None:
            low, high = mid - rad, mid + rad
            pre[i] = (low, high)
            low, high = low.relu(), high.relu()
            mid, rad = (high + low) / 2, (high - low) / 2
        else:
            mid, rad = op(mid), op.linear_abs(rad)
    return mid, rad, pre


def _fold(net: Network, spec: Tensor, start: int) -> tuple[Tensor, Tensor]:
    """The spec composed with the affine ops from `start` to the end: (A on ops[start]'s input, one row per
    example and spec row, and the constant (B, rows))."""
    batch, k = spec.shape[:2]
    a, const = spec.reshape(batch * k, *spec.shape[2:]), spec.new_zeros(batch, k)
    for i in reversed(range(start, len(net.ops))):
        op = net.ops[i]
        if op.bias is not None:
            const = const + _dot(a, op.bias).view(batch, k)
        a = op.adjoint(a, net.shapes[i])
    return a, const


def ibp(net: Network, lower: Tensor, upper: Tensor, spec: Tensor) -> tuple[Tensor, dict[int, tuple]]:
    start = net.last_relu + 1
    mid, rad, pre = interval(net, lower, upper, start)
    a, const = _fold(net, spec, start)
    return _concretize(a, const, mid, rad), pre


# --- ReLU relaxations ---------------------------------------------------------------------------------------------


@dataclass
class Relaxation:
    """Linear bounds of the ReLUs of one layer for G groups of rows: a' = a x activity on stable neurons, and on
    the unstable ones (rows[m], cols[m]) the lower line's slope where a >= 0, the upper line's elsewhere, whose
    intercept adds min(a, 0) x intercept to the bound."""

    active: Tensor  # (G, 1, neurons): 1 where the neuron is stably active, else 0
    rows: Tensor  # (M,) group of each unstable neuron
    cols: Tensor  # (M,) its index among the layer's neurons (in _flat's order)
    lower: Tensor  # (M,) slope of the lower line
    upper: Tensor  # (M,) slope of the upper line
    intercept: Tensor  # (M,) the upper line's value at 0

    def select(self, ex: Tensor) -> Relaxation:
        """The relaxation of group ex[g] as group g (this one's unstable neurons are listed by group)."""
        per_group = torch.bincount(self.rows, minlength=len(self.active))
        counts = per_group[ex]
        rows = torch.repeat_interleave(torch.arange(len(ex), device=ex.device), counts)
        # new entry t of group g is old entry t - (where g's entries start now) + (where ex[g]'s started)
        offset = (per_group.cumsum(0) - per_group)[ex] - (counts.cumsum(0) - counts)
        k = torch.arange(len(rows), device=ex.device) + torch.repeat_interleave(offset, counts)
        return Relaxation(self.active[ex], rows, self.cols[k], self.lower[k], self.upper[k], self.intercept[k])

    def apply(self, a: Tensor) -> tuple[Tensor, Tensor]:
        """a (G, K, neurons) through the ReLUs backwards: (a', the constant it adds, (G, K))."""
        return _Relax.apply(a, self.active, self.rows, self.cols, self.lower, self.upper, self.intercept)


@dataclass
class ParallelRelaxation:
    """Symbolic intervals' relaxation: slope s = u / (u - l) on an unstable neuron (the activity on stable
    ones) whatever the sign of a, and the error term gap = -s l / 2 around the shifted centre, which adds
    a x gap - |a| x gap (so no sparse correction: a dense multiply and two products; abs's subgradient 0 at
    a = 0 is the previous code's)."""

    slope: Tensor  # (G, 1, neurons)
    gap: Tensor  # (G, neurons, 1)

    def select(self, ex: Tensor) -> ParallelRelaxation:
        return ParallelRelaxation(self.slope[ex], self.gap[ex])

    def apply(self, a: Tensor) -> tuple[Tensor, Tensor]:
        return a * self.slope, (a @ self.gap).squeeze(2) - (a.abs() @ self.gap).squeeze(2)


def relaxation(lower: Tensor, upper: Tensor, parallel: bool) -> Relaxation | ParallelRelaxation:
    """The relaxation on flat bounds (G, neurons). Upper line through (l, 0) and (u, u); lower line through 0
    with slope 1 where u > -l, else 0 (CROWN's adaptive choice), or parallel to the upper one (symbolic
    intervals, whose error term is the gap between the two)."""
    if parallel:
        slope, _, intercept = _slopes(lower, upper, True)
        return ParallelRelaxation(slope.unsqueeze(1), (intercept / 2).unsqueeze(2))
    rows, cols = ((lower < 0) & (upper > 0)).nonzero(as_tuple=True)
    low, high = lower[rows, cols], upper[rows, cols]
    slope = high / (high - low).clamp_min(1e-12)
    return Relaxation((lower >= 0).to(lower.dtype).unsqueeze(1), rows, cols, (high > -low).to(lower.dtype), slope,
                      -slope * low)


class _Relax(torch.autograd.Function):
    """Relaxation.apply: one dense multiply by the activity, the sign-dependent slopes on the unstable neurons
    only, in both directions (autograd through the elementwise formula makes about ten passes over a).

    Subgradients at a = 0 are those of the dense formula it replaces, a * upper + clamp(a, min=0) * (lower -
    upper) + clamp(a, max=0) * intercept, whose clamps pass no gradient at 0: the upper slope, no intercept."""

    @staticmethod
    def forward(ctx, a: Tensor, active: Tensor, rows: Tensor, cols: Tensor, lower: Tensor, upper: Tensor,
                intercept: Tensor) -> tuple[Tensor, Tensor]:
        out = a * active
        picked = a[rows, :, cols]  # (M, K)
        neg = picked.clamp(max=0)
        out[rows, :, cols] = picked * lower.unsqueeze(1) + neg * (upper - lower).unsqueeze(1)
        const = a.new_zeros(a.shape[:2]).index_add_(0, rows, neg * intercept.unsqueeze(1))
        ctx.save_for_backward(active, rows, cols, picked, lower, upper, intercept)
        return out, const

    @staticmethod
    def backward(ctx, grad_out: Tensor, grad_const: Tensor) -> tuple[Tensor | None, ...]:
        active, rows, cols, picked, lower, upper, intercept = ctx.saved_tensors
        grad_a = grad_out * active
        picked_grad, const_grad = grad_out[rows, :, cols], grad_const[rows]
        slope = torch.where(picked > 0, lower.unsqueeze(1), upper.unsqueeze(1))
        grad_a[rows, :, cols] = picked_grad * slope + const_grad * intercept.unsqueeze(1) * (picked < 0)
        neg = picked.clamp(max=0)
        return (grad_a, None, None, None, (picked_grad * picked.clamp(min=0)).sum(1), (picked_grad * neg).sum(1),
                (const_grad * neg).sum(1))


# --- backward passes ----------------------------------------------------------------------------------------------


def backward_bound(net: Network, a: Tensor, const: Tensor, stop: int,
                   relaxations: dict[int, Relaxation | ParallelRelaxation],
                   lower: Tensor, upper: Tensor) -> Tensor:
    """Lower bound of a . z + const, where z is the input of ops[stop], over the input box: a of shape
    (G * K, *shape) (K rows for each of G groups: examples, or (example, neuron) pairs), const (G, K), the
    relaxations and the box (G, *input shape) per group."""
    groups, k = const.shape
    for i in reversed(range(stop)):
        op = net.ops[i]
        if op is None:
            a, added = relaxations[i].apply(_flat(a).view(groups, k, -1))
            a, const = _unflat(a.view(groups * k, -1), net.shapes[i]), const + added
        else:
            if op.bias is not None:
                const = const + _dot(a, op.bias).view(groups, k)
            a = op.adjoint(a, net.shapes[i])
    return _concretize(a, const, (upper + lower) / 2, (upper - lower) / 2)


def _chunks(count: int, rows_per_group: int, largest: int) -> list[slice]:
    """Chunks of groups whose rows span at most ROW_BUDGET elements of the largest tensor they reach."""
    step = max(1, ROW_BUDGET // (rows_per_group * largest))
    return [slice(first, first + step) for first in range(0, count, step)]


def _dense_rows(net: Network, stop: int, ex: Tensor, neuron: Tensor, signs: Tensor, bounds: dict[int, tuple],
                parallel: bool, lower: Tensor, upper: Tensor) -> Tensor:
    """rows_bound with every row a whole tensor at each layer."""
    shape, k = net.shapes[stop], len(signs)
    relax = {i: relaxation(_flat(lo), _flat(hi), parallel) for i, (lo, hi) in bounds.items() if i < stop}
    out = []
    for part in _chunks(len(ex), k, max(math.prod(s) for s in net.shapes[:stop + 1])):
        e = ex[part]
        a = F.one_hot(neuron[part], math.prod(shape)).to(lower.dtype).unsqueeze(1) * signs.view(1, k, 1)
        out.append(backward_bound(net, _unflat(a.view(len(e) * k, -1), shape), a.new_zeros(len(e), k), stop,
                                  {i: r.select(e) for i, r in relax.items()}, lower[e], upper[e]))
    return torch.cat(out)


def _windows(net: Network, stop: int) -> list[tuple[int, Geometry]]:
    """For each op below `stop`, top down, the geometry of the window a row at ops[stop]'s input spans on the
    op's input: positions [p x stride - offset, p x stride - offset + size) per spatial dim, p the row's."""
    geometry: Geometry = ((1, 1), (0, 0), (1, 1))
    plan = []
    for i in reversed(range(stop)):
        op = net.ops[i]
        if op is not None:
            geometry = op.grow(geometry)
        plan.append((i, geometry))
    return plan


def _unfold(table: Tensor, geometry: Geometry, positions: tuple[int, ...]) -> Tensor:
    """Every window of this geometry of a (B, C, H, W) table, one per row position (zero where it leaves the
    tensor), flat: (B x positions, C x size), row (b, h, w) at b x positions + h x positions_w + w. By views,
    not F.unfold, whose im2col takes about 0.4 s for even a tiny table here."""
    (sh, sw), (ph, pw), (kh, kw) = geometry
    height, width = table.shape[-2:]
    pad_h, pad_w = max(0, (positions[0] - 1) * sh - ph + kh - height), max(0, (positions[1] - 1) * sw - pw + kw - width)
    windows = F.pad(table, (pw, pad_w, ph, pad_h)).unfold(2, kh, sh).unfold(3, kw, sw)
    return windows[:, :, :positions[0], :positions[1]].permute(0, 2, 3, 1, 4, 5).reshape(
        len(table) * positions[0] * positions[1], -1)


def _slopes(lo: Tensor, hi: Tensor, parallel: bool) -> tuple[Tensor, Tensor, Tensor]:
    """Dense tables of a ReLU layer's relaxation (as `relaxation`, for windows): the upper slope (the activity
    on stable neurons), the lower slope minus it, and the intercept."""
    unstable = (lo < 0) & (hi > 0)
    active = (lo >= 0).to(lo.dtype)
    slope = torch.where(unstable, hi / (hi - lo).clamp_min(1e-12), active)
    lower = slope if parallel else torch.where(unstable, (hi > -lo).to(lo.dtype), active)
    return slope, lower - slope, torch.where(unstable, -slope * lo, torch.zeros_like(lo))


def _inside(geometry: Geometry, shape: tuple[int, ...], h: Tensor, w: Tensor) -> Tensor:
    """(rows, 1, size_h, size_w): which entries of each row's window lie inside the tensor of that shape."""
    (sh, sw), (ph, pw), (kh, kw) = geometry
    ys = h.unsqueeze(1) * sh - ph + torch.arange(kh, device=h.device)
    xs = w.unsqueeze(1) * sw - pw + torch.arange(kw, device=w.device)
    return (((ys >= 0) & (ys < shape[1])).unsqueeze(2) & ((xs >= 0) & (xs < shape[2])).unsqueeze(1)).unsqueeze(1)


def _window_rows(net: Network, stop: int, ex: Tensor, h: Tensor, w: Tensor, coeff: Tensor,
                 bounds: dict[int, tuple], parallel: bool, lower: Tensor, upper: Tensor) -> Tensor:
    """Lower bounds of the rows coeff[g] (K of them) on the channels at position (h[g], w[g]) of ops[stop]'s
    input over example ex[g]'s box, (G, K), with every row the window of each tensor it can reach (a row at a
    convolution's output position p depends on a patch of the layer below around p x stride, and so on down
    to the input); coeff of shape (G or 1, K, C). The relaxation and box tables are zero outside the tensors,
    and a window is cut to the tensor after a convolution that an affine layer follows (a ReLU's tables cut
    it anyway), so the windows are exactly the dense rows' nonzero parts. The relaxation is the dense formula
    on the windows (small), with Relaxation's subgradients; a group's K rows share its tables."""
    channels, height, width = net.shapes[stop]
    k, plan = coeff.shape[1], _windows(net, stop)
    positions = (height, width)
    tables = {i: [_unfold(t, g, positions) for t in _slopes(*bounds[i], parallel)]
              for i, g in plan if net.ops[i] is None}
    mid, rad = (_unfold(t, plan[-1][1], positions) for t in ((upper + lower) / 2, (upper - lower) / 2))
    largest = max(net.shapes[i][0] * g[2][0] * g[2][1] for i, g in plan)
    out = []
    for part in _chunks(len(ex), k, largest):
        e, hh, ww = ex[part], h[part], w[part]
        at = (e * height + hh) * width + ww
        groups = len(e)
        a = (coeff[part] if len(coeff) > 1 else coeff.expand(groups, -1, -1)).reshape(groups * k, channels, 1, 1)
        const = a.new_zeros(groups, k)
        for i, geometry in plan:
            op = net.ops[i]
            if op is None:
                slope, diff, intercept = (t[at].unsqueeze(1) for t in tables[i])
                flat = a.reshape(groups, k, -1)
                if parallel:  # a x shift - |a| x gap, as symbolic intervals carry them (abs: no gradient at 0)
                    half = intercept.transpose(1, 2) / 2
                    const = const + (flat @ half).squeeze(2) - (flat.abs() @ half).squeeze(2)
                    a = (flat * slope).view(a.shape)
                else:
                    const = const + (flat.clamp(max=0) @ intercept.transpose(1, 2)).squeeze(2)
                    a = (flat * slope + flat.clamp(min=0) * diff).view(a.shape)
                continue
            if op.bias is not None:
                const = const + _dot(a, op.bias).view(groups, k)
            a = op.window(a)
            if op.mixing and i > 0 and net.ops[i - 1] is not None:  # a ReLU's zero-padded tables cut it anyway
                a = (a.view(groups, k, *a.shape[1:]) * _inside(geometry, net.shapes[i], hh, ww).unsqueeze(1)).view(
                    a.shape)
        a = a.reshape(groups, k, -1)
        out.append((a @ mid[at].unsqueeze(2)).squeeze(2) - (a.abs() @ rad[at].unsqueeze(2)).squeeze(2) + const)
    return torch.cat(out)


def _windowed(net: Network, stop: int) -> bool:
    """Whether rows at ops[stop]'s input go by windows: every layer below is local and the windows are smaller
    than the tensors."""
    if not net.local(stop):
        return False
    plan = _windows(net, stop)
    return sum(net.shapes[i][0] * g[2][0] * g[2][1] for i, g in plan) < sum(math.prod(net.shapes[i]) for i, _ in plan)


def rows_bound(net: Network, stop: int, ex: Tensor, neuron: Tensor, signs: tuple[float, ...],
               bounds: dict[int, tuple], parallel: bool, lower: Tensor, upper: Tensor) -> Tensor:
    """For each (example, neuron) pair and sign, the lower bound of sign x z[neuron] over the example's box,
    z the input of ops[stop] (neurons in _flat's order), with the ReLUs below relaxed on `bounds`: (pairs,
    signs). One backward pass per row, batched across examples without padding, in chunks of ROW_BUDGET; by
    windows when they are smaller than the tensors."""
    signs_t = lower.new_tensor(signs)
    if not _windowed(net, stop):
        return _dense_rows(net, stop, ex, neuron, signs_t, bounds, parallel, lower, upper)
    channels, _, width = net.shapes[stop]
    coeff = F.one_hot(neuron % channels, channels).to(lower.dtype).unsqueeze(1) * signs_t.view(1, -1, 1)
    position = neuron // channels
    return _window_rows(net, stop, ex, position // width, position % width, coeff, bounds, parallel, lower, upper)


def _every_neuron(net: Network, stop: int, bounds: dict[int, tuple], parallel: bool, lower: Tensor,
                  upper: Tensor) -> Tensor:
    """rows_bound of every neuron of every example, (B, neurons), with the rows that share an example (whole
    tensors) or an example and a position (windows) as one group, which shares its tables."""
    batch, shape = len(lower), net.shapes[stop]
    n = math.prod(shape)
    if _windowed(net, stop):  # a group per (example, position), its rows the channels there
        channels, height, width = shape
        ex = torch.arange(batch, device=lower.device).repeat_interleave(height * width)
        position = torch.arange(height * width, device=lower.device).repeat(batch)
        coeff = torch.eye(channels, dtype=lower.dtype, device=lower.device).unsqueeze(0)
        return _window_rows(net, stop, ex, position // width, position % width, coeff, bounds, parallel, lower,
                            upper).view(batch, n)
    relax = {i: relaxation(_flat(lo), _flat(hi), parallel) for i, (lo, hi) in bounds.items() if i < stop}
    eye = torch.eye(n, dtype=lower.dtype, device=lower.device)
    out = []
    for part in _chunks(batch, n, max(math.prod(s) for s in net.shapes[:stop + 1])):
        e = torch.arange(batch, device=lower.device)[part]
        a = _unflat(eye.repeat(len(e), 1), shape)
        out.append(backward_bound(net, a, lower.new_zeros(len(e), n), stop, {i: r.select(e) for i, r in relax.items()},
                                  lower[part], upper[part]))
    return torch.cat(out)


# --- the certifiers ------------------------------------------------------------------------------------------------


def _tighten(net: Network, i: int, lo: Tensor, hi: Tensor, bounds: dict[int, tuple], lower: Tensor,
             upper: Tensor) -> tuple[Tensor, Tensor]:
    """CROWN bounds on the input of ReLU i for each example's unstable neurons (a stable neuron's relaxation is
    exact whatever its bounds), each kept where tighter than the bound it had."""
    flat_lo, flat_hi = _flat(lo), _flat(hi)
    ex, neuron = ((flat_lo < 0) & (flat_hi > 0)).nonzero(as_tuple=True)
    if len(ex) == 0:
        return lo, hi
    bound = rows_bound(net, i, ex, neuron, (1.0, -1.0), bounds, False, lower, upper)
    new_lo = flat_lo.index_put((ex, neuron), torch.maximum(flat_lo[ex, neuron], bound[:, 0]))
    new_hi = flat_hi.index_put((ex, neuron), torch.minimum(flat_hi[ex, neuron], -bound[:, 1]))
    return _unflat(new_lo, net.shapes[i]), _unflat(new_hi, net.shapes[i])


def _final(net: Network, bounds: dict[int, tuple], parallel: bool, lower: Tensor, upper: Tensor,
           spec: Tensor) -> Tensor:
    """The margins' lower bounds: the spec's backward pass with every ReLU relaxed on `bounds`."""
    start = net.last_relu + 1
    a, const = _fold(net, spec, start)
    relax = {i: relaxation(_flat(lo), _flat(hi), parallel) for i, (lo, hi) in bounds.items()}
    return backward_bound(net, a, const, start, relax, lower, upper)


def crown(net: Network, lower: Tensor, upper: Tensor, spec: Tensor, intermediate: str) -> Tensor:
    """CROWN with IBP ("ibp") or CROWN ("crown") bounds on every ReLU's input; both are sound, and "crown"
    keeps the tighter of the two per neuron."""
    _, _, bounds = interval(net, lower, upper, net.last_relu + 1)
    if intermediate == "crown":
        for i in sorted(bounds):
            if i >= net.first_mixing_relu:
                bounds[i] = _tighten(net, i, *bounds[i], bounds, lower, upper)
    return _final(net, bounds, False, lower, upper, spec)


def symbolic(net: Network, lower: Tensor, upper: Tensor, spec: Tensor) -> Tensor:
    """Symbolic intervals: every neuron's lower bound by a backward pass from it (centre - spread: the upper
    one is centre + spread), the centre carried forward as MixTrain does (slope x centre + half the gap -s l
    of an unstable ReLU), and the margins' bound by the spec's backward pass."""
    center = (upper + lower) / 2
    _, _, ibp_bounds = interval(net, lower, upper, net.last_relu + 1)
    bounds: dict[int, tuple] = {}
    mixing = 0
    for i, op in enumerate(net.ops[:net.last_relu + 1]):
        if op is not None:
            center, mixing = op(center), mixing + op.mixing
            continue
        if not bounds and mixing <= 1:  # the first ReLU, after at most one linear map: there IBP is exact
            lo, hi = ibp_bounds[i]
        else:
            low = _every_neuron(net, i, bounds, True, lower, upper)
            lo, hi = _unflat(low, net.shapes[i]), _unflat(2 * _flat(center) - low, net.shapes[i])
        bounds[i] = (lo, hi)
        unstable = (lo < 0) & (hi > 0)
        slope = torch.where(unstable, hi / (hi - lo).clamp_min(1e-12), (lo >= 0).to(lo.dtype))  # MixTrain's
        center = slope * center + torch.where(unstable, -slope * lo / 2, torch.zeros_like(lo))
    return _final(net, bounds, True, lower, upper, spec)


# --- public entry points ---------------------------------------------------------------------------------------------


def margin_bounds(model: nn.Module, x: Tensor, y: Tensor, eps: float, method: str) -> Tensor:
    """Lower bounds (B, K-1) on z_y - z_j over the clamped eps-box around x, by `method` (one of METHODS).

    The example is verified when every entry is positive. Runs with the model's gradients enabled or not, as
    the caller has them: a training objective backpropagates through the result. Any batch size: the backward
    passes go in chunks of examples, and `crown` and `sym` batch their per-neuron ones across the examples in
    chunks of ROW_BUDGET, without padding, so a batch costs the sum of its examples, not its most unstable
    example times the batch.
    """
    net = network(model, tuple(x.shape[1:]))
    lower, upper = input_box(x, eps)
    spec = margin_spec(y, net.shapes[-1][0], x.dtype)
    if method == "ibp":
        return ibp(net, lower, upper, spec)[0]
    if method in ("crown-ibp", "crown"):
        def certify(lo: Tensor, hi: Tensor, c: Tensor) -> Tensor:
            return crown(net, lo, hi, c, intermediate="ibp" if method == "crown-ibp" else "crown")
    elif method == "sym":
        def certify(lo: Tensor, hi: Tensor, c: Tensor) -> Tensor:
            return symbolic(net, lo, hi, c)
    else:
        raise ValueError(f"unknown bound method {method!r}; valid: {', '.join(METHODS)}")
    parts = _chunks(len(x), spec.shape[1], max(math.prod(shape) for shape in net.shapes))
    return torch.cat([certify(lower[part], upper[part], spec[part]) for part in parts])


def crown_ibp_bounds(model: nn.Module, x: Tensor, y: Tensor, eps: float, beta: float) -> Tensor:
    """CROWN-IBP's training bound: beta x CROWN-IBP + (1 - beta) x IBP, one IBP pass and one folded
    specification shared by both; pure IBP (no backward pass) when beta is below 1e-5, as in the CROWN-IBP code."""
    net = network(model, tuple(x.shape[1:]))
    lower, upper = input_box(x, eps)
    spec = margin_spec(y, net.shapes[-1][0], x.dtype)
    start = net.last_relu + 1
    mid, rad, pre = interval(net, lower, upper, start)
    a, const = _fold(net, spec, start)
    ibp_lower = _concretize(a, const, mid, rad)
    if beta < 1e-5:
        return ibp_lower
    relax = {i: relaxation(_flat(lo), _flat(hi), parallel=False) for i, (lo, hi) in pre.items()}
    return beta * backward_bound(net, a, const, start, relax, lower, upper) + (1 - beta) * ibp_lower

"""Model architectures: a registry of bodies plus a `Normalize` input layer.

Every model built by `build_model` takes inputs in [0, 1] pixel space; normalization is its first layer,
so attacks and certified bounds can be expressed on raw pixels. Only ordinary `nn.Conv2d`, `nn.Linear`,
`nn.BatchNorm2d` and (non-inplace) `nn.ReLU` modules hold parameters or apply non-linearities, because
pruning wraps their `.weight` with torch parametrizations and must see every use of it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from benchmark.core.data import DATASETS
from benchmark.core.errors import UserError
from benchmark.core.registry import Registry

__all__ = [
    "ARCHS",
    "ArchInfo",
    "Normalize",
    "build_model",
    "model_for",
    "prunable_weight_count",
]


class Normalize(nn.Module):
    """Per-channel `(x - mean) / std`; mean and std are buffers so they travel with the state_dict."""

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        if len(mean) != len(std) or len(mean) == 0:
            raise UserError(
                f"normalize: mean/std lengths must match and be > 0, got {len(mean)} and {len(std)}"
            )
        if any(float(s) <= 0 for s in std):
            raise UserError(f"normalize: std must be positive, got {list(std)}")
        self.register_buffer("mean", torch.tensor([float(m) for m in mean]).view(-1, 1, 1))
        self.register_buffer("std", torch.tensor([float(s) for s in std]).view(-1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std

    def extra_repr(self) -> str:
        mean = [round(v, 6) for v in self.mean.flatten().tolist()]
        std = [round(v, 6) for v in self.std.flatten().tolist()]
        return f"mean={mean}, std={std}"


@dataclass(frozen=True)
class ArchInfo:
    name: str
    description: str
    input_sizes: tuple[int, ...]
    build: Callable[[int, int, int], nn.Module]


ARCHS: Registry[ArchInfo] = Registry("arch")


def _arch(name: str, description: str, input_sizes: tuple[int, ...]) -> Callable:
    """Decorator registering a body builder `(in_channels, input_size, num_classes) -> nn.Module`."""

    def add(build: Callable[[int, int, int], nn.Module]) -> Callable[[int, int, int], nn.Module]:
        ARCHS.add(name, ArchInfo(name=name, description=description, input_sizes=input_sizes, build=build))
        return build

    return add


def _conv3x3(in_ch: int, out_ch: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_ch, out_ch, kernel_size=3, stride=stride, padding=1, bias=False)


def _conv1x1(in_ch: int, out_ch: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_ch, out_ch, kernel_size=1, stride=stride, padding=0, bias=False)


def _init_conv_bn(model: nn.Module) -> None:
    """He init (fan_out) for convs, identity BN, zero linear bias (as in the WRN/VGG reference code)."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear) and m.bias is not None:
            nn.init.zeros_(m.bias)


# --- small models for verification (flat Sequentials of Conv2d/Linear/ReLU/Flatten only) ---------------


@_arch("mlp", "3-layer MLP (256-256), for small verification experiments", (8, 28, 32))
def _build_mlp(in_ch: int, size: int, num_classes: int) -> nn.Module:
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(in_ch * size * size, 256),
        nn.ReLU(inplace=False),
        nn.Linear(256, 256),
        nn.ReLU(inplace=False),
        nn.Linear(256, num_classes),
    )


@_arch("cnn-small", "Wong & Kolter small CNN (2 conv + 2 linear), for certified training", (8, 28, 32))
def _build_cnn_small(in_ch: int, size: int, num_classes: int) -> nn.Module:
    feat = size // 4
    return nn.Sequential(
        nn.Conv2d(in_ch, 16, 4, stride=2, padding=1),
        nn.ReLU(inplace=False),
        nn.Conv2d(16, 32, 4, stride=2, padding=1),
        nn.ReLU(inplace=False),
        nn.Flatten(),
        nn.Linear(32 * feat * feat, 100),
        nn.ReLU(inplace=False),
        nn.Linear(100, num_classes),
    )


@_arch("cnn-large", "Wong & Kolter large CNN (4 conv + 3 linear), for certified training", (8, 28, 32))
def _build_cnn_large(in_ch: int, size: int, num_classes: int) -> nn.Module:
    feat = size // 4
    return nn.Sequential(
        nn.Conv2d(in_ch, 32, 3, stride=1, padding=1),
        nn.ReLU(inplace=False),
        nn.Conv2d(32, 32, 4, stride=2, padding=1),
        nn.ReLU(inplace=False),
        nn.Conv2d(32, 64, 3, stride=1, padding=1),
        nn.ReLU(inplace=False),
        nn.Conv2d(64, 64, 4, stride=2, padding=1),
        nn.ReLU(inplace=False),
        nn.Flatten(),
        nn.Linear(64 * feat * feat, 512),
        nn.ReLU(inplace=False),
        nn.Linear(512, 512),
        nn.ReLU(inplace=False),
        nn.Linear(512, num_classes),
    )


# --- VGG16-BN (HYDRA's CIFAR variant) --------------------------------------------------------------------

# fmt: off
_VGG16_CFG: tuple[int | str, ...] = (
    64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512,
)
# fmt: on


class VGG(nn.Module):
    """HYDRA's CIFAR VGG: no pool after the last stage, so 32x32 inputs leave 512x2x2 features."""

    def __init__(
        self, in_ch: int, size: int, num_classes: int, cfg: Sequence[int | str] = _VGG16_CFG
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        ch = in_ch
        spatial = size
        for v in cfg:
            if v == "M":
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
                spatial //= 2
            else:
                assert isinstance(v, int)
                layers += [_conv3x3(ch, v), nn.BatchNorm2d(v), nn.ReLU(inplace=False)]
                ch = v
        self.features = nn.Sequential(*layers)
        self.flatten = nn.Flatten()
        self.classifier = nn.Sequential(
            nn.Linear(ch * spatial * spatial, 256),
            nn.ReLU(inplace=False),
            nn.Linear(256, 256),
            nn.ReLU(inplace=False),
            nn.Linear(256, num_classes),
        )
        _init_conv_bn(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.flatten(self.features(x)))


@_arch("vgg16_bn", "VGG16 with BatchNorm, HYDRA CIFAR variant (2048-256-256 classifier)", (32,))
def _build_vgg16_bn(in_ch: int, size: int, num_classes: int) -> nn.Module:
    return VGG(in_ch, size, num_classes)


# --- WideResNet-28-4 (pre-activation) ---------------------------------------------------------------------


class WideBasicBlock(nn.Module):
    """Pre-activation block: BN-ReLU-conv-BN-ReLU-conv, 1x1 conv shortcut when the shape changes."""

    def __init__(self, in_ch: int, out_ch: int, stride: int) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_ch)
        self.relu1 = nn.ReLU(inplace=False)
        self.conv1 = _conv3x3(in_ch, out_ch, stride)
        self.bn2 = nn.BatchNorm2d(out_ch)
        self.relu2 = nn.ReLU(inplace=False)
        self.conv2 = _conv3x3(out_ch, out_ch)
        self.shortcut: nn.Module | None = None
        if in_ch != out_ch or stride != 1:
            self.shortcut = _conv1x1(in_ch, out_ch, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        act = self.relu1(self.bn1(x))
        out = self.conv2(self.relu2(self.bn2(self.conv1(act))))
        # As in the reference WRN code: the projection shortcut sees the pre-activated input, identity sees x.
        residual = x if self.shortcut is None else self.shortcut(act)
        return out + residual


class WideResNet(nn.Module):
    def __init__(self, in_ch: int, num_classes: int, depth: int = 28, widen: int = 4) -> None:
        super().__init__()
        if (depth - 4) % 6 != 0:
            raise ValueError(f"WideResNet depth must be 6n+4, got {depth}")
        n = (depth - 4) // 6
        widths = (16, 16 * widen, 32 * widen, 64 * widen)
        self.conv1 = _conv3x3(in_ch, widths[0])
        groups: list[nn.Module] = []
        ch = widths[0]
        for width, stride in zip(widths[1:], (1, 2, 2), strict=True):
            blocks = []
            for i in range(n):
                blocks.append(WideBasicBlock(ch, width, stride if i == 0 else 1))
                ch = width
            groups.append(nn.Sequential(*blocks))
        self.block1, self.block2, self.block3 = groups
        self.bn = nn.BatchNorm2d(ch)
        self.relu = nn.ReLU(inplace=False)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(ch, num_classes)
        _init_conv_bn(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.block3(self.block2(self.block1(self.conv1(x))))
        return self.fc(self.flatten(self.pool(self.relu(self.bn(out)))))


@_arch("wrn-28-4", "pre-activation WideResNet-28-4 (TRADES/HYDRA)", (32,))
def _build_wrn_28_4(in_ch: int, size: int, num_classes: int) -> nn.Module:
    return WideResNet(in_ch, num_classes, depth=28, widen=4)


@_arch("wrn-28-10", "pre-activation WideResNet-28-10 (TRADES/RobustBench; HYDRA's published model)", (32,))
def _build_wrn_28_10(in_ch: int, size: int, num_classes: int) -> nn.Module:
    return WideResNet(in_ch, num_classes, depth=28, widen=10)


@_arch("wrn-34-10", "pre-activation WideResNet-34-10 (TRADES/RobustBench)", (32,))
def _build_wrn_34_10(in_ch: int, size: int, num_classes: int) -> nn.Module:
    return WideResNet(in_ch, num_classes, depth=34, widen=10)


# --- ResNet-18 (CIFAR) -------------------------------------------------------------------------------------


class BasicBlock(nn.Module):
    """Post-activation ResNet basic block; 1x1 conv + BN shortcut when shapes change."""

    def __init__(self, in_ch: int, out_ch: int, stride: int) -> None:
        super().__init__()
        self.conv1 = _conv3x3(in_ch, out_ch, stride)
        self.bn1 = nn.BatchNorm2d(out_ch)
        self.relu1 = nn.ReLU(inplace=False)
        self.conv2 = _conv3x3(out_ch, out_ch)
        self.bn2 = nn.BatchNorm2d(out_ch)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_ch != out_ch:
            self.shortcut = nn.Sequential(_conv1x1(in_ch, out_ch, stride), nn.BatchNorm2d(out_ch))
        self.relu2 = nn.ReLU(inplace=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn2(self.conv2(self.relu1(self.bn1(self.conv1(x)))))
        return self.relu2(out + self.shortcut(x))


def _resnet_stages(block: type[nn.Module], blocks: Sequence[int]) -> list[nn.Sequential]:
    """The four stages of a CIFAR ResNet-18-style body after a 64-channel stem: widths 64-512, the first block
    of each later stage striding 2."""
    stages, ch = [], 64
    for width, stride, count in zip((64, 128, 256, 512), (1, 2, 2, 2), blocks, strict=True):
        stages.append(nn.Sequential(*(block(ch if i == 0 else width, width, stride if i == 0 else 1)
                                      for i in range(count))))
        ch = width
    return stages


class CifarResNet(nn.Module):
    """ResNet for 32x32 inputs: 3x3 stem, no max-pool."""

    def __init__(self, in_ch: int, num_classes: int, blocks: Sequence[int] = (2, 2, 2, 2)) -> None:
        super().__init__()
        self.conv1 = _conv3x3(in_ch, 64)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=False)
        self.layer1, self.layer2, self.layer3, self.layer4 = _resnet_stages(BasicBlock, blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(512, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        return self.fc(self.flatten(self.pool(out)))


@_arch("resnet18", "CIFAR-style ResNet-18 (3x3 stem, no max-pool)", (32,))
def _build_resnet18(in_ch: int, size: int, num_classes: int) -> nn.Module:
    return CifarResNet(in_ch, num_classes)


# --- PreAct ResNet-18 (CIFAR, RobustBench's model zoo) ---------------------------------------------------


class PreActBlock(nn.Module):
    """RobustBench's `PreActBlock`: BN-ReLU-conv-BN-ReLU-conv; the 1x1 projection shortcut (when the shape
    changes) sees the block's raw input. (kuangliu's block projects the pre-activated input instead: the
    same state_dict keys, another function, so its checkpoints do not belong to this arch.)"""

    def __init__(self, in_ch: int, out_ch: int, stride: int) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_ch)
        self.relu1 = nn.ReLU(inplace=False)
        self.conv1 = _conv3x3(in_ch, out_ch, stride)
        self.bn2 = nn.BatchNorm2d(out_ch)
        self.relu2 = nn.ReLU(inplace=False)
        self.conv2 = _conv3x3(out_ch, out_ch)
        self.shortcut: nn.Module | None = None
        if stride != 1 or in_ch != out_ch:
            self.shortcut = nn.Sequential(_conv1x1(in_ch, out_ch, stride))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv2(self.relu2(self.bn2(self.conv1(self.relu1(self.bn1(x))))))
        return out + (x if self.shortcut is None else self.shortcut(x))


class PreActResNet(nn.Module):
    """Pre-activation ResNet for 32x32 inputs: 3x3 stem, no max-pool, no BN before the classifier."""

    def __init__(self, in_ch: int, num_classes: int, blocks: Sequence[int] = (2, 2, 2, 2)) -> None:
        super().__init__()
        self.conv1 = _conv3x3(in_ch, 64)
        self.layer1, self.layer2, self.layer3, self.layer4 = _resnet_stages(PreActBlock, blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(512, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.layer4(self.layer3(self.layer2(self.layer1(self.conv1(x)))))
        return self.fc(self.flatten(self.pool(out)))


@_arch("preact-resnet18", "pre-activation ResNet-18 for 32x32 inputs (RobustBench's PreActResNet18)", (32,))
def _build_preact_resnet18(in_ch: int, size: int, num_classes: int) -> nn.Module:
    return PreActResNet(in_ch, num_classes)


# --- ResNet-50 (ImageNet, torchvision) --------------------------------------------------------------------


@_arch("resnet50", "torchvision ResNet-50, randomly initialised (ImageNet-size inputs)", (224,))
def _build_resnet50(in_ch: int, size: int, num_classes: int) -> nn.Module:
    import torchvision  # its model zoo imports torch._dynamo: about 2 s, paid only by this arch

    model = torchvision.models.resnet50(weights=None, num_classes=num_classes)
    if in_ch != 3:
        # torchvision hard-codes 3 input channels; swap the stem for other channel counts.
        model.conv1 = nn.Conv2d(in_ch, 64, kernel_size=7, stride=2, padding=3, bias=False)
        nn.init.kaiming_normal_(model.conv1.weight, mode="fan_out", nonlinearity="relu")
    # torchvision's Bottleneck/BasicBlock reuse one inplace ReLU; make every ReLU non-inplace.
    for m in model.modules():
        if isinstance(m, nn.ReLU):
            m.inplace = False
    return model


# --- public API -------------------------------------------------------------------------------------------


def build_model(
    arch: str,
    input_shape: tuple[int, int, int],
    num_classes: int,
    mean: Sequence[float],
    std: Sequence[float],
) -> nn.Sequential:
    """Build `nn.Sequential(Normalize(mean, std), body)` for inputs of shape (C, H, W) in [0, 1].

    A body that is a plain `nn.Sequential` (mlp, cnn-small, cnn-large) is spliced into the outer
    Sequential, so the whole model is one flat layer list for bound propagation.
    """
    info = ARCHS.get(arch)
    if len(input_shape) != 3:
        raise UserError(f"arch {arch!r}: input shape must be (C, H, W), got {tuple(input_shape)}")
    in_ch, height, width = (int(d) for d in input_shape)
    supported = ", ".join(f"{s}x{s}" for s in info.input_sizes)
    if height != width or height not in info.input_sizes:
        raise UserError(f"arch {arch!r} does not support input size {height}x{width}; supported: {supported}")
    if in_ch < 1:
        raise UserError(f"arch {arch!r}: input channels must be >= 1, got {in_ch}")
    if num_classes < 1:
        raise UserError(f"arch {arch!r}: num_classes must be >= 1, got {num_classes}")
    if len(mean) != in_ch or len(std) != in_ch:
        raise UserError(
            f"arch {arch!r}: mean/std need one value per input channel ({in_ch}), "
            f"got {len(mean)} and {len(std)}"
        )
    norm = Normalize(mean, std)
    body = info.build(in_ch, height, num_classes)
    if type(body) is nn.Sequential:
        return nn.Sequential(norm, *body)
    return nn.Sequential(norm, body)


def prunable_weight_count(model: nn.Module) -> int:
    """Total number of weights in all Conv2d and Linear modules (biases and BatchNorm excluded)."""
    return sum(m.weight.numel() for m in model.modules() if isinstance(m, nn.Conv2d | nn.Linear))


def model_for(dataset: str, arch: str | None) -> nn.Sequential:
    """A freshly initialised model of `arch` (None: the dataset's default) for the dataset's inputs."""
    info = DATASETS.get(dataset)
    return build_model(arch or info.default_arch, info.input_shape, info.num_classes, info.mean, info.std)

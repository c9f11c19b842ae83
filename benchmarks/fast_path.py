"""What does the fast GPU path buy? A TRADES-10 training step in fp32 against `--amp bf16 --channels-last`
(and `--compile` with --compile), as images/s and a ratio, and the `paper` grid's training time at that rate.

The variants run interleaved (fp32, fast, fp32, ...) so slow spells of the machine hit them alike. Each does a
full optimizer step as the training loop does it (benchmark/training/loop.py), on the same batch and the same
initial weights. The grid estimate is training only: (every cell's epochs, the shared pretraining counted once
per seed) x the training examples / the measured images/s of the dense step; HYDRA's prune step costs about
1.12x a dense one on an H100 (README, "Step cost of pruning"), and the evaluation (PGD-50 x 5, AutoAttack)
comes on top.

    python -m benchmarks.fast_path                                  # VGG16-bn, CIFAR-10 shape, batch 128, CUDA
    python -m benchmarks.fast_path --compile
    python -m benchmarks.fast_path --arch cnn-small --data digits --batch 16 --repeats 3   # a check on a CPU
"""

from __future__ import annotations

import argparse
import statistics
from collections.abc import Callable

import torch

from benchmark.core.config import AttackSettings
from benchmark.core.data import DATASETS
from benchmark.core.models import build_model
from benchmark.grid import DENSE, resolve
from benchmark.spec import GridSpec
from benchmark.training.fast_path import FastPath
from benchmark.training.loop import effective_weights_once
from benchmark.training.objectives.adversarial import Trades, TradesSettings
from benchmarks.step_speed import measure
from methods import build_pruner

Step = Callable[[], None]


def make_step(fast: FastPath, arch: str, data: str, batch: int, device: str) -> Step:
    """A full TRADES-10 optimizer step of a dense model on one fixed batch, under `fast`."""
    info = DATASETS.get(data)
    objective = Trades(AttackSettings(eps=info.eps, step_size=info.step_size, steps=10), TradesSettings())
    generator = torch.Generator().manual_seed(0)
    x = fast.inputs(torch.rand(batch, *info.input_shape, generator=generator).to(device))
    y = torch.randint(0, info.num_classes, (batch,), generator=generator).to(device)
    torch.manual_seed(0)
    model = fast.lay_out(build_model(arch, info.input_shape, info.num_classes, info.mean, info.std).to(device))
    net = fast.compiled(model.train())
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9, weight_decay=1e-4)
    dev = torch.device(device)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        with effective_weights_once(model), fast.autocast(dev):
            loss, _ = objective.loss(net, x, y)
        loss.backward()
        opt.step()
        if dev.type == "cuda":
            torch.cuda.synchronize()

    return step


def paper_images(methods: list[str], data: str, train_examples: int) -> tuple[int, int]:
    """(training epochs, training images) of the `paper` grid of `methods` at its default sparsities and seed."""
    grid = resolve(GridSpec(methods=methods, data=data, preset="paper"))
    epochs = 0
    for cfg in grid.cells:
        if cfg.method == DENSE:
            epochs += cfg.pretrain.epochs  # shared by every cell of the seed
        else:
            epochs += sum(p.settings.epochs for p in build_pruner(cfg.method, cfg).phases()) + cfg.finetune.epochs
    return epochs, epochs * train_examples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="vgg16_bn")
    parser.add_argument("--data", default="cifar10")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--compile", action="store_true", help="a third variant: the fast path and torch.compile")
    parser.add_argument("--methods", nargs="+", default=["hydra", "lwm", "admm"])
    parser.add_argument("--train-examples", type=int, default=50_000, help="per epoch (CIFAR-10: 50,000)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    variants = {"fp32": FastPath(), "bf16+channels-last": FastPath(amp="bf16", channels_last=True)}
    if args.compile:
        variants["bf16+channels-last+compile"] = FastPath(amp="bf16", channels_last=True, compile=True)
    steps = {name: make_step(fast, args.arch, args.data, args.batch, args.device) for name, fast in variants.items()}
    times = measure(steps, args.repeats, warmup=3)
    name = torch.cuda.get_device_name() if args.device == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"TRADES-10 step, {args.arch} on {args.data}-shaped input, batch {args.batch}, {name}, "
          f"torch {torch.__version__}, {args.repeats} interleaved repeats (median)")
    base = statistics.median(times["fp32"])
    epochs, images = paper_images(args.methods, args.data, args.train_examples)
    for variant, ts in times.items():
        rate = args.batch / statistics.median(ts)
        print(f"  {variant:<27} {rate:9.1f} images/s  {base / statistics.median(ts):5.2f}x fp32  "
              f"paper grid ({','.join(args.methods)}: {epochs} training epochs of {args.train_examples:,}): "
              f"{images / rate / 3600:8.1f} h")


if __name__ == "__main__":
    main()

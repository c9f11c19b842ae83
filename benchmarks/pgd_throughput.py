"""PGD evaluation throughput: examples per second for `pgd_robust` (the `pgd` evaluator) on one model.

    python benchmarks/pgd_throughput.py --arch cnn-small --data digits --steps 20
    python benchmarks/pgd_throughput.py --arch vgg16_bn --data cifar10 --steps 50 --device cuda

Random weights and inputs: the cost of an attack does not depend on them (every example is attacked for
all steps, since `restarts=1` and a random model is rarely right).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from attacks.pgd import pgd_robust
from benchmark.core.data import DATASETS
from benchmark.core.models import build_model


def examples_per_second(arch: str, data: str, batch: int, steps: int, device: str, repeats: int) -> list[float]:
    info = DATASETS.get(data)
    torch.manual_seed(0)
    model = build_model(arch, info.input_shape, info.num_classes, info.mean, info.std).to(device).eval()
    x = torch.rand(batch, *info.input_shape, device=device)
    with torch.no_grad():
        y = model(x).argmax(dim=1)  # labels the model gets right, so every example is attacked
    rates = []
    for i in range(repeats + 1):
        began = time.perf_counter()
        pgd_robust(model, x, y, info.eps, 2.5 * info.eps / steps, steps)
        if device == "cuda":
            torch.cuda.synchronize()
        if i:  # the first run warms up
            rates.append(batch / (time.perf_counter() - began))
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="cnn-small")
    parser.add_argument("--data", default="digits")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    rates = examples_per_second(args.arch, args.data, args.batch, args.steps, args.device, args.repeats)
    name = torch.cuda.get_device_name() if args.device == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"PGD-{args.steps} evaluation, {args.arch} on {args.data}-shaped input, batch {args.batch}, {name}: "
          f"median {statistics.median(rates):.0f} examples/s, max {max(rates):.0f} ({args.repeats} repeats)")


if __name__ == "__main__":
    main()

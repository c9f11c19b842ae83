"""Certification throughput: noise draws per second of `class_counts` (what CERTIFY spends its time in)
against plain batched inference of the same model on the same number of inputs.

    python benchmarks/certify_throughput.py --arch cnn-small --data fashion-mnist
    python benchmarks/certify_throughput.py --arch vgg16_bn --data cifar10 --device cuda

The two are timed interleaved (certify, inference, certify, ...) so that a slow spell of the machine hits
both; the ratio is reported per pair, median and minimum. Random weights and inputs: the cost does not
depend on them.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch

from attacks.smoothing import class_counts
from benchmark.core.data import DATASETS
from benchmark.core.models import build_model


def timed(fn: Callable[[], None], device: str) -> float:
    began = time.perf_counter()
    fn()
    if device == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - began


def ratios(arch: str, data: str, examples: int, draws: int, max_batch: int, device: str,
           repeats: int) -> tuple[list[float], list[float]]:
    """(certification draws/s, certification / plain inference ratio) per repeat."""
    info = DATASETS.get(data)
    torch.manual_seed(0)
    model = build_model(arch, info.input_shape, info.num_classes, info.mean, info.std).to(device).eval()
    x = torch.rand(examples, *info.input_shape, device=device)
    batch = torch.rand(max_batch, *info.input_shape, device=device)
    total = examples * draws

    def certify() -> None:
        class_counts(model, x, draws, 0.25, info.num_classes, max_batch)

    @torch.no_grad()
    def inference() -> None:
        for start in range(0, total, max_batch):
            model(batch[: min(max_batch, total - start)]).argmax(dim=1)

    certify(), inference()  # warm up
    rates, relative = [], []
    for _ in range(repeats):
        c, i = timed(certify, device), timed(inference, device)
        rates.append(total / c)
        relative.append(i / c)
    return rates, relative


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="cnn-small")
    parser.add_argument("--data", default="fashion-mnist")
    parser.add_argument("--examples", type=int, default=16)
    parser.add_argument("--draws", type=int, default=1000)
    parser.add_argument("--max-batch", type=int, default=4096)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    rates, relative = ratios(args.arch, args.data, args.examples, args.draws, args.max_batch, args.device,
                             args.repeats)
    name = torch.cuda.get_device_name() if args.device == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"certification, {args.arch} on {args.data}-shaped input, {args.examples} examples x {args.draws} draws, "
          f"max batch {args.max_batch}, {name}: median {statistics.median(rates):.0f} draws/s; throughput relative "
          f"to plain inference: median {statistics.median(relative):.2f}, min {min(relative):.2f} "
          f"({args.repeats} interleaved pairs)")


if __name__ == "__main__":
    main()

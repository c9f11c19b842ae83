"""How much does pruning cost per TRADES training step? Dense vs HYDRA's prune step vs the masked finetune step.

The three variants run interleaved (dense, prune, finetune, dense, ...) so slow spells of the machine hit
all of them alike; the script prints each variant's median and minimum step time and the ratios to dense.

    python benchmarks/step_speed.py --arch cnn-large --data fashion-mnist --batch 128 --repeats 15
    python benchmarks/step_speed.py --arch vgg16_bn --data cifar10 --device cuda
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch

from benchmark.core.config import AttackSettings, TrainSettings
from benchmark.core.data import DATASETS
from benchmark.core.mask import magnitude_mask
from benchmark.core.models import build_model
from benchmark.training.loop import Phase, effective_weights_once
from benchmark.training.objectives.adversarial import Trades, TradesSettings
from methods.hydra import Hydra

Step = Callable[[], None]


def make_steps(arch: str, data: str, batch: int, sparsity: float, device: str) -> dict[str, Step]:
    """One closure per variant, each doing a full TRADES-10 optimizer step on the same batch."""
    info = DATASETS.get(data)
    objective = Trades(AttackSettings(eps=info.eps, step_size=info.step_size, steps=10), TradesSettings())
    x = torch.rand(batch, *info.input_shape, device=device)
    y = torch.randint(0, info.num_classes, (batch,), device=device)

    def model() -> torch.nn.Module:
        torch.manual_seed(0)
        return build_model(arch, info.input_shape, info.num_classes, info.mean, info.std).to(device).train()

    def step_fn(net: torch.nn.Module, params: list[torch.nn.Parameter], after: Step | None = None) -> Step:
        opt = torch.optim.SGD(params, lr=1e-3, momentum=0.9, weight_decay=1e-4)

        def step() -> None:  # as benchmark.training.loop.run_phase does it
            opt.zero_grad(set_to_none=True)
            with effective_weights_once(net):
                loss, _ = objective.loss(net, x, y)
            loss.backward()
            opt.step()
            if after:
                after()
            if device == "cuda":
                torch.cuda.synchronize()

        return step

    dense = model()
    finetuned = model()
    mask = magnitude_mask(finetuned, sparsity, "layer").to(device)
    mask.apply_(finetuned)
    pruned = model()
    hydra = Hydra(sparsity, "layer")
    phase = Phase("prune", TrainSettings())
    hydra.prepare(pruned, phase)
    pruned.to(device)
    return {
        "dense": step_fn(dense, list(dense.parameters())),
        "prune": step_fn(pruned, list(hydra.trainable(pruned, phase))),
        "finetune": step_fn(finetuned, list(finetuned.parameters()), after=lambda: mask.apply_(finetuned)),
    }


def measure(steps: dict[str, Step], repeats: int, warmup: int = 2) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {name: [] for name in steps}
    for i in range(warmup + repeats):
        for name, step in steps.items():
            began = time.perf_counter()
            step()
            if i >= warmup:
                times[name].append(time.perf_counter() - began)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="cnn-large")
    parser.add_argument("--data", default="fashion-mnist")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--sparsity", type=float, default=0.99)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    times = measure(make_steps(args.arch, args.data, args.batch, args.sparsity, args.device), args.repeats)
    name = torch.cuda.get_device_name() if args.device == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"TRADES-10 step, {args.arch} on {args.data}-shaped input, batch {args.batch}, sparsity {args.sparsity}, "
          f"{name}, torch {torch.__version__}, {args.repeats} interleaved repeats")
    base_median, base_min = statistics.median(times["dense"]), min(times["dense"])
    for variant, ts in times.items():
        print(f"  {variant:<9} median {statistics.median(ts) * 1e3:8.1f} ms  min {min(ts) * 1e3:8.1f} ms  "
              f"ratio to dense: median {statistics.median(ts) / base_median:.3f}  min {min(ts) / base_min:.3f}")


if __name__ == "__main__":
    main()

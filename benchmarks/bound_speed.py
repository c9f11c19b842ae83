"""What do the bound-based objectives cost? One training step of natural, ibp, crown-ibp and mixtrain, and the
verified-accuracy throughput of each certifier (ibp, crown, sym); each next to the implementation before the
batched rewrite (benchmarks/bounds_reference.py, `before` below).

The training steps run interleaved (natural, ibp, ..., natural, ...) so slow spells of the machine hit all of
them alike; the script prints each one's median and minimum step time and the ratios to the natural step
(of the medians and of the minima). ibp and crown-ibp are timed with kappa 0 (the robust CE only, as the
`paper` preset) and with kappa 0.5 (`+ce`: the natural CE's forward and backward pass on top); crown-ibp at
beta 1 (the CROWN-IBP bound in full, its costliest point; at beta 0, as in the prune and finetune phases, it
is the ibp step); mixtrain with mixtrain_alpha 1 (every step bounds its 5 examples by symbolic intervals: the
objective does so on 80% of the steps and is a natural step on the others).

Certifier throughput is examples per second at the dataset's verification eps, on a trained model if
--checkpoint names one (a run's model.pt), since the cost of crown and sym grows with the number of unstable
ReLUs: `before` one example per bound computation (verify.max_batch 1, the fastest setting of the previous
code), `after` all --examples in one call. Also timed interleaved; the median and the best of the repeats.

    python benchmarks/bound_speed.py --arch cnn-small --data fashion-mnist --batch 128
    python benchmarks/bound_speed.py --checkpoint runs/runs/<key>/model.pt --examples 256
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from unittest import mock

import torch

from attacks import bounds
from benchmark.core.config import AttackSettings, RunConfig
from benchmark.core.data import DATASETS
from benchmark.core.io import safe_load
from benchmark.core.models import build_model
from benchmark.training import objectives
from benchmark.training.loop import effective_weights_once
from benchmark.training.objectives import bound as bound_objectives
from benchmarks import bounds_reference
from benchmarks.step_speed import Step, measure

# variant -> (objective, kappa, the bounds module): kappa 0 is the `paper` preset's robust CE only, 0.5 the end
# of the quick ramp
VARIANTS = {"natural": ("natural", 0.0, bounds), "ibp": ("ibp", 0.0, bounds), "ibp+ce": ("ibp", 0.5, bounds),
            "crown-ibp": ("crown-ibp", 0.0, bounds), "crown-ibp+ce": ("crown-ibp", 0.5, bounds),
            "mixtrain": ("mixtrain", 0.0, bounds), "ibp before": ("ibp", 0.0, bounds_reference),
            "crown-ibp before": ("crown-ibp", 0.0, bounds_reference),
            "mixtrain before": ("mixtrain", 0.0, bounds_reference)}
# certifier -> (the bounds module, examples per call: 0 all), timed interleaved
CERTIFIERS = {"ibp": (bounds, 0), "crown": (bounds, 0), "sym": (bounds, 0), "ibp before": (bounds_reference, 0),
              "crown before": (bounds_reference, 1), "sym before": (bounds_reference, 1)}


def new_model(arch: str, data: str, device: str, checkpoint: Path | None = None) -> torch.nn.Module:
    info = DATASETS.get(data)
    torch.manual_seed(0)
    model = build_model(arch, info.input_shape, info.num_classes, info.mean, info.std)
    if checkpoint is not None:
        model.load_state_dict(safe_load(checkpoint), strict=True)
    return model.to(device)


def make_steps(arch: str, data: str, batch: int, device: str, checkpoint: Path | None = None,
               variants: dict[str, tuple] = VARIANTS) -> dict[str, Step]:
    """One closure per variant, each a full Adam step on the same batch, as benchmark.training.loop.run_phase
    does, from the checkpoint's weights if one is given (MixTrain's cost grows with the unstable ReLUs)."""
    info = DATASETS.get(data)
    cfg = RunConfig(dataset=data, arch=arch, train_attack=AttackSettings(eps=info.verify_eps))
    x = torch.rand(batch, *info.input_shape, device=device)
    y = torch.randint(0, info.num_classes, (batch,), device=device)

    def step_fn(name: str, kappa: float, module: object) -> Step:
        model = new_model(arch, data, device, checkpoint).train()
        objective = objectives.build_objective(name, cfg.with_settings("verifiable", beta_end=1.0, kappa_end=kappa,
                                                                       mixtrain_alpha=1.0))
        opt = torch.optim.Adam(model.parameters(), lr=1e-4)

        def step() -> None:
            opt.zero_grad(set_to_none=True)
            with effective_weights_once(model), mock.patch.object(bound_objectives, "bounds", module):
                loss, _ = objective.loss(model, x, y)
            loss.backward()
            opt.step()
            if device == "cuda":
                torch.cuda.synchronize()

        return step

    return {variant: step_fn(*spec) for variant, spec in variants.items()}


def certifier_times(model: torch.nn.Module, data: str, examples: int, device: str,
                    repeats: int) -> dict[str, list[float]]:
    """Seconds per example of each certifier on the same inputs, interleaved across repeats."""
    info = DATASETS.get(data)
    generator = torch.Generator().manual_seed(0)
    x = torch.rand(examples, *info.input_shape, generator=generator).to(device)
    y = torch.randint(0, info.num_classes, (examples,), generator=generator).to(device)
    model.eval()

    def run(module: object, chunk: int, method: str) -> Callable[[], None]:
        def certify() -> None:
            with torch.no_grad():
                for xs, ys in zip(x.split(chunk or examples), y.split(chunk or examples), strict=True):
                    module.margin_bounds(model, xs, ys, info.verify_eps, method)
            if device == "cuda":
                torch.cuda.synchronize()
        return certify

    times: dict[str, list[float]] = {name: [] for name in CERTIFIERS}
    for _ in range(repeats):
        for name, (module, chunk) in CERTIFIERS.items():
            began = time.perf_counter()
            run(module, chunk, name.split()[0])()
            times[name].append((time.perf_counter() - began) / examples)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="cnn-small")
    parser.add_argument("--data", default="fashion-mnist")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--examples", type=int, default=64, help="examples per certifier timing")
    parser.add_argument("--cert-repeats", type=int, default=3)
    parser.add_argument("--checkpoint", type=Path, help="a model.pt of the arch")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    name = torch.cuda.get_device_name() if args.device == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    eps = DATASETS.get(args.data).verify_eps
    weights = f"weights from {args.checkpoint}" if args.checkpoint else "random weights"
    times = measure(make_steps(args.arch, args.data, args.batch, args.device, args.checkpoint), args.repeats)
    print(f"training step, {args.arch} on {args.data}-shaped input, batch {args.batch}, eps {eps:g}, {weights}, "
          f"{name}, torch {torch.__version__}, {args.repeats} interleaved repeats")
    base_median, base_min = statistics.median(times["natural"]), min(times["natural"])
    for variant, ts in times.items():
        print(f"  {variant:<17} median {statistics.median(ts) * 1e3:8.1f} ms  min {min(ts) * 1e3:8.1f} ms  "
              f"ratio to natural: median {statistics.median(ts) / base_median:6.2f}  min {min(ts) / base_min:6.2f}")
    model = new_model(args.arch, args.data, args.device, args.checkpoint)
    per_example = certifier_times(model, args.data, args.examples, args.device, args.cert_repeats)
    print(f"verified-accuracy throughput at eps {eps:g}, {args.examples} random inputs, {weights}, "
          f"{args.cert_repeats} interleaved repeats (before: one example per call; after: all in one)")
    for certifier in ("ibp", "crown", "sym"):
        after, before = per_example[certifier], per_example[f"{certifier} before"]
        median, best = statistics.median(after), min(after)
        print(f"  {certifier:<5} ex/s median {1 / median:9.1f} (before {1 / statistics.median(before):9.1f}, "
              f"x{statistics.median(before) / median:5.1f})  best {1 / best:9.1f} "
              f"(before {1 / min(before):9.1f}, x{min(before) / best:5.1f})")


if __name__ == "__main__":
    main()

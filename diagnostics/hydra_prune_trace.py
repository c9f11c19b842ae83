"""Trace HYDRA's prune phase of a grid's cells: what the scores and the mask do epoch by epoch.

    python diagnostics/hydra_prune_trace.py --out runs --data fashion-mnist --sparsity 0.9 0.95 0.99 --seed 0

For each sparsity it re-runs the prune phase exactly as the runner does, from the grid's cached pretrained
model (so run the grid first), in a scratch folder, and prints per epoch: the training loss and accuracy, the
mask's churn (the fraction of kept weights not kept the epoch before) and its overlap with the starting
magnitude (LWM) mask, the mean |score| of the kept and of the pruned weights, the learning rate applied to the
scores and their weight decay, and how far BatchNorm's running statistics moved. Then, for the pruned model
before its finetune: clean and PGD accuracy on the evaluation examples, as they are, and after re-estimating
BatchNorm's statistics under the mask (to tell a stale-statistics problem from a bad mask); and the
finished run's own metrics from the store, for comparison.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch
from torch import nn

from attacks.pgd import pgd_robust, predict
from benchmark import runner
from benchmark.cli import parse_settings
from benchmark.core.mask import Mask, magnitude_mask
from benchmark.core.progress import Progress
from benchmark.grid import resolve
from benchmark.spec import spec_from
from methods import build_pruner
from results.store import Store


def bn_state(model: nn.Module) -> torch.Tensor:
    """BatchNorm's running statistics, flat (empty for a model without BatchNorm, as cnn-small)."""
    stats = [t.flatten() for n, t in model.state_dict().items() if n.endswith(("running_mean", "running_var"))]
    return torch.cat(stats) if stats else torch.zeros(0)


def overlap(a: Mask, b: Mask) -> float:
    """Fraction of a's kept weights that b keeps too."""
    return sum(int((a[n] & b[n]).sum()) for n in a) / max(a.kept, 1)


@torch.no_grad()
def recalibrate_bn(model: nn.Module, loader, batches: int = 20) -> None:
    """Re-estimate BatchNorm's running statistics of the (masked) model on training batches."""
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.reset_running_stats()
            m.momentum = None  # a cumulative average over the batches
    model.train()
    for i, (x, _) in enumerate(loader):
        if i == batches:
            break
        model(x)
    model.eval()


def accuracy(model: nn.Module, cfg, env) -> tuple[float, float]:
    _, eval_set = runner.data_for(cfg, env)
    x, y = eval_set.tensors
    a = cfg.eval_attack
    clean = float((predict(model, x) == y).float().mean())
    robust = float(pgd_robust(model, x, y, a.eps, a.step_size, a.steps, 1).float().mean())
    return clean, robust


def trace(cfg, env: runner.Environment) -> None:
    progress = Progress(quiet=True)
    pretrained, _ = runner.ensure_pretrained(cfg, env, progress)
    model = runner.load_state(runner.new_model(cfg), pretrained)
    start_mask = magnitude_mask(model, cfg.sparsity, cfg.scope)
    pruner = build_pruner("hydra", cfg)
    (phase,) = pruner.phases()
    s = phase.settings
    print(f"\n## sparsity {cfg.sparsity:g}, seed {cfg.seed}: prune {s.epochs} epochs, {s.optimizer} lr {s.lr:g} "
          f"({s.schedule}), weight decay {s.weight_decay:g} on the scores and BN affine, momentum {s.momentum:g}")
    print("| epoch | lr | churn vs previous | overlap with LWM | mean abs score kept / pruned | BN stats moved |")
    print("|---|---|---|---|---|---|")
    state = {"mask": start_mask, "bn": bn_state(model)}
    real_hook = pruner.on_epoch_end

    def on_epoch_end(model: nn.Module, phase, epoch: int) -> None:
        real_hook(model, phase, epoch)
        scores = {n: t.detach().abs() for n, t in pruner._score_set.scores.items()}
        mask = pruner.mask(model)
        kept = torch.cat([scores[n][mask[n]] for n in mask]).mean()
        pruned = torch.cat([scores[n][~mask[n]] for n in mask]).mean()
        bn = bn_state(model)
        moved = f"{float((bn - state['bn']).norm() / state['bn'].norm()):.3f}" if len(bn) else "no BatchNorm"
        lr = s.lr * 0.5 * (1 + torch.cos(torch.tensor(epoch / s.epochs * torch.pi))) \
            if s.schedule == "cosine" else s.lr
        print(f"| {epoch + 1} | {float(lr):.3g} | {1 - overlap(mask, state['mask']):.3f} | "
              f"{overlap(mask, start_mask):.3f} | {kept:.2e} / {pruned:.2e} | {moved} |")
        state.update(mask=mask, bn=bn)

    pruner.on_epoch_end = on_epoch_end
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        if pruner.rewind_epoch is not None:
            pruner.rewind_state = runner.rewind_state(cfg, env, pruner.rewind_epoch, torch.device("cpu"))
        runner._run_pruner_phase(cfg, env, pruner, phase, model, folder, torch.device("cpu"),
                                 runner.seed_everything(cfg.seed), progress)
    mask = pruner.mask(model)
    pruner.release(model)
    mask.apply_(model)
    model.eval()
    clean, robust = accuracy(model, cfg, env)
    train_loader = runner.train_loader(cfg, env, 128, torch.Generator().manual_seed(0))
    recalibrate_bn(model, train_loader)
    clean_bn, robust_bn = accuracy(model, cfg, env)
    print(f"\nafter the prune, before the finetune: clean {clean:.3f}, PGD-{cfg.eval_attack.steps} {robust:.3f}; "
          f"with BatchNorm re-estimated under the mask: clean {clean_bn:.3f}, PGD {robust_bn:.3f}")
    lwm = runner.load_state(runner.new_model(cfg), pretrained)
    start_mask.apply_(lwm)
    lwm.eval()
    print("the LWM mask on the pretrained weights, before any finetune: clean {:.3f}, PGD {:.3f}".format(
        *accuracy(lwm, cfg, env)))
    per_layer = ", ".join(f"{n.removesuffix('.weight')} {k}/{t}" for n, (k, t) in mask.kept_per_layer().items())
    print(f"kept per layer: {per_layer}")
    record = Store(env.out / "runs.db").get(cfg.key())
    if record and record.status == "done":
        print(f"the finished run (finetuned): clean {record.value('clean'):.3f}, worst-case "
              f"{record.value('worst'):.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs"))
    parser.add_argument("--data", default="fashion-mnist")
    parser.add_argument("--sparsity", type=float, nargs="+", default=[0.9, 0.95, 0.99])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--preset", default="quick")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="settings, as `run --set`")
    args = parser.parse_args()
    settings = parse_settings(args.set)
    spec, _ = spec_from({"data": args.data, "methods": ["hydra"], "sparsity": args.sparsity, "seeds": [args.seed],
                         "preset": args.preset, **settings}, "trace")
    env = runner.Environment(out=args.out, quiet=True)
    for cfg in resolve(spec).cells:
        if cfg.method == "hydra":
            trace(cfg, env)


if __name__ == "__main__":
    main()

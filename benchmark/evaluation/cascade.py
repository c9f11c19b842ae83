"""The evaluation of one trained model: evaluators in cascade, an eps sweep, and the self-checks.

Evaluators run in the configured order (`clean` first). Each attack attacks only the examples that every
attack before it left standing, so an example broken by a cheap attack is never attacked again by an
expensive one, and an attack's accuracy is the robust accuracy under it *and every attack before it* (as
AutoAttack reports after each of its own attacks); the last one is the worst case over attacks. Certifiers
(randomized smoothing, bound propagation) run outside the cascade, each on its first examples (`certify.examples`,
`verify.examples`); a bound certifier's verified examples are then held to the attacks (the soundness check).

Per-example results go into `folder/<evaluator>-<key>.pt`, one file per evaluator, where the key hashes the
evaluator's settings and the keys of the evaluators before it. The file is rewritten after every batch, so a
killed evaluation resumes at its last batch, and a re-run with one more evaluator (or one more eps) computes
only what is missing. Batches are formed from the cascade's standing examples and each is seeded by its
position, so a resumed evaluation gives exactly the uninterrupted result.

Under --ddp the batches are dealt out to the ranks in rounds (rank r takes batch k * world + r), gathered
after each round, and stored by rank 0: the same seeded batches as in one process, so the same results.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from benchmark.core.config import RunConfig, content_key
from benchmark.core.data import make_loader, select
from benchmark.core.io import atomic_save, safe_load
from benchmark.core.metrics import WORST, Metric
from benchmark.core.progress import Progress
from benchmark.evaluation import verification
from benchmark.evaluation.checks import run_checks
from benchmark.evaluation.evaluators import Evaluator, Outcome, describe, get_evaluator, run_evaluator, scaled_attack
from benchmark.training import distributed


@dataclass
class Evaluation:
    """What an evaluation measured. metrics: long form (`benchmark.core.metrics.Metric`), the cascade's accuracies first
    (cumulative per attack, in order, the worst case last), then the certifiers'; seconds and attacked: each
    evaluator's and check's wall time when it was computed, and how many examples it attacked; eps_sweep: PGD
    robust accuracy at multiples of the evaluation eps; checks: the self-checks (benchmark/evaluation/checks.py)."""

    metrics: list[Metric]
    seconds: dict[str, float]
    eps_sweep: list[dict[str, float]]
    checks: list[dict[str, Any]]
    description: str
    attacked: dict[str, int] = field(default_factory=dict)
    total_seconds: float = 0.0  # every result counted once (the sweep's 1x point may be the `pgd` result)
    failure: str | None = None  # why the run counts as failed (a verified example an attack broke)

    def summary(self) -> dict[str, Any]:
        return {"seconds": self.seconds, "attacked": self.attacked, "eps_sweep": self.eps_sweep}


@dataclass
class Evaluating:
    """One model under evaluation: where its examples and stored results are, and what has run so far."""

    model: nn.Module
    examples: Dataset
    cfg: RunConfig
    device: torch.device
    folder: Path | None
    progress: Progress
    seconds: dict[str, float] = field(default_factory=dict)
    attacked: dict[str, int] = field(default_factory=dict)
    seconds_by_key: dict[str, float] = field(default_factory=dict)

    def run(self, name: str, cfg: RunConfig, indices: Tensor, after: list[str], label: str | None = None) -> \
            tuple[Outcome, str]:
        """Evaluator `name`'s outcome on the examples at `indices` (all others count as broken, distance NaN),
        from its stored file where one exists. `after` are the keys of the evaluators before it in the
        cascade; `label` names its wall time (default: the name). Returns the outcome and its key."""
        evaluator = get_evaluator(name)
        label = label or name
        key = content_key({"evaluator": name, "settings": evaluator.settings(cfg), "after": after,
                           "examples": [cfg.dataset, cfg.eval_examples], "batch": cfg.eval.batch_size})
        path = self.folder / f"{_safe(name)}-{key}.pt" if self.folder is not None else None
        n = len(self.examples)  # type: ignore[arg-type]
        state = safe_load(path) if path is not None and path.exists() else {
            "robust": torch.zeros(n, dtype=torch.bool), "distance": torch.full((n,), float("nan")),
            "fields": {}, "batches_done": 0, "seconds": 0.0, "complete": False}
        batches = [b for b in torch.split(indices, cfg.eval.batch_size) if len(b)]
        bar = self.progress.bar(total=len(batches), initial=state["batches_done"], desc=label)
        world = distributed.world()
        for first in range(state["batches_done"], len(batches), world):
            began = time.perf_counter()
            mine = first + distributed.rank()
            own = self.batch(evaluator, cfg, batches[mine], mine) if mine < len(batches) else None
            for b, result in enumerate(distributed.gather(own), first):
                if result is None:
                    continue
                state["robust"][batches[b]] = result.robust
                state["distance"][batches[b]] = result.distance
                for name_, values in result.fields.items():
                    state["fields"].setdefault(name_, torch.zeros(n, dtype=values.dtype))[batches[b]] = values
            done = min(first + world, len(batches))
            state["batches_done"] = done
            state["seconds"] += time.perf_counter() - began
            state["complete"] = done == len(batches)
            if path is not None:
                atomic_save(state, path)
            bar.update(done - first)
        bar.close()
        distributed.barrier()  # rank 0 wrote the file the others may read next
        self.seconds[label] = state["seconds"]
        self.attacked[label] = len(indices)
        self.seconds_by_key[key] = state["seconds"]
        return Outcome(state["robust"], state["distance"], state["fields"]), key

    def batch(self, evaluator: Evaluator, cfg: RunConfig, indices: Tensor, position: int) -> Outcome:
        """The evaluator on one batch, seeded by its position in the evaluator's batches."""
        x, y = self.take(indices)
        with _seeded(cfg.seed * 1_000_003 + position, self.device):
            return run_evaluator(evaluator, self.model, x, y, cfg)

    def take(self, indices: Tensor) -> tuple[Tensor, Tensor]:
        x, y = next(iter(make_loader(select(self.examples, indices), len(indices), shuffle=False)))
        return x.to(self.device), y.to(self.device)


def evaluate_model(model: nn.Module, examples: Dataset, cfg: RunConfig, device: torch.device,
                   folder: Path | None, progress: Progress) -> Evaluation:
    """Evaluators in cascade, then the eps sweep and the checks (if cfg.eval.checks)."""
    model.eval()
    session = Evaluating(model, examples, cfg, device, folder, progress)
    names = evaluator_names(cfg)
    cascade = [n for n in names if get_evaluator(n).certify is None]
    standing = torch.arange(len(examples))  # type: ignore[arg-type]
    outcomes: dict[str, Outcome] = {}
    keys: list[str] = []
    for name in cascade:
        outcome, key = session.run(name, cfg, standing, keys)
        outcomes[name] = outcome
        keys.append(key)
        standing = standing[outcome.robust[standing]]
    metrics = [Metric(name, "acc", outcomes[name].robust.float().mean().item()) for name in cascade]
    metrics.append(Metric(WORST, "acc", len(standing) / max(len(examples), 1)))  # type: ignore[arg-type]
    verified: dict[str, dict[str, Tensor]] = {}
    for name in names:
        if name not in outcomes:
            found, fields = certified(session, name)
            metrics += found
            if name in verification.CERTIFIERS:
                verified[name] = fields
    sweep = eps_sweep(session, outcomes["clean"], keys[0])
    checks = run_checks(session, outcomes, sweep, keys) if cfg.eval.checks else []
    failure = None
    if verified:
        metrics += verification.best_metrics(verified, cfg)
        soundness = verification.soundness(verified, broken_by_attacks(outcomes["clean"], standing, len(cascade),
                                                                       sweep), cfg.eval_attack.eps)
        checks.append(soundness)
        failure = f"unsound verification: {soundness['detail']}" if soundness["flagged"] else None
    points = [{"multiple": m, "eps": eps, "acc": o.robust.float().mean().item()} for m, eps, o in sweep]
    return Evaluation(metrics, session.seconds, points, checks, describe(cfg, len(examples), names),
                      session.attacked, sum(session.seconds_by_key.values()), failure)


def certified(session: Evaluating, name: str) -> tuple[list[Metric], dict[str, Tensor]]:
    """A certifier on its first evaluation examples (all by default), not in the cascade: its metrics and its
    per-example fields on those examples."""
    evaluator, cfg = get_evaluator(name), session.cfg
    count = min(evaluator.examples(cfg) or len(session.examples), len(session.examples))  # type: ignore[arg-type]
    outcome, _ = session.run(name, cfg, torch.arange(count), [])
    fields = {k: v[:count] for k, v in outcome.fields.items()}
    return evaluator.metrics(fields, cfg), fields


def broken_by_attacks(clean: Outcome, standing: Tensor, cascade: int,
                      sweep: list[tuple[float, float, Outcome]]) -> Tensor | None:
    """Correct examples an attack broke at the evaluation eps (by the cascade, or the sweep's 1x PGD point);
    None when no attack ran at that eps."""
    correct = clean.robust
    survived = torch.zeros_like(correct)
    survived[standing] = True
    broken = correct & ~survived if cascade > 1 else None
    for multiple, _, outcome in sweep:
        if multiple == 1.0:
            at_eps = correct & ~outcome.robust
            broken = at_eps if broken is None else broken | at_eps
    return broken


def evaluator_names(cfg: RunConfig) -> list[str]:
    """The configured evaluators in order, `clean` first (every attack starts from the correct examples)."""
    return ["clean", *dict.fromkeys(n for n in cfg.eval.evaluators if n != "clean")]


def eps_sweep(session: Evaluating, clean: Outcome, clean_key: str) -> list[tuple[float, float, Outcome]]:
    """PGD at each multiple of the evaluation eps, every point on all correctly classified examples (not in
    cascade, so a curve that rises shows). The 1x point is the `pgd` evaluator's own result when PGD is the
    first attack (same key)."""
    correct = clean.robust.nonzero().flatten()
    points = []
    for multiple in session.cfg.eval.eps_sweep:
        cfg = scaled_attack(session.cfg, multiple)
        outcome, _ = session.run("pgd", cfg, correct, [clean_key], label=f"pgd@{multiple:g}x")
        points.append((multiple, cfg.eval_attack.eps, outcome))
    return points


@contextmanager
def _seeded(seed: int, device: torch.device) -> Iterator[None]:
    """Run a block under a fixed seed without disturbing the caller's random state."""
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        yield


def _safe(label: str) -> str:
    return re.sub(r"[^A-Za-z0-9._@-]+", "-", label)


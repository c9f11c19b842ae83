"""Synthetic records of one grid with every part the report has: the attack cascade with a fired self-check,
the eps sweep, smoothing certificates, verified accuracy and the cost, for several seeds (used by the report's
HTML, published-numbers and JSON tests)."""

from __future__ import annotations

from benchmark.core.mask import kept_count
from results.record import Metric, RunRecord

EVAL_DESC = ("l-inf eps 0.1: PGD-5, step 0.05 then AutoAttack apgd-ce; 128 test examples; randomized smoothing "
             "sigma 0.25, N0 20, N 200, alpha 0.001 on 32 examples")
RADII = (0.0, 0.25, 0.435)


def _metrics(base: float) -> list[Metric]:
    return [Metric("clean", "acc", base), Metric("pgd", "acc", base - 0.2), Metric("autoattack", "acc", base - 0.23),
            Metric("worst", "acc", base - 0.23),
            *(Metric("smoothing", "certified_acc", base - 0.1 - r / 2, radius=r) for r in RADII),
            Metric("smoothing", "acr", 0.3 * base), Metric("smoothing", "predict_acc", base - 0.04),
            Metric("ibp", "verified_acc", base - 0.4, eps_multiple=1.0),
            Metric("verified", "verified_acc", base - 0.38, eps_multiple=1.0)]


def _phase(epochs: int, seconds: float) -> dict:
    return {"epochs": epochs, "forward_passes": 100 * epochs, "backward_passes": 90 * epochs, "seconds": seconds}


def grid_records(dataset: str = "digits", arch: str = "cnn-small", objective: str = "trades", preset: str = "smoke",
                 eval_desc: str = EVAL_DESC, methods: tuple[str, ...] = ("hydra", "lwm"),
                 sparsities: tuple[float, ...] = (0.9, 0.99), seeds: tuple[int, ...] = (0, 1)) -> list[RunRecord]:
    """The dense model and every method at every sparsity and seed, all done; lwm at the highest sparsity with
    seed 1 has the black_box check fired."""
    out = []
    for seed in seeds:
        cells = [("dense", 0.0), *((m, s) for m in methods for s in sparsities)]
        for method, sparsity in cells:
            base = 0.9 - (sparsity - 0.85) * (1 + methods.index(method) if method in methods else 0) + 0.0137 * seed
            flagged = (method, sparsity, seed) == (methods[-1], sparsities[-1], 1)
            cost = ({"pretrain": _phase(3, 5.0)} if method == "dense" else
                    {"pruner": [_phase(1 + methods.index(method), 2.0 + seed)], "finetune": _phase(1, 1.5)})
            out.append(RunRecord(
                key=f"{method}-{sparsity}-{seed}", dataset=dataset, arch=arch, objective=objective, method=method,
                scope="layer", sparsity=sparsity, sparsity_actual=sparsity, seed=seed, preset=preset,
                metrics=_metrics(base), cost=cost, versions={"python": "3.11", "torch": "2.14.1"},
                kept_per_layer={"1.weight": [kept_count(256, sparsity), 256], "8.weight": [kept_count(1000, sparsity),
                                                                                           1000]},
                eval_desc=eval_desc, status="done", eval_key=f"e-{method}-{sparsity}-{seed}", key_version=2,
                evaluation={"seconds": {}, "eps_sweep": [{"multiple": m, "eps": 0.1 * m, "acc": (base - 0.2) / m}
                                                         for m in (0.5, 1, 2)]},
                checks=[{"name": "black_box", "flagged": flagged, "detail": "Square broke 9 of 100"},
                        {"name": "zero_gradients", "flagged": False, "detail": "0 of 90"}]))
    return out

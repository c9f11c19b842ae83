"""pytest-benchmark: noise draws per second of certification (`class_counts`) on cnn-small.

Run with `pytest benchmarks --benchmark-enable`; the ratio to plain inference is printed by
`python benchmarks/certify_throughput.py`.
"""

import torch

from attacks.smoothing import class_counts
from benchmark.core.data import DATASETS
from benchmark.core.models import build_model


def test_certification_draws_per_second(benchmark):
    info = DATASETS.get("fashion-mnist")
    torch.manual_seed(0)
    model = build_model("cnn-small", info.input_shape, info.num_classes, info.mean, info.std).eval()
    x = torch.rand(8, *info.input_shape)
    counts = benchmark(class_counts, model, x, 500, 0.25, info.num_classes, 4096)
    assert (counts.sum(dim=1) == 500).all()

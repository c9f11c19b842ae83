"""pytest-benchmark view of benchmarks/pgd_throughput.py: `pytest benchmarks --benchmark-enable`."""

import torch

from attacks.pgd import pgd_robust
from benchmark.core.data import DATASETS
from benchmark.core.models import build_model


def test_pgd20_evaluation_of_256_digits(benchmark):
    info = DATASETS.get("digits")
    torch.manual_seed(0)
    model = build_model("cnn-small", info.input_shape, info.num_classes, info.mean, info.std).eval()
    x = torch.rand(256, *info.input_shape)
    y = model(x).argmax(dim=1).detach()
    benchmark(pgd_robust, model, x, y, info.eps, 2.5 * info.eps / 20, 20)

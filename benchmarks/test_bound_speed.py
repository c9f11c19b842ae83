"""pytest-benchmark view of benchmarks/bound_speed.py: `pytest benchmarks --benchmark-enable`.

Not part of the default test suite (benchmarks/ is outside testpaths): compare each group's figures with the
natural step's, the `before` variants (the implementation the batched one replaced) with theirs, and the
certifiers' with each other.
"""

import pytest
import torch

from attacks import bounds
from benchmarks import bounds_reference
from benchmarks.bound_speed import VARIANTS, make_steps, new_model

STEPS = make_steps("cnn-small", "fashion-mnist", 128, "cpu")


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_training_step(benchmark, variant):
    benchmark.group = "bound-based training step, cnn-small, batch 128"
    benchmark(STEPS[variant])


@pytest.mark.parametrize("certifier", ["ibp", "crown", "sym"])
@pytest.mark.parametrize("version", ["after", "before"])
def test_certifier_one_example(benchmark, certifier, version):
    benchmark.group = "verification of one example, cnn-small, random weights"
    module = bounds if version == "after" else bounds_reference
    model = new_model("cnn-small", "fashion-mnist", "cpu").eval()
    x, y = torch.rand(1, 1, 28, 28), torch.tensor([3])
    with torch.no_grad():
        benchmark(module.margin_bounds, model, x, y, 0.1, certifier)


@pytest.mark.parametrize("certifier", ["crown", "sym"])
def test_certifier_batch_of_16(benchmark, certifier):
    benchmark.group = "verification of 16 examples in one call, cnn-small, random weights"
    model = new_model("cnn-small", "fashion-mnist", "cpu").eval()
    x, y = torch.rand(16, 1, 28, 28), torch.randint(0, 10, (16,))
    with torch.no_grad():
        benchmark(bounds.margin_bounds, model, x, y, 0.1, certifier)

"""pytest-benchmark view of benchmarks/bound_speed.py: `pytest benchmarks --benchmark-enable`.

Not part of the default test suite (benchmarks/ is outside testpaths): compare each group's figures with the
natural step's, and the certifiers' with each other.
"""

import pytest
import torch

from attacks.bounds import margin_bounds
from benchmarks.bound_speed import VARIANTS, make_steps, new_model

STEPS = make_steps("cnn-small", "fashion-mnist", 128, "cpu")


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_training_step(benchmark, variant):
    benchmark.group = "bound-based training step, cnn-small, batch 128"
    benchmark(STEPS[variant])


@pytest.mark.parametrize("certifier", ["ibp", "crown", "sym"])
def test_certifier_one_example(benchmark, certifier):
    benchmark.group = "verification of one example, cnn-small, random weights"
    model = new_model("cnn-small", "fashion-mnist", "cpu").eval()
    x, y = torch.rand(1, 1, 28, 28), torch.tensor([3])
    with torch.no_grad():
        benchmark(margin_bounds, model, x, y, 0.1, certifier)

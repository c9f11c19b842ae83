"""pytest-benchmark view of benchmarks/step_speed.py: `pytest benchmarks --benchmark-enable`.

Not part of the default test suite (benchmarks/ is outside testpaths); compare the three groups' figures.
"""

import pytest

from benchmarks.step_speed import make_steps

STEPS = make_steps("cnn-small", "fashion-mnist", 128, 0.99, "cpu")


@pytest.mark.parametrize("variant", ["dense", "prune", "finetune"])
def test_trades_step(benchmark, variant):
    benchmark(STEPS[variant])

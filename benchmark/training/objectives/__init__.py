"""Training objectives, one module per family; importing this package registers them all."""

from benchmark.training.objectives import adversarial, bound, noise  # noqa: F401  (registers the objectives)
from benchmark.training.objectives.base import OBJECTIVES, Objective, build_objective, register_objective

__all__ = ["OBJECTIVES", "Objective", "build_objective", "register_objective"]

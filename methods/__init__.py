"""Pruning methods. Every module in this package is imported so that its @register_method runs:
adding a pruner is adding one file here."""

import importlib
import pkgutil

from benchmark.core.mask import Mask
from methods.base import METHODS, Phase, Pruner, Taxonomy, build_pruner, register_method

for _module in pkgutil.iter_modules(__path__):
    if _module.name != "base":
        importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["METHODS", "Mask", "Phase", "Pruner", "Taxonomy", "build_pruner", "register_method"]

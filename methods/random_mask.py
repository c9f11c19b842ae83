"""Random pruning: a uniformly random mask per layer (or global), then the shared finetune.

The floor every method must beat. Scores come from torch's global generator, which the runner seeds with
the run's seed before a pruner runs, so the mask is reproducible and differs between seeds. The draws are
made on the CPU, so the same seed gives the same mask on every device.
"""

import torch
from torch import nn

from benchmark.core.mask import Mask, prunable_weights, topk_mask
from methods.base import Pruner, Taxonomy, register_method


@register_method
class RandomPruning(Pruner):
    name = "random"
    description = "uniformly random mask of the pretrained model, then finetune (the floor)"
    taxonomy = Taxonomy("after training", "one-shot", "unstructured", "local or global", "random")

    def mask(self, model: nn.Module) -> Mask:
        scores = {n: torch.rand(w.shape) for n, w in prunable_weights(model).items()}
        return topk_mask(scores, self.sparsity, self.scope)

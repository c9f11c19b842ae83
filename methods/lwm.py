"""Least-weight-magnitude (LWM): the one-shot magnitude mask of the pretrained weights, then finetune."""

from torch import nn

from benchmark.core.mask import Mask, magnitude_mask
from methods.base import Pruner, Taxonomy, register_method


@register_method
class LeastWeightMagnitude(Pruner):
    name = "lwm"
    description = "one-shot magnitude pruning of the pretrained weights (HYDRA's LWM baseline)"
    taxonomy = Taxonomy("after training", "one-shot", "unstructured", "local or global", "least weight magnitude")

    def mask(self, model: nn.Module) -> Mask:
        return magnitude_mask(model, self.sparsity, self.scope)

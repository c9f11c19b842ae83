"""Least-weight-magnitude (LWM): the one-shot magnitude mask of the pretrained weights, then finetune."""

from torch import nn

from methods.base import Pruner, Taxonomy, register_method
from methods.mask import Mask, magnitude_mask


@register_method
class LeastWeightMagnitude(Pruner):
    name = "lwm"
    description = "one-shot magnitude pruning of the pretrained weights (HYDRA's LWM baseline)"
    taxonomy = Taxonomy("after training", "one-shot", "unstructured", "local or global", "least weight magnitude")

    def mask(self, model: nn.Module) -> Mask:
        return magnitude_mask(model, self.cfg.sparsity, self.cfg.scope)

"""The fast GPU path of the training loop: bf16 autocast, the channels-last memory format, torch.compile.

Only `amp` changes results (bf16 keeps 8 bits of mantissa, so every forward pass and every attack step rounds
differently), so it is part of the run key (`RunConfig.amp`). Channels-last and compile change how the same
arithmetic is laid out and scheduled, not what is computed, so they are run options and enter no key (on a
GPU they may pick other kernels, which can move the last bits, as cuDNN's own algorithm choice already does).

What stays fp32, and why:

- The evaluation (attacks, AutoAttack, CERTIFY, verification) runs outside the loop and never under autocast:
  a model trained in bf16 is measured exactly as an fp32 one, so the table compares like with like, and an
  attack in reduced precision can be weaker (input gradients rounded to zero look like robustness).
- Bound propagation, in the bound-based objectives (IBP, CROWN-IBP, MixTrain) as in verification, turns
  autocast off (`full_precision`): interval and linear bounds are long sums of products of mixed signs, and
  bf16's rounding is neither directed nor small, so bounds computed in bf16 are not bounds on the fp32 model.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from dataclasses import dataclass

import torch
from torch import Tensor, nn

AMP_DTYPES = {"bf16": torch.bfloat16}


@dataclass(frozen=True)
class FastPath:
    """How the loop runs a phase: `amp` is the run's (`RunConfig.amp`), the others the run options'."""

    amp: str = "fp32"
    channels_last: bool = False
    compile: bool = False

    def autocast(self, device: torch.device) -> AbstractContextManager:
        """Autocast for the objective's forward passes and attacks (a no-op in fp32)."""
        dtype = AMP_DTYPES.get(self.amp)
        return torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None)

    def lay_out(self, model: nn.Module) -> nn.Module:
        """The model in the chosen memory format (in place)."""
        return model.to(memory_format=torch.channels_last) if self.channels_last else model

    def compiled(self, model: nn.Module) -> nn.Module:
        return torch.compile(model) if self.compile else model  # type: ignore[return-value]

    def inputs(self, x: Tensor) -> Tensor:
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last and x.dim() == 4 else x


def full_precision(x: Tensor) -> AbstractContextManager:
    """Autocast off for a block (bound propagation) inside a phase that runs under it."""
    return torch.autocast(x.device.type, enabled=False)

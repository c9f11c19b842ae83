"""Data-parallel training of one cell over the processes `torchrun` starts (`--ddp`).

Every rank runs the same cell in lockstep: the same config, the same seeds, the same loader order, each rank
training on its own contiguous share of every batch (`benchmark.core.data.Shard`). The model is wrapped in
DistributedDataParallel, which all-reduces (averages) the gradients of every trained parameter, HYDRA's scores
included, so parameters stay identical on every rank; ADMM's Z and U are computed from those parameters and
stay identical too. `check_same` holds the model, a pruner's state and the mask to that at the end of each
phase. Only rank 0 writes files (`benchmark.core.io.main_process`) and the store; `barrier` makes the others
wait where they read what it wrote.

BatchNorm: no SyncBatchNorm. HYDRA's code trains multi-GPU with nn.DataParallel, whose replicas normalise
their own share of the batch and keep the running statistics of the first replica; DDP's default
(broadcast_buffers) does the same: per-rank batch statistics, rank 0's running statistics sent to every rank
at each forward pass in training mode.
"""

from __future__ import annotations

import datetime
import hashlib
import os
from collections.abc import Iterable
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from benchmark.core.data import Shard
from benchmark.core.errors import UserError
from benchmark.core.io import main_process

TORCHRUN_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
TIMEOUT = datetime.timedelta(hours=1)  # rank 0 alone writes checkpoints; the others wait that long at most


def init_from_env(device: str) -> str:
    """Join the process group torchrun's environment describes (nccl on CUDA, gloo on the CPU) and return
    this rank's device (`cuda:<LOCAL_RANK>` on CUDA)."""
    missing = [name for name in TORCHRUN_ENV if name not in os.environ]
    if missing:
        raise UserError(f"--ddp needs torchrun's environment (missing {', '.join(missing)}): start it with "
                        "`torchrun --nproc-per-node N -m benchmark run ... --ddp`")
    if device == "cuda":
        local = int(os.environ["LOCAL_RANK"])
        torch.cuda.set_device(local)
        device = f"cuda:{local}"
    dist.init_process_group("nccl" if device.startswith("cuda") else "gloo", timeout=TIMEOUT)
    return device


def close() -> None:
    """Leave the process group, if this process joined one."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def active() -> bool:
    """Whether this process is one of several of a process group."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def world() -> int:
    return dist.get_world_size() if active() else 1


def rank() -> int:
    return dist.get_rank() if active() else 0


is_main = main_process


def shard() -> Shard | None:
    """This rank's share of each training batch; None in a single process."""
    return Shard(rank(), world()) if active() else None


def barrier() -> None:
    """Wait until every rank is here (after rank 0 wrote what the others read next)."""
    if active():
        dist.barrier()


def gather(obj: Any) -> list[Any]:
    """Every rank's `obj` (picklable, on the CPU), in rank order, on every rank."""
    if not active():
        return [obj]
    out: list[Any] = [None] * world()
    dist.all_gather_object(out, obj)
    return out


class DataParallel(DistributedDataParallel):
    """DDP whose forward passes in eval mode go straight to the module. Those are the attacks' steps and
    TRADES' target: they differentiate with respect to the input only, or not at all, so they have no
    gradients to reduce, and running them through DDP's reducer would leave it waiting for gradients that
    never come."""

    def forward(self, *inputs: Any, **kwargs: Any) -> Any:
        if not self.training:
            return self.module(*inputs, **kwargs)
        return super().forward(*inputs, **kwargs)


def wrap(model: nn.Module, device: torch.device) -> nn.Module:
    """The model as the training loop drives it: DDP over the process group, or the model itself."""
    if not active():
        return model
    return DataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)


def digest(tensors: Iterable[Tensor]) -> str:
    """A hash of the tensors' bytes, in order."""
    h = hashlib.sha256()
    for t in tensors:
        h.update(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def check_same(what: str, tensors: Iterable[Tensor]) -> None:
    """Fail unless the tensors are bit for bit the same on every rank."""
    if not active():
        return
    digests = gather(digest(tensors))
    if len(set(digests)) > 1:
        differ = [r for r, d in enumerate(digests) if d != digests[0]]
        raise RuntimeError(f"--ddp: {what} differs between rank 0 and rank(s) {differ}")


def state_tensors(state: Any) -> list[Tensor]:
    """The tensors of a (nested) state dict, in a fixed order."""
    if isinstance(state, Tensor):
        return [state]
    if isinstance(state, dict):
        return [t for key in sorted(state, key=str) for t in state_tensors(state[key])]
    if isinstance(state, list | tuple):
        return [t for item in state for t in state_tensors(item)]
    return []

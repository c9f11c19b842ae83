"""In-memory dataset types, the fast batch loader and deterministic subsets."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Subset, TensorDataset

from benchmark.core.errors import UserError


class UInt8ImageDataset(Dataset):
    """Images kept as uint8 NCHW (4x smaller than float32), converted to [0, 1] float32 per access.

    `transform` (optional) acts on the float CHW tensor, e.g. random crops and flips for training.
    Without a transform, `make_loader` batches it by slicing, like a `TensorDataset`.
    """

    def __init__(self, images: Tensor, labels: Tensor, transform: Callable[[Tensor], Tensor] | None = None):
        if images.dtype != torch.uint8 or images.dim() != 4:
            raise ValueError(f"images must be uint8 NCHW, got {images.dtype} {tuple(images.shape)}")
        if labels.shape != (images.shape[0],):
            raise ValueError(f"labels shape {tuple(labels.shape)} does not match {images.shape[0]} images")
        self.images = images
        self.labels = labels.to(torch.int64)
        self.transform = transform

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        image = self.images[index].to(torch.float32).div_(255.0)
        if self.transform is not None:
            image = self.transform(image)
        return image, self.labels[index]

    def take(self, indices: Tensor) -> UInt8ImageDataset:
        """The same kind of dataset restricted to `indices` (same transform)."""
        return UInt8ImageDataset(self.images[indices], self.labels[indices], self.transform)


@dataclass(frozen=True)
class Shard:
    """This process's share of every batch in data-parallel training (`torchrun ... --ddp`): rank `rank` of
    `world`. Every rank draws the same seeded order and takes its own contiguous slice of each batch (as
    DataParallel splits a batch), `len(batch) // world` examples each, so the ranks' mean losses average to the
    batch's mean loss and every rank takes the same number of steps. A last partial batch therefore leaves
    out its `len % world` final examples (all of it when it is smaller than `world`)."""

    rank: int
    world: int


class _IndexBatches:
    """Re-iterable batches of indices into a dataset of `size` items: each `iter()` is one epoch."""

    def __init__(self, size: int, batch_size: int, shuffle: bool, generator: torch.Generator | None,
                 shard: Shard | None = None):
        if shard is not None and batch_size < shard.world:
            raise UserError(f"batch size {batch_size} cannot be split over {shard.world} processes")
        self.size = size
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.generator = generator
        self.shard = shard

    def __len__(self) -> int:
        if self.shard is None:
            return -(-self.size // self.batch_size)
        return self.size // self.batch_size + (self.size % self.batch_size >= self.shard.world)

    def __iter__(self) -> Iterator[Tensor]:
        order = torch.randperm(self.size, generator=self.generator) if self.shuffle else torch.arange(self.size)
        for start in range(0, self.size, self.batch_size):
            batch = order[start : start + self.batch_size]
            if self.shard is not None:
                share = len(batch) // self.shard.world
                if share == 0:
                    continue
                batch = batch[self.shard.rank * share : (self.shard.rank + 1) * share]
            yield batch


class _BatchLoader:
    """Batches of a sliceable dataset, no per-item collate."""

    def __init__(self, batches: _IndexBatches, take: Callable[[Tensor], tuple[Tensor, ...]]):
        self.batches = batches
        self.take = take

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self) -> Iterator[tuple[Tensor, ...]]:
        return map(self.take, self.batches)


class _IndexLists:
    """`_IndexBatches` as the lists of ints a DataLoader's batch_sampler yields."""

    def __init__(self, batches: _IndexBatches):
        self.batches = batches

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self) -> Iterator[list[int]]:
        return (batch.tolist() for batch in self.batches)


def _take_tensors(tensors: Sequence[Tensor]) -> Callable[[Tensor], tuple[Tensor, ...]]:
    def take(idx: Tensor) -> tuple[Tensor, ...]:
        return tuple(t[idx.to(t.device)] for t in tensors)

    return take


def _take_uint8(dataset: UInt8ImageDataset) -> Callable[[Tensor], tuple[Tensor, ...]]:
    def take(idx: Tensor) -> tuple[Tensor, ...]:
        return dataset.images[idx].to(torch.float32).div_(255.0), dataset.labels[idx]

    return take


def make_loader(
    dataset: Dataset,
    batch_size: int,
    shuffle: bool,
    generator: torch.Generator | None = None,
    num_workers: int = 0,
    shard: Shard | None = None,
) -> Iterable[tuple[Tensor, Tensor]]:
    """Batches of `dataset`, the last one possibly partial; `len()` is the number of batches.

    In-memory datasets (`TensorDataset`, `UInt8ImageDataset` without transform) are batched by
    indexing their tensors with slices of a per-epoch permutation drawn from `generator`: for small
    data this is much faster than a `DataLoader`'s per-item collate. Anything else gets a `DataLoader`.
    With `shard`, each batch is this process's share of it (see `Shard`); each process loads only its share.
    """
    if batch_size < 1:
        raise UserError(f"batch size must be at least 1, got {batch_size}")
    batches = _IndexBatches(len(dataset), batch_size, shuffle, generator, shard)  # type: ignore[arg-type]
    if isinstance(dataset, TensorDataset):
        return _BatchLoader(batches, _take_tensors(dataset.tensors))
    if isinstance(dataset, UInt8ImageDataset) and dataset.transform is None:
        return _BatchLoader(batches, _take_uint8(dataset))
    pin = torch.cuda.is_available()
    if shard is not None:  # the same order as the DataLoader's own shuffle draws: randperm from `generator`
        return DataLoader(dataset, batch_sampler=_IndexLists(batches), num_workers=num_workers, pin_memory=pin)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        generator=generator,
        num_workers=num_workers,
        pin_memory=pin,
    )


def subset(dataset: Dataset, n: int | None, seed: int) -> Dataset:
    """The first `n` items of a permutation seeded by `seed` (so smaller subsets nest in larger ones).

    `n=None` or `n >= len(dataset)` returns `dataset` itself. In-memory datasets keep their type, so
    they keep the fast path of `make_loader`.
    """
    size = len(dataset)  # type: ignore[arg-type]
    if n is None or n >= size:
        return dataset
    if n < 0:
        raise UserError(f"subset size must be non-negative, got {n}")
    return select(dataset, torch.randperm(size, generator=torch.Generator().manual_seed(seed))[:n])


def select(dataset: Dataset, indices: Tensor) -> Dataset:
    """The items at `indices`, in that order; in-memory datasets keep their type (and `make_loader`'s fast path)."""
    if isinstance(dataset, TensorDataset):
        return TensorDataset(*(t[indices.to(t.device)] for t in dataset.tensors))
    if isinstance(dataset, UInt8ImageDataset):
        return dataset.take(indices)
    return Subset(dataset, indices.tolist())

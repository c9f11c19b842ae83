"""In-memory dataset types, the fast batch loader and deterministic subsets."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence

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


class _BatchLoader:
    """Re-iterable batches of a sliceable dataset: each `iter()` is one epoch, no per-item collate."""

    def __init__(
        self,
        size: int,
        take: Callable[[Tensor], tuple[Tensor, ...]],
        batch_size: int,
        shuffle: bool,
        generator: torch.Generator | None,
    ):
        self.size = size
        self.take = take
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.generator = generator

    def __len__(self) -> int:
        return -(-self.size // self.batch_size)

    def __iter__(self) -> Iterator[tuple[Tensor, ...]]:
        order = torch.randperm(self.size, generator=self.generator) if self.shuffle else torch.arange(self.size)
        for start in range(0, self.size, self.batch_size):
            yield self.take(order[start : start + self.batch_size])


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
) -> Iterable[tuple[Tensor, Tensor]]:
    """Batches of `dataset`, the last one possibly partial; `len()` is the number of batches.

    In-memory datasets (`TensorDataset`, `UInt8ImageDataset` without transform) are batched by
    indexing their tensors with slices of a per-epoch permutation drawn from `generator`: for small
    data this is much faster than a `DataLoader`'s per-item collate. Anything else gets a `DataLoader`.
    """
    if batch_size < 1:
        raise UserError(f"batch size must be at least 1, got {batch_size}")
    if isinstance(dataset, TensorDataset):
        return _BatchLoader(len(dataset), _take_tensors(dataset.tensors), batch_size, shuffle, generator)
    if isinstance(dataset, UInt8ImageDataset) and dataset.transform is None:
        return _BatchLoader(len(dataset), _take_uint8(dataset), batch_size, shuffle, generator)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        generator=generator,
        num_workers=num_workers,
        pin_memory=torch.cuda.is_available(),
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

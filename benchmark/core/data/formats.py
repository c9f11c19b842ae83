"""Readers of the datasets' on-disk formats: IDX (MNIST, Fashion-MNIST), CIFAR batch pickles, SVHN .mat.

torchvision's CIFAR10/CIFAR100/SVHN classes refuse any file whose md5 differs from the official release
(they check it on every construction, not only after downloading), which rules out re-packed copies and
small test fixtures. The formats are simple, so rpbench always reads them itself and uses torchvision only
to download. A broken file is a one-line `UserError`.
"""

from __future__ import annotations

import gzip
import pickle
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import TensorDataset

from benchmark.core.errors import UserError


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


_IDX_DTYPES = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}

IDX_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}


def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (as in the MNIST distribution), gzip-compressed or not.

    Header: two zero bytes, a type code, the number of dimensions, then one big-endian uint32 per
    dimension; the data follows in row-major order.
    """
    opener = gzip.open if path.name.endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as exc:
        raise UserError(f"cannot read IDX file {path}: {first_line(exc)}") from exc
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise UserError(f"{path} is not an IDX file (bad magic number)")
    dtype, ndim = _IDX_DTYPES[raw[2]], raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise UserError(f"{path}: truncated IDX header")
    dims = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    count = int(np.prod(dims, dtype=np.int64))
    if len(raw) - header != count * dtype.itemsize:
        raise UserError(f"{path}: IDX header says {dims} but the file holds {len(raw) - header} data bytes")
    return np.frombuffer(raw, dtype=dtype, count=count, offset=header).reshape(dims)


def find_idx_dir(directory: Path) -> dict[str, Path] | None:
    """The four MNIST-style files in `directory` (plain or .gz), or None if any is missing."""
    found: dict[str, Path] = {}
    for key, stem in IDX_FILES.items():
        for candidate in (directory / stem, directory / f"{stem}.gz"):
            if candidate.is_file():
                found[key] = candidate
                break
        else:
            return None
    return found


def idx_split(images_path: Path, labels_path: Path, shape: tuple[int, int, int]) -> TensorDataset:
    images, labels = read_idx(images_path), read_idx(labels_path)
    c, h, w = shape
    if images.ndim != 3 or images.shape[1:] != (h, w):
        raise UserError(f"{images_path}: expected images of {h}x{w}, got shape {images.shape}")
    if labels.ndim != 1 or labels.shape[0] != images.shape[0]:
        raise UserError(f"{labels_path}: {labels.shape} labels for {images.shape[0]} images")
    x = torch.from_numpy(images.astype(np.float32) / 255.0).reshape(-1, c, h, w)
    y = torch.from_numpy(labels.astype(np.int64))
    return TensorDataset(x, y)


def _unpickle(path: Path) -> dict[str, Any]:
    """Load a CIFAR batch pickle (Python 2 or 3), returning it with str keys."""
    try:
        with path.open("rb") as f:
            entry = pickle.load(f, encoding="bytes")
    except Exception as exc:  # unpickling can raise nearly anything on a corrupt file
        raise UserError(f"cannot read CIFAR batch {path}: {first_line(exc)}") from exc
    if not isinstance(entry, dict):
        raise UserError(f"{path} is not a CIFAR batch (expected a dict, got {type(entry).__name__})")
    return {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in entry.items()}


def read_cifar_batches(paths: Sequence[Path], label_key: str) -> tuple[Tensor, Tensor]:
    images, labels = [], []
    for path in paths:
        entry = _unpickle(path)
        if "data" not in entry or label_key not in entry:
            raise UserError(f"{path} lacks the keys 'data' and {label_key!r} of a CIFAR batch")
        data = np.asarray(entry["data"], dtype=np.uint8)
        if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or len(entry[label_key]) != data.shape[0]:
            n_labels = len(entry[label_key])
            raise UserError(f"{path}: data {data.shape} with {n_labels} labels is not a CIFAR batch")
        images.append(data.reshape(-1, 3, 32, 32))
        labels.append(np.asarray(entry[label_key], dtype=np.int64))
    return torch.from_numpy(np.concatenate(images)), torch.from_numpy(np.concatenate(labels))


def read_svhn_mat(path: Path) -> tuple[Tensor, Tensor]:
    """An SVHN cropped-digits .mat: X is HxWxCxN uint8, y is Nx1 with 10 standing for the digit 0."""
    import scipy.io

    try:
        mat = scipy.io.loadmat(str(path))
    except Exception as exc:  # scipy raises ValueError/OSError/... on a broken file
        raise UserError(f"cannot read SVHN file {path}: {first_line(exc)}") from exc
    if "X" not in mat or "y" not in mat:
        raise UserError(f"{path} lacks the variables X and y of an SVHN file")
    x, y = np.asarray(mat["X"]), np.asarray(mat["y"]).astype(np.int64).reshape(-1)
    if x.ndim != 4 or x.shape[:3] != (32, 32, 3) or x.shape[3] != y.shape[0]:
        raise UserError(f"{path}: X {x.shape} and y {y.shape} are not in the SVHN 32x32x3xN layout")
    y[y == 10] = 0
    images = np.ascontiguousarray(np.transpose(x, (3, 2, 0, 1)).astype(np.uint8))
    return torch.from_numpy(images), torch.from_numpy(y)

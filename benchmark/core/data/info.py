"""Dataset descriptions: a registry of `DatasetInfo` records (filled by `catalogue.py`).

Every dataset yields `(image, label)` with `image` a float32 tensor of `info.input_shape` holding [0, 1]
pixels (no normalisation: models normalise inside themselves with `info.mean`/`info.std`) and `label` an
int64.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from torch.utils.data import Dataset

from benchmark.core.registry import Registry


@dataclass(frozen=True)
class DatasetInfo:
    """Static description of a dataset plus its loader `(data_dir, download) -> (train, test)`."""

    name: str
    input_shape: tuple[int, int, int]  # C, H, W
    num_classes: int
    mean: tuple[float, ...]  # per channel, of [0, 1] pixels
    std: tuple[float, ...]
    eps: float  # default l-inf radius in [0, 1] pixel units, for training and evaluation
    verify_eps: float  # the default radius of the bound-based objectives and their evaluation (see README)
    step_size: float  # default PGD step size for training attacks
    default_arch: str
    description: str  # one line, shown by `benchmark list datasets`
    load: Callable[[Path | None, bool], tuple[Dataset, Dataset]] = field(repr=False, compare=False)


DATASETS: Registry[DatasetInfo] = Registry("dataset")


def load_dataset(info: DatasetInfo, data_dir: Path | str | None, download: bool) -> tuple[Dataset, Dataset]:
    """Load `(train, test)` for `info`; `data_dir=None` means only offline sources are searched."""
    if data_dir is not None:
        data_dir = Path(data_dir).expanduser()
    return info.load(data_dir, download)

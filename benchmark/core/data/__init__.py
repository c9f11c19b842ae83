"""Datasets: descriptions (info), the registered datasets and their loaders (catalogue), the on-disk format
readers (formats) and the fast loader and subsets (loader). Importing this package registers every dataset."""

from benchmark.core.data import catalogue as _catalogue  # noqa: F401  (registers the datasets)
from benchmark.core.data.info import DATASETS, DatasetInfo, load_dataset
from benchmark.core.data.loader import Shard, UInt8ImageDataset, make_loader, select, subset

__all__ = ["DATASETS", "DatasetInfo", "Shard", "UInt8ImageDataset", "load_dataset", "make_loader", "select", "subset"]

"""Shared fixtures: tiny configs and models so every contract test runs in seconds on a CPU."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from benchmark.core.config import RunConfig
from benchmark.grid import resolve
from benchmark.runner import Environment, new_model
from benchmark.spec import spec_from


def resolved(options: dict[str, object]) -> RunConfig:
    """The base config of a grid given by option names and settings, resolved exactly as `run` does."""
    spec, _ = spec_from(options, "test")
    return resolve(spec).base


def smoke_config(**options: object) -> RunConfig:
    """The smoke preset on digits (or what `options` say), resolved exactly as the CLI does."""
    return resolved({"preset": "smoke", **options})


@pytest.fixture
def smoke_cfg() -> RunConfig:
    return smoke_config()


@pytest.fixture
def env(tmp_path: Path) -> Environment:
    return Environment(out=tmp_path / "out", device="cpu", quiet=True)


@pytest.fixture
def tiny_model(smoke_cfg: RunConfig) -> torch.nn.Module:
    torch.manual_seed(0)
    return new_model(smoke_cfg)


@pytest.fixture
def digits_batch() -> tuple[torch.Tensor, torch.Tensor]:
    from benchmark.core.data import DATASETS, load_dataset

    _, test = load_dataset(DATASETS.get("digits"), None, False)
    return test.tensors[0][:64], test.tensors[1][:64]


@pytest.fixture(scope="session")
def trained_digits_model() -> torch.nn.Module:
    """cnn-small trained naturally on digits for a few epochs (about a second): attacks need a real model."""
    from benchmark.core.data import DATASETS, load_dataset, make_loader

    torch.manual_seed(0)
    model = new_model(smoke_config())
    train_set, _ = load_dataset(DATASETS.get("digits"), None, False)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    for _ in range(8):
        for x, y in make_loader(train_set, 64, shuffle=True, generator=torch.Generator().manual_seed(0)):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
    return model.eval()

"""The 32x32 path end to end on a CIFAR-10 fixture in the real on-disk format (python pickles)."""

import pytest

from benchmark.cli import main
from tests.test_datasets import write_cifar10


@pytest.mark.parametrize("arch", ["cnn-small", pytest.param("vgg16_bn", marks=pytest.mark.slow)])
def test_cifar10_grid_runs_from_a_data_dir(tmp_path, capsys, arch):
    write_cifar10(tmp_path / "data", per_batch=16)
    argv = ["run", "--data", "cifar10", "--data-dir", str(tmp_path / "data"), "--arch", arch, "--preset", "smoke",
            "--methods", "hydra,lwm", "--sparsity", "0.9", "--out", str(tmp_path / "out"), "--quiet",
            "--workers", "1"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert f"### cifar10 · {arch} · trades" in out
    assert "eps 0.03137" in out and "| hydra |" in out and "| lwm |" in out and "failed" not in out

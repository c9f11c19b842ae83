"""The README's "Add your own pruner" example works: it registers, and passes the pruner contract."""

import re
from pathlib import Path

import pytest
import torch

from benchmark import runner
from benchmark.core.mask import kept_count, prunable_weights
from methods import METHODS
from tests.conftest import smoke_config

README = Path(__file__).parent.parent / "README.md"


@pytest.fixture(scope="module")
def example_method() -> str:
    section = README.read_text().split("## Add your own pruner", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    if "example-rownorm" not in METHODS:
        exec(compile(code, "README.md", "exec"), {"__name__": "methods.row_magnitude"})
    return "example-rownorm"


@pytest.mark.parametrize("scope", ["layer", "global"])
def test_readme_pruner_runs_a_cell_with_exact_sparsity(example_method, scope, env):
    cfg = smoke_config(scope=scope).replace(method=example_method, sparsity=0.95)
    assert cfg.settings_of("rownorm").epochs == 1 and cfg.settings_of("rownorm").power == 1.0  # its smoke budget
    record = runner.run_cell(cfg, env)
    assert record.status == "done" and 0 <= record.value("clean") <= 1
    assert [p["phase"] for p in record.cost["pruner"]] == ["warmup"]
    exported = torch.load(runner.run_dir(env, cfg) / "model.pt", weights_only=True)
    plain = runner.new_model(cfg)
    plain.load_state_dict(exported, strict=True)
    weights = prunable_weights(plain)
    if scope == "layer":
        for name, w in weights.items():
            assert int((w != 0).sum()) <= kept_count(w.numel(), 0.95), name
    else:
        total = sum(w.numel() for w in weights.values())
        assert sum(int((w != 0).sum()) for w in weights.values()) <= kept_count(total, 0.95)


def test_readme_pruner_setting_is_set_by_name_and_keys_its_runs(example_method):
    cfg = smoke_config(**{"rownorm.power": 0.5}).replace(method=example_method, sparsity=0.9)
    assert cfg.settings_of("rownorm").power == 0.5
    default = smoke_config().replace(method=example_method, sparsity=0.9)
    assert cfg.key() != default.key()
    assert cfg.replace(method="lwm").key() == default.replace(method="lwm").key()  # no other method's key

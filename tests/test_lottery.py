"""Lottery tickets: the round path, nested masks, exact rewinding, and rounds shared between targets."""

import pytest
import torch

from benchmark import runner
from benchmark.core.errors import UserError
from benchmark.core.mask import kept_count, prunable_weights
from benchmark.grid import cells_of
from benchmark.training import loop as train
from methods import build_pruner
from methods.lottery import round_sparsities
from results.store import Store
from tests.conftest import smoke_config


def test_round_path_reaches_the_target_exactly():
    assert round_sparsities(0.9, 0.5) == pytest.approx([0.5, 0.75, 0.875, 0.9])
    assert round_sparsities(0.95, 0.5)[:3] == round_sparsities(0.99, 0.5)[:3] == pytest.approx([0.5, 0.75, 0.875])
    assert round_sparsities(0.5, 0.5) == [0.5]
    with pytest.raises(UserError):
        round_sparsities(0.9, 1.0)


@pytest.mark.parametrize("scope", ["layer", "global"])
def test_masks_are_nested_and_rewinding_restores_survivors_exactly(tiny_model, scope):
    rewind = {k: v.clone() for k, v in tiny_model.state_dict().items()}
    cfg = smoke_config(scope=scope).replace(method="lottery", sparsity=0.95).with_settings("lottery", rate=0.5)
    pruner = build_pruner("lottery", cfg)
    pruner.rewind_state = rewind
    previous = None
    for phase in pruner.phases():
        with torch.no_grad():  # stands in for the round's training: the weights move
            for w in prunable_weights(tiny_model).values():
                w.add_(torch.randn_like(w))
        pruner.prepare(tiny_model, phase)
        mask = pruner.training_mask(tiny_model, phase)
        for name, w in prunable_weights(tiny_model).items():
            assert torch.equal(w[mask[name]], rewind[name][mask[name]])  # survivors rewound exactly
            assert torch.all(w[~mask[name]] == 0)
            if previous is not None:
                assert not torch.any(mask[name] & ~previous[name])  # only ever removes weights
        previous = mask
    final = pruner.mask(tiny_model)
    if scope == "layer":
        assert all(int(k.sum()) == kept_count(k.numel(), 0.95) for k in final.values())
    else:
        assert final.kept == kept_count(final.total, 0.95)


def test_targets_on_one_path_share_rounds_and_a_rerun_trains_none(env, monkeypatch):
    names = []
    real = train.run_phase

    def spy(model, phase, *args, **kwargs):
        names.append(phase.name)
        return real(model, phase, *args, **kwargs)

    monkeypatch.setattr(runner.train, "run_phase", spy)
    base = smoke_config().with_settings("lottery", rate=0.5)
    cells = cells_of(base, ["lottery"], [0.9, 0.95], [0])
    records = runner.run_grid(cells, env, Store(env.out / "runs.db"))
    assert [r.status for r in records] == ["done"] * 3
    rounds = [n for n in names if n.startswith("round")]
    # 0.9: 0.5, 0.75, 0.875, 0.9; 0.95 reuses the first three and adds 0.9375 and 0.95
    assert rounds == ["round1", "round2", "round3", "round4", "round4", "round5"]
    assert records[2].sparsity_actual == pytest.approx(0.95, abs=0.005)
    # a ticket's cost is its whole path, shared rounds included
    phases = records[2].cost["pruner"]
    assert [p["phase"] for p in phases] == ["round1", "round2", "round3", "round4", "round5"]
    assert [p.get("shared", False) for p in phases] == [True, True, True, False, False]
    assert all(p["epochs"] == base.settings_of("lottery").epochs for p in phases)

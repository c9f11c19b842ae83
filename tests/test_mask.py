import pytest
import torch

from benchmark.core.errors import UserError
from benchmark.core.mask import Mask, kept_count, magnitude_mask, prunable_weights, topk_mask


@pytest.mark.parametrize("n,sparsity,kept", [(100, 0.9, 10), (1728, 0.99, 18), (2560, 0.99, 26), (100, 0.29, 71),
                                             (7, 0.5, 4), (10, 0.0, 10)])
def test_kept_count_follows_hydras_floor_rule(n, sparsity, kept):
    assert kept_count(n, sparsity) == kept


@pytest.mark.parametrize("sparsity", [0.5, 0.9, 0.95, 0.99])
def test_layer_scope_is_exact_per_layer(tiny_model, sparsity):
    mask = magnitude_mask(tiny_model, sparsity, "layer")
    for name, w in prunable_weights(tiny_model).items():
        assert int(mask[name].sum()) == kept_count(w.numel(), sparsity)


@pytest.mark.parametrize("sparsity", [0.5, 0.9, 0.99])
def test_global_scope_is_exact_in_total(tiny_model, sparsity):
    mask = magnitude_mask(tiny_model, sparsity, "global")
    assert mask.kept == kept_count(mask.total, sparsity)


def test_ties_still_give_exact_counts():
    scores = {"a.weight": torch.ones(10, 10), "b.weight": torch.zeros(3, 5)}
    assert topk_mask(scores, 0.9, "layer")["a.weight"].sum() == 10
    assert topk_mask(scores, 0.9, "global").kept == kept_count(115, 0.9)


def test_magnitude_mask_keeps_the_largest():
    scores = {"w": torch.tensor([[0.1, -5.0, 0.3, 2.0]])}
    assert topk_mask({"w": scores["w"].abs()}, 0.5, "layer")["w"].tolist() == [[False, True, False, True]]


def test_global_scope_compares_across_layers():
    scores = {"a": torch.tensor([1.0, 2.0]), "b": torch.tensor([3.0, 4.0])}
    mask = topk_mask(scores, 0.5, "global")
    assert mask["a"].tolist() == [False, False] and mask["b"].tolist() == [True, True]


def test_mask_rejects_non_bool_and_bad_fit(tiny_model):
    with pytest.raises(ValueError):
        Mask({"x": torch.ones(3)})
    mask = magnitude_mask(tiny_model, 0.5, "layer")
    wrong = Mask({**mask, "1.weight": torch.ones(3, dtype=torch.bool)})
    with pytest.raises(ValueError, match="shape"):
        wrong.validate(tiny_model)
    with pytest.raises(ValueError, match="missing"):
        Mask({}).validate(tiny_model)


def test_bad_sparsity_and_scope_are_user_errors():
    with pytest.raises(UserError):
        topk_mask({"w": torch.ones(4)}, 1.0, "layer")
    with pytest.raises(UserError, match="valid: layer, global"):
        topk_mask({"w": torch.ones(4)}, 0.5, "nope")


def test_apply_zeroes_exactly_and_save_load_round_trips(tiny_model, tmp_path):
    mask = magnitude_mask(tiny_model, 0.9, "layer")
    mask.apply_(tiny_model)
    for name, w in prunable_weights(tiny_model).items():
        assert torch.all(w[~mask[name]] == 0)
    assert mask.sparsity() == pytest.approx(0.9, abs=0.01)
    mask.save(tmp_path / "mask.pt")
    loaded = Mask.load(tmp_path / "mask.pt")
    assert all(torch.equal(loaded[n], mask[n]) for n in mask)

"""The one key rule (DESIGN.md, property 7): budgets are hashed, a new defaulted field changes no key."""

from __future__ import annotations

import dataclasses

import pytest

from benchmark.core import presets
from benchmark.core.config import (
    KEY_VERSION,
    SETTINGS,
    RunConfig,
    TrainSettings,
    baseline_fields,
    schema_fields,
    setting,
)
from methods.hydra import HydraSettings
from tests.conftest import smoke_config


def test_golden_keys_of_key_version_2():
    """A deliberate, documented change: key version 2 hashes every value (budgets included), so every key of
    version 1 changed (README, "Cells and keys"). If this fails, keys changed again: bump KEY_VERSION."""
    cfg = RunConfig(method="hydra", sparsity=0.99)
    assert KEY_VERSION == 2
    assert (cfg.key(), cfg.pretrain_key(), cfg.eval_key()) == ("bc384ee6f6b6d437", "aa36805c7d3f112d",
                                                              "140902f114916ed8")


def test_a_retuned_core_preset_budget_changes_the_run_and_pretrained_keys(monkeypatch):
    before = smoke_config().replace(method="lwm", sparsity=0.9)
    smoke = presets.PRESETS.get("smoke")

    def retuned(ctx):
        values = smoke.budget(ctx)
        return {**values, "pretrain": {**values["pretrain"], "epochs": 4}}

    monkeypatch.setitem(presets.PRESETS._items, "smoke", dataclasses.replace(smoke, budget=retuned))
    after = smoke_config().replace(method="lwm", sparsity=0.9)
    assert after.pretrain.epochs == 4
    assert after.key() != before.key() and after.pretrain_key() != before.pretrain_key()
    assert after.eval_key() == before.eval_key()


def test_a_retuned_plugin_budget_changes_only_its_methods_keys(monkeypatch):
    before = {m: smoke_config().replace(method=m, sparsity=0.9) for m in ("hydra", "lwm")}
    group = SETTINGS.get("hydra")
    monkeypatch.setitem(SETTINGS._items, "hydra", dataclasses.replace(group, budget=lambda ctx: {"epochs": 2}))
    after = {m: smoke_config().replace(method=m, sparsity=0.9) for m in ("hydra", "lwm")}
    assert after["hydra"].settings_of("hydra").epochs == 2
    assert after["hydra"].key() != before["hydra"].key()
    assert after["lwm"].key() == before["lwm"].key()
    assert after["hydra"].pretrain_key() == before["hydra"].pretrain_key()  # the pruner's budget is not pretraining's


@dataclasses.dataclass
class TrainSettingsWithWarmup(TrainSettings):
    """TrainSettings as it would be after adding a field, the way the key rule asks: with its introduced value."""

    warmup_epochs: int = setting(0, minimum=0, introduced=0, help="linear learning-rate warmup")


@dataclasses.dataclass
class HydraSettingsWithTemperature(HydraSettings):
    temperature: float = setting(1.0, introduced=1.0, help="a new score option")


def test_a_new_defaulted_field_changes_no_key_until_it_is_used():
    cfg = smoke_config().replace(method="hydra", sparsity=0.9)
    keys = (cfg.key(), cfg.pretrain_key(), cfg.eval_key())
    extended = cfg.replace(pretrain=TrainSettingsWithWarmup(**dataclasses.asdict(cfg.pretrain)),
                           groups={**cfg.groups, "hydra": HydraSettingsWithTemperature(
                               **dataclasses.asdict(cfg.settings_of("hydra")))})
    assert (extended.key(), extended.pretrain_key(), extended.eval_key()) == keys
    warm = extended.replace(pretrain=dataclasses.replace(extended.pretrain, warmup_epochs=2))
    assert warm.key() != keys[0] and warm.pretrain_key() != keys[1]
    hot = extended.with_settings("hydra", temperature=2.0)
    assert hot.key() != keys[0] and hot.pretrain_key() == keys[1]


def test_every_field_added_after_the_baseline_declares_its_introduced_value():
    """Otherwise adding it would have changed every existing key. A plug-in group that is new as a whole has
    no old keys to protect."""
    baseline = baseline_fields()
    baseline_groups = {p.split(".")[1] for p in baseline if p.startswith("groups.")}
    for path, f in schema_fields():
        if path in baseline:
            continue
        parts = path.split(".")
        if parts[0] == "groups" and parts[1] not in baseline_groups:
            continue
        assert "introduced" in f.metadata, f"{path} is not in key_baseline.json and declares no introduced value"


def test_no_baseline_field_was_removed_or_renamed():
    """Removing or renaming a field changes keys: that is a new KEY_VERSION with a new baseline."""
    current = {path for path, _ in schema_fields()}
    assert baseline_fields() <= current, sorted(baseline_fields() - current)


def test_a_methods_own_settings_do_not_touch_other_methods_keys():
    hydra = smoke_config().replace(method="hydra", sparsity=0.9)
    admm = hydra.replace(method="admm")
    assert hydra.with_settings("admm", rho=5.0).key() == hydra.key()
    assert admm.with_settings("admm", rho=5.0).key() != admm.key()
    lwm = hydra.replace(method="lwm")
    assert lwm.with_settings("hydra", epochs=99).key() == lwm.key()
    assert hydra.with_settings("hydra", epochs=99).key() != hydra.key()


@pytest.mark.parametrize("objective", ["trades", "smoothing", "crown-ibp"])
def test_config_round_trips_through_a_dict_with_its_keys(objective):
    cfg = smoke_config(objective=objective).replace(method="admm", sparsity=0.95)
    again = RunConfig.from_dict(cfg.to_dict())
    assert again == cfg
    assert (again.key(), again.pretrain_key(), again.eval_key()) == (cfg.key(), cfg.pretrain_key(), cfg.eval_key())
    active = RunConfig.from_dict(cfg.only_active().to_dict())
    assert (active.key(), active.pretrain_key(), active.eval_key()) == (cfg.key(), cfg.pretrain_key(),
                                                                          cfg.eval_key())

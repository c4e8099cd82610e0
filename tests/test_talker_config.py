"""The Talker's two configs and the mapping of older flat configs: the family comes from ``arch``, the other
family's settings of an old dict are dropped, the dead ``"depth"`` loss weight is dropped with a warning,
typos are still refused with the key named, and old runs still resume (docs/DESIGN.md §5)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from muomni.checkpoint import config_mismatch
from muomni.config import ConfigError, apply_overrides, config_to_dict, model_from_dict, model_schema
from muomni.models.talker import (
    TalkerConfig,
    TRMConfig,
    TRMTalker,
    build_talker,
    talker_config,
)
from muomni.models.talker.config import AnyTalkerConfig

PINS = json.loads((Path(__file__).resolve().parents[1] / "tests" / "state_dicts.json").read_text())
OLD = {name: pin["config"] for name, pin in PINS.items() if pin["kind"] == "talker"}  # flat dicts of 1d736d9


def load(model: dict) -> TalkerConfig | TRMConfig:
    return model_from_dict(AnyTalkerConfig, model, source="old.json")


@pytest.mark.parametrize("name", list(OLD), ids=list(OLD))
def test_an_old_flat_config_loads_as_its_family_and_its_run_resumes(name):
    cfg = load(OLD[name])
    assert type(cfg) is (TRMConfig if OLD[name]["arch"] == "trm" else TalkerConfig)
    # resume, --init-from: keys added since compare at their defaults, as the checkpointer compares them
    assert config_mismatch({"model": OLD[name]}, {"model": config_to_dict(cfg)},
                           defaults=config_to_dict(type(cfg)())) == []
    assert set(OLD[name]) - set(config_to_dict(cfg)) == set(
        ("text_prefix duration_path align_codebooks dur_kernel depth_layers decoder_fraction" if cfg.arch == "trm"
         else "H_cycles L_cycles share_output_heads").split())


def test_each_family_has_only_its_own_settings():
    ar, trm = set(config_to_dict(TalkerConfig())), set(config_to_dict(TRMConfig()))
    assert {"depth_layers", "duration_path", "text_prefix"} <= ar - trm
    assert {"H_cycles", "L_cycles", "share_output_heads"} <= trm - ar
    with pytest.raises(ConfigError, match="model.arch = 'trm': TalkerConfig is the config of arch 'ar'"):
        TalkerConfig(arch="trm")
    with pytest.raises(ConfigError, match=r"model\.arch = 'gpt': expected one of ar, trm"):
        load({"arch": "gpt"})


def test_the_depth_loss_weight_is_dropped_with_a_warning_and_no_longer_accepted_by_name():
    old = {**OLD["talker_demo_depth"], "loss_weights": {"depth": 0.5, "c1": 2.0}}
    with pytest.warns(UserWarning, match=r"old\.json: model\.loss_weights\.depth is ignored and deprecated"):
        cfg = load(old)
    assert cfg.loss_weights == {"c1": 2.0} and cfg.weight("c1") == 2.0
    with pytest.raises(ConfigError, match="unknown loss 'depth'"):
        TalkerConfig(n_q=2, loss_weights={"depth": 1.0})


def test_the_other_familys_settings_warn_when_set_and_depth_layers_stays_refused_on_trm():
    with pytest.warns(UserWarning, match=r"model\.H_cycles = 2 is ignored"):
        assert type(load({**OLD["talker_tiny"], "H_cycles": 2})) is TalkerConfig
    with pytest.raises(ConfigError, match=r"model\.depth_layers = 1: an autoregressive option"):
        load({**OLD["talker_trm_tiny"], "depth_layers": 1})
    with pytest.raises(ConfigError, match=r"unknown key 'model\.H_cycle'"):  # a typo is still a typo
        load({**OLD["talker_trm_tiny"], "H_cycle": 2})


def test_overrides_may_switch_the_family_and_then_set_its_keys():
    cfg = load(OLD["talker_tiny"])
    section = apply_overrides(model_schema(AnyTalkerConfig)(cfg), ["model.arch=trm", "model.H_cycles=2"]).model
    assert type(section) is TRMConfig and section.H_cycles == 2 and section.d_model == cfg.d_model
    with pytest.raises(ConfigError, match="unknown key model.H_cycles"):
        apply_overrides(model_schema(AnyTalkerConfig)(cfg), ["model.H_cycles=2"])
    assert isinstance(build_talker(talker_config(**{**OLD["talker_trm_tiny"], "n_q": 2})), TRMTalker)

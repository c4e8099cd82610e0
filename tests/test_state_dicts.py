"""Checkpoints written before a refactor still load: every model's state-dict keys and shapes, and its config
fields, are pinned against tests/state_dicts.json, recorded from the code at commit 1d736d9.

Each entry holds the model section of a config as a checkpoint of that commit stores it (every field, the
data-derived ones filled in as train_*.py does), the config file it came from, and the state dict as
{key: shape}. A checkpoint is written from the recorded config and weights of the recorded shapes, then
loaded through the loader inference uses (strict ``load_state_dict``): a renamed parameter, a changed
shape, a renamed or refused config key fails here. The JSON is a record of the past; never regenerate it to
make a rename pass, map the old name on load instead.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from muomni.config import config_to_dict, model_from_dict, read_json_with_base
from muomni.load import load_talker, load_vocoder
from muomni.models.codec import codec_from_dict
from muomni.models.discriminators import Discriminators
from muomni.models.hifigan import HiFiGANConfig
from muomni.text import TextProcessor

ROOT = Path(__file__).resolve().parents[1]
PINS = json.loads((ROOT / "tests" / "state_dicts.json").read_text())


def weights(shapes: dict[str, list[int]]) -> dict[str, torch.Tensor]:
    return {key: torch.ones(shape) for key, shape in shapes.items()}


def shapes(model: torch.nn.Module) -> dict[str, list[int]]:
    return {key: list(value.shape) for key, value in model.state_dict().items()}


def assert_fields_kept(cfg, recorded: dict) -> None:
    """Every field of the loaded config that the old checkpoint stored has the stored value."""
    now = config_to_dict(cfg)
    changed = {k: (recorded[k], now[k]) for k in now if k in recorded and now[k] != recorded[k]}
    assert not changed, f"config fields changed on load (old, new): {changed}"


def load(name: str, tmp_path: Path) -> tuple[torch.nn.Module, object]:
    """(model, its config) loaded from an old checkpoint made of the pinned config and weights."""
    pin = PINS[name]
    kind, cfg, state = pin["kind"], pin["config"], weights(pin["state_dict"])
    if kind == "codec":
        model = codec_from_dict({"config": cfg, "model": state}, source=name)
        return model, model.cfg
    if kind == "talker":
        codec = {"config": PINS["codec_tiny"]["config"], "model": weights(PINS["codec_tiny"]["state_dict"])}
        text = TextProcessor.build(["an old checkpoint"], "chars").to_dict()
        payload = {"stage": "talker", "step": 7, "config": {"model": cfg}, "model": state, "codec": codec,
                   "text": text, "speakers": ["a", "b", "c", "d"]}
        torch.save(payload, tmp_path / "talker.pt")
        model = load_talker(tmp_path / "talker.pt").model
        return model, model.cfg
    if kind == "generator":
        torch.save({"stage": "vocoder", "step": 7, "config": {"model": cfg}, "generator": state},
                   tmp_path / "vocoder.pt")
        load_vocoder(tmp_path / "vocoder.pt")  # strict load, then weight norm folded in for inference
        return None, model_from_dict(HiFiGANConfig, cfg, source=name)
    if kind == "discriminators":  # loaded only on resume, by the training loop: strictly, as here
        model_cfg = model_from_dict(HiFiGANConfig, cfg, source=name)
        model = Discriminators(model_cfg)
        model.load_state_dict(state)
        return model, model_cfg
    raise AssertionError(f"unknown kind {kind!r} in tests/state_dicts.json")


@pytest.mark.parametrize("name", list(PINS), ids=list(PINS))
def test_an_old_checkpoint_loads_with_its_weights_and_config(name, tmp_path):
    model, cfg = load(name, tmp_path)
    if model is not None:
        assert shapes(model) == PINS[name]["state_dict"]
    assert_fields_kept(cfg, PINS[name]["config"])


# Deliberate changes of a preset's meaning since the pin, each dated in docs/DESIGN.md (none so far).
CHANGED_SINCE_PIN: dict[str, dict] = {}


@pytest.mark.parametrize("name", list(PINS), ids=list(PINS))
def test_the_config_files_still_give_the_pinned_config(name):
    """configs/*.json are unchanged in meaning: their model section is what the pinned config records, but
    for the dated changes listed in CHANGED_SINCE_PIN."""
    pin = PINS[name]
    section = {**read_json_with_base(ROOT / pin["config_file"])["model"], **pin["derived"]}
    changed = CHANGED_SINCE_PIN.get(name, {})
    assert {k: section.get(k) for k in changed} == changed
    kept = {k: v for k, v in section.items() if k not in changed}
    assert {k: pin["config"].get(k, "absent") for k in kept} == kept

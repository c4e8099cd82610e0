"""Config loading: base inheritance, strict keys, typed overrides."""

import json
from dataclasses import dataclass, field

import pytest

from muomni.config import ConfigError, DataConfig, TrainConfig, apply_overrides, config_to_dict, load_config


@dataclass
class ToyModel:
    width: int = 8
    weights: list[float] = field(default_factory=lambda: [1.0, 1.0])
    name: str = "toy"


@dataclass
class ToyRun:
    data: DataConfig = field(default_factory=DataConfig)
    model: ToyModel = field(default_factory=ToyModel)
    train: TrainConfig = field(default_factory=TrainConfig)


def _write(path, obj):
    path.write_text(json.dumps(obj))
    return path


def test_base_inheritance_lists_only_changes(tmp_path):
    _write(tmp_path / "base.json", {"model": {"width": 16, "name": "base"}, "train": {"lr": 0.01, "steps": 7}})
    (tmp_path / "v").mkdir()
    child = _write(tmp_path / "v" / "child.json", {"base": "../base.json", "model": {"width": 32}})
    cfg = load_config(child, ToyRun)
    assert (cfg.model.width, cfg.model.name, cfg.train.lr, cfg.train.steps) == (32, "base", 0.01, 7)
    assert cfg.data == DataConfig()


@pytest.mark.parametrize("obj,needle", [
    ({"model": {"widht": 3}}, "model.widht"),
    ({"trian": {}}, "trian"),
    ({"train": {"lr": "fast"}}, "train.lr"),
    ({"model": {"weights": [1, "x"]}}, "model.weights[1]"),
    ({"data": {"format": "mp3dir"}}, "data.format"),
], ids=["typo-key", "typo-section", "bad-type", "bad-list-item", "bad-choice"])
def test_bad_config_names_the_key(tmp_path, obj, needle):
    path = _write(tmp_path / "bad.json", obj)
    with pytest.raises(ConfigError) as err:
        load_config(path, ToyRun)
    assert needle in str(err.value) and str(path) in str(err.value)


def test_invalid_json_names_line(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text('{\n "train": {"lr": 1e-3,}\n}')
    with pytest.raises(ConfigError, match=r"line 2"):
        load_config(path, ToyRun)


def test_overrides_are_type_checked():
    cfg = apply_overrides(ToyRun(), ["train.lr=1e-3", "model.width=4", "model.weights=[2, 0.5]", "model.name=big"])
    assert (cfg.train.lr, cfg.model.width, cfg.model.weights, cfg.model.name) == (1e-3, 4, [2.0, 0.5], "big")
    for bad, needle in [("model.width=2.5", "model.width"), ("model.depth=2", "model.depth"),
                        ("train.steps", "section.key=value"), ("train.steps=0", "train.steps")]:
        with pytest.raises(ConfigError, match=needle.replace(".", r"\.")):
            apply_overrides(cfg, [bad])


def test_roundtrip_through_dict(tmp_path):
    cfg = apply_overrides(ToyRun(), ["model.width=5"])
    path = _write(tmp_path / "c.json", config_to_dict(cfg))
    assert load_config(path, ToyRun) == cfg

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pytest

from humanvision.config import config_to_dict, load_config, must_exist, save_config
from humanvision.errors import ConfigError


@dataclass
class Train:
    lr: float = 1e-3
    epochs: int = 10
    schedule: Literal["step", "cosine"] = "step"
    milestones: tuple[int, ...] = (170, 200)
    clip_grad: float | None = None


@dataclass
class Data:
    ann: Path | None = must_exist()
    input_size: tuple[int, int] = (192, 256)


@dataclass
class Recipe:
    name: str
    train: Train = field(default_factory=Train)
    data: Data = field(default_factory=Data)


def test_load_with_overrides_and_types(tmp_path):
    ann = tmp_path / "ann.json"
    ann.write_text("{}")
    p = tmp_path / "r.yaml"
    p.write_text(f"name: demo\ntrain:\n  lr: 1\n  milestones: [3, 4]\ndata:\n  ann: {ann}\n")
    cfg = load_config(p, Recipe, overrides=["train.epochs=3", "train.schedule=cosine", "train.clip_grad=1.5"])
    assert cfg.train.lr == 1.0 and isinstance(cfg.train.lr, float)
    # YAML 1.1 (PyYAML) reads 3e-3 as a string; a float field takes it, a str field keeps it a string
    assert load_config(p, Recipe, overrides=["train.lr=3e-3"]).train.lr == 0.003
    assert load_config(p, Recipe, overrides=["train.clip_grad=-2E+1"]).train.clip_grad == -20.0
    assert load_config(p, Recipe, overrides=["name=1e5"]).name == "1e5"
    assert cfg.train.epochs == 3 and cfg.train.schedule == "cosine" and cfg.train.milestones == (3, 4)
    assert cfg.data.ann == ann and cfg.data.input_size == (192, 256)
    save_config(cfg, tmp_path / "resolved.yaml")
    again = load_config(tmp_path / "resolved.yaml", Recipe)
    assert config_to_dict(again) == config_to_dict(cfg)


@pytest.mark.parametrize("data, overrides, message", [
    ({"name": "x", "train": {"lrr": 1}}, [], r"unknown key train.lrr; did you mean train.lr"),
    ({"name": "x"}, ["train.epochs=ten"], r"train.epochs: expected int, got str 'ten'"),
    ({"name": "x"}, ["train.lr=1e-3x"], r"train.lr: expected float, got str '1e-3x'"),
    ({"name": "x"}, ["train.schedule=linear"], r"train.schedule: expected one of \['step', 'cosine'\]"),
    ({"name": "x"}, ["data.ann=/no/such/file.json"], r"data.ann: file not found: /no/such/file.json"),
    ({"train": {}}, [], r"missing required key name"),
    ({"name": "x", "train": 3}, [], r"train: expected a section"),
    ({"name": "x"}, ["data.input_size=[1,2,3]"], r"data.input_size: expected 2 items"),
    ({"name": "x"}, ["oops"], r"must look like key=value"),
])
def test_errors_name_the_key(data, overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config(data, Recipe, overrides=overrides)


def test_missing_file_is_named(tmp_path):
    with pytest.raises(ConfigError, match="config file not found: .*nope.yaml"):
        load_config(tmp_path / "nope.yaml", Recipe)

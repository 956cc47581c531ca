from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Optional

import pytest

from medcnn.config import describe_fields, from_dict, load_config, to_dict
from medcnn.errors import ConfigError


@dataclass
class Inner:
    lr: float = 1e-3
    optimizer: Literal["adamw", "sgd"] = "adamw"


@dataclass
class Outer:
    name: str
    patch: tuple[int, int, int] = (64, 64, 64)
    labels: dict[int, str] = field(default_factory=dict)
    seed: Optional[int] = None
    train: Inner = field(default_factory=Inner, metadata={"help": "optimiser settings"})


def test_from_dict_builds_nested_and_converts():
    cfg = from_dict(Outer, {"name": "x", "patch": [32, 32, 16], "labels": {"1": "lv"}, "train": {"lr": 1}})
    assert cfg.patch == (32, 32, 16) and cfg.labels == {1: "lv"} and cfg.train.lr == 1.0
    assert isinstance(cfg.train.lr, float)
    assert to_dict(cfg)["patch"] == [32, 32, 16]


@pytest.mark.parametrize("data, fragment", [
    ({"name": "x", "bogus": 1}, "unknown key bogus"),
    ({"name": "x", "train": {"lr": "fast"}}, "train.lr: expected a number, got 'fast'"),
    ({"name": "x", "train": {"optimizer": "adam"}}, "train.optimizer: expected one of 'adamw', 'sgd'"),
    ({"name": "x", "patch": [1, 2]}, "patch: expected 3 values"),
    ({"name": "x", "seed": True}, "seed: expected"),
    ({}, "name: expected a value (required)"),
    ({"name": "x", "train": {"momentum": 0.9}}, "unknown key train.momentum"),
])
def test_strict_errors_name_key_and_expectation(data, fragment):
    with pytest.raises(ConfigError) as exc:
        from_dict(Outer, data, source="cfg.yaml")
    assert fragment in str(exc.value)
    assert str(exc.value).startswith("cfg.yaml: ")


def test_yaml_is_read_safely(tmp_path):
    marker = tmp_path / "pwned"
    p = tmp_path / "c.yaml"
    p.write_text(f"name: !!python/object/apply:os.system ['touch {marker}']\n")
    with pytest.raises(ConfigError):
        load_config(Outer, p)
    assert not marker.exists()


def test_describe_fields_lists_help():
    rows = {r["key"]: r for r in describe_fields(Outer)}
    assert rows["train"]["meaning"] == "optimiser settings"
    assert rows["name"]["default"] == "(required)"

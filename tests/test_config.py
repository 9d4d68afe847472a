import dataclasses

import pytest

from jaxhw.config import ConfigError, apply_overrides, leaf_keys, parse_value


@dataclasses.dataclass(frozen=True)
class Inner:
  lr: float = 0.1
  sizes: tuple[int, ...] = (1, 2)
  name: str | None = None
  flag: bool = False


@dataclasses.dataclass(frozen=True)
class Outer:
  inner: Inner = Inner()
  seed: int = 0


def test_overrides_nested_fields_with_types():
  c = apply_overrides(Outer(), {"inner.lr": "0.5", "inner.sizes": "3,4,5", "inner.flag": "true", "seed": "7",
                                "inner.name": "none"})
  assert c == Outer(Inner(0.5, (3, 4, 5), None, True), 7)
  assert apply_overrides(Outer(), {"inner.name": "x"}).inner.name == "x"


def test_unknown_key_lists_valid_keys():
  with pytest.raises(ConfigError, match="Valid keys: inner.lr, inner.sizes, inner.name, inner.flag, seed"):
    apply_overrides(Outer(), {"inner.lx": "1"})
  assert leaf_keys(Outer()) == ["inner.lr", "inner.sizes", "inner.name", "inner.flag", "seed"]


@pytest.mark.parametrize("key,value,expected", [("seed", "1.5", "int"), ("inner.flag", "maybe", "bool"),
                                                ("inner.lr", "fast", "float")])
def test_wrong_type_names_type(key, value, expected):
  with pytest.raises(ConfigError, match=f"expects {expected}"):
    apply_overrides(Outer(), {key: value})


def test_parse_value_literal():
  from typing import Literal
  assert parse_value("b", Literal["a", "b"]) == "b"
  with pytest.raises(ValueError):
    parse_value("c", Literal["a", "b"])

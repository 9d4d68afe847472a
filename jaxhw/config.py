"""Frozen-dataclass configs: dotted ``--set`` overrides with type checks, and JSON round trips."""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from typing import Any


class ConfigError(ValueError):
  """A config override names an unknown key or has a value of the wrong type."""


#: The preset names every study accepts: the CLI's choices and each study's `get_config` read this one tuple.
PRESETS = ("smoke", "quick", "full")


def check_preset(preset: str) -> str:
  """Returns `preset` if it is one of `PRESETS`, else raises a `ConfigError` listing them."""
  if preset not in PRESETS:
    raise ConfigError(f"unknown preset {preset!r}. Valid presets: {', '.join(PRESETS)}")
  return preset


def leaf_keys(config: Any, prefix: str = "") -> list[str]:
  """All dotted keys of the non-dataclass fields of a (nested) dataclass config."""
  keys = []
  for f in dataclasses.fields(config):
    value = getattr(config, f.name)
    if dataclasses.is_dataclass(value):
      keys += leaf_keys(value, f"{prefix}{f.name}.")
    else:
      keys.append(prefix + f.name)
  return keys


def _parse_bool(text: str) -> bool:
  low = text.strip().lower()
  if low in ("1", "true", "yes", "on"):
    return True
  if low in ("0", "false", "no", "off"):
    return False
  raise ValueError(text)


def _type_name(tp: Any) -> str:
  return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def parse_value(text: str, tp: Any) -> Any:
  """Parses `text` as type `tp` (int, float, bool, str, None-able, tuples and lists of those, Literal)."""
  origin, args = typing.get_origin(tp), typing.get_args(tp)
  if tp is Any:
    return text
  if origin in (typing.Union, types.UnionType):
    if type(None) in args and text.strip().lower() in ("none", "null", ""):
      return None
    errors = []
    for arg in args:
      if arg is type(None):
        continue
      try:
        return parse_value(text, arg)
      except ValueError as e:
        errors.append(str(e))
    raise ValueError(text)
  if origin is typing.Literal:
    for arg in args:
      if str(arg) == text:
        return arg
    raise ValueError(text)
  if origin in (tuple, list):
    items = [t for t in text.strip("()[] ").split(",") if t.strip()]
    elem = args[0] if args else str
    parsed = [parse_value(t.strip(), elem) for t in items]
    return tuple(parsed) if origin is tuple else parsed
  if tp is bool:
    return _parse_bool(text)
  if tp is int:
    return int(text)
  if tp is float:
    return float(text)
  if tp is str:
    return text
  raise ValueError(text)


def _field_types(cls: type) -> dict[str, Any]:
  try:
    return typing.get_type_hints(cls)
  except Exception:  # noqa: BLE001 - fall back to the raw annotations
    return {f.name: f.type for f in dataclasses.fields(cls)}


def apply_overrides(config: Any, overrides: dict[str, str], *, extra_keys: tuple[str, ...] = ()) -> Any:
  """Returns `config` with dotted-key overrides applied (``{"train.lr": "0.01"}``), via `dataclasses.replace`.

  Args:
    config: a frozen (nested) dataclass.
    overrides: dotted key to value text.
    extra_keys: keys handled elsewhere (e.g. ``parallel.data``), listed among the valid keys in errors.

  Returns:
    The new config (validated by the dataclasses' own ``__post_init__`` checks).

  Raises:
    ConfigError: unknown key (the message lists the valid keys) or a value that does not parse as the field's
      type (the message names the type).
  """
  valid = leaf_keys(config)
  for key, text in overrides.items():
    if key not in valid:
      raise ConfigError(f"unknown config key {key!r}. Valid keys: {', '.join([*valid, *extra_keys])}")
    config = _replace_path(config, key.split("."), text, key)
  return config


def _replace_path(node: Any, path: list[str], text: str, full_key: str) -> Any:
  name = path[0]
  if len(path) > 1:
    return dataclasses.replace(node, **{name: _replace_path(getattr(node, name), path[1:], text, full_key)})
  tp = _field_types(type(node))[name]
  try:
    value = parse_value(text, tp)
  except ValueError:
    raise ConfigError(f"config key {full_key!r} expects {_type_name(tp)}, got {text!r}.") from None
  try:
    return dataclasses.replace(node, **{name: value})
  except ValueError as e:
    raise ConfigError(f"config key {full_key!r}={text!r} is invalid: {e}") from None


def config_to_dict(config: Any) -> dict[str, Any]:
  """A JSON-able nested dict of a dataclass config."""
  return json.loads(json.dumps(dataclasses.asdict(config), default=str))

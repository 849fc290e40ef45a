"""Typed conversion of plain YAML values into the schema's dataclasses.

Values arrive as YAML loads them (dicts, lists, str, int, float, bool,
None); `merge_into` checks each against its field's type hint, converts
where YAML is loose (1e-5 read as a string, 4.0 for an int) and names the
dotted key of anything else, suggesting the closest key for a typo.
"""

from __future__ import annotations

import dataclasses
import difflib
import logging
import types
import typing
from typing import Any, Union

from unet3d.config.schema import LEGACY_IGNORED_KEYS
from unet3d.errors import ConfigError


def type_name(tp: Any) -> str:
  """A field type as the docs and errors spell it, e.g. 'list of int or
  empty'."""
  origin = typing.get_origin(tp)
  if origin in (Union, types.UnionType):
    return ' or '.join(type_name(a) for a in typing.get_args(tp))
  if origin is list:
    (item,) = typing.get_args(tp)
    return f'list of {type_name(item)}'
  if tp is type(None):
    return 'empty'
  return getattr(tp, '__name__', str(tp))


def _convert(value: Any, tp: Any, key: str) -> Any:
  """Converts a YAML value to `tp`, raising ConfigError naming `key`."""
  origin = typing.get_origin(tp)
  if origin in (Union, types.UnionType):
    args = typing.get_args(tp)
    if value is None and type(None) in args:
      return None
    errors = []
    for arg in args:
      if arg is type(None):
        continue
      try:
        return _convert(value, arg, key)
      except ConfigError as e:
        errors.append(e)
    if len(errors) == 1:  # Optional[X]: X's own message is the most precise
      raise errors[0]
    raise ConfigError(f'{key}: expected {type_name(tp)}, got {value!r}')
  if origin is list:
    (item_tp,) = typing.get_args(tp)
    if isinstance(value, tuple):
      value = list(value)
    if not isinstance(value, list):
      raise ConfigError(f'{key}: expected {type_name(tp)}, got {value!r}')
    return [_convert(v, item_tp, f'{key}[{i}]') for i, v in enumerate(value)]
  if dataclasses.is_dataclass(tp):
    if isinstance(value, tp):
      return value
    if not isinstance(value, dict):
      raise ConfigError(f'{key}: expected a mapping of {tp.__name__} keys, '
                        f'got {value!r}')
    return merge_into(tp(), value, prefix=key + '.')
  if tp is bool:
    if isinstance(value, bool):
      return value
    raise ConfigError(f'{key}: expected true or false, got {value!r}')
  if tp is int:
    if isinstance(value, int) and not isinstance(value, bool):
      return value
    if isinstance(value, float) and value.is_integer():
      return int(value)
    raise ConfigError(f'{key}: expected an integer, got {value!r}')
  if tp is float:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
      return float(value)
    if isinstance(value, str):  # YAML 1.1 reads 1e-5 as a string
      try:
        return float(value)
      except ValueError:
        pass
    raise ConfigError(f'{key}: expected a number, got {value!r}')
  if tp is str:
    if isinstance(value, str):
      return value
    raise ConfigError(f'{key}: expected a string, got {value!r}')
  if tp is Any:
    return value
  raise ConfigError(f'{key}: unsupported type {tp!r}')


def _field_types(cls: type) -> dict[str, Any]:
  return typing.get_type_hints(cls)


def _unknown_key_error(key: str, prefix: str, known: list[str]) -> ConfigError:
  guess = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
  hint = f"; did you mean '{prefix}{guess[0]}'?" if guess else ''
  return ConfigError(f"unknown config key '{prefix}{key}'{hint}")


def merge_into(obj: Any, values: dict[str, Any], prefix: str = '') -> Any:
  """Returns a copy of dataclass `obj` with `values` merged in, type-checked."""
  if values is None:
    return obj
  if not isinstance(values, dict):
    raise ConfigError(f"{prefix.rstrip('.') or 'config'}: expected a mapping, "
                      f'got {values!r}')
  hints = _field_types(type(obj))
  updates = {}
  for key, value in values.items():
    key = str(key)
    if key not in hints:
      if not prefix and key in LEGACY_IGNORED_KEYS:
        logging.getLogger('unet3d').warning(
            "config key '%s' of the TF Model Garden means nothing here; "
            'ignored', key)
        continue
      raise _unknown_key_error(key, prefix, list(hints))
    tp = hints[key]
    if dataclasses.is_dataclass(tp) and isinstance(value, dict):
      updates[key] = merge_into(getattr(obj, key), value, prefix + key + '.')
    else:
      updates[key] = _convert(value, tp, prefix + key)
  return dataclasses.replace(obj, **updates)

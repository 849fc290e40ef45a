"""`--params_override`: a YAML/JSON mapping, or dotted `a.b=c,d=e` pairs.

Either form becomes one nested mapping of plain values, ready to merge into
a config (`unet3d.config.loading.merge`).
"""

from __future__ import annotations

import copy
import re
from typing import Any, Union

from unet3d import yaml_safe
from unet3d.errors import ConfigError


def _split_top_level(text: str, sep: str = ',') -> list[str]:
  """Splits on `sep` outside brackets and quotes."""
  parts, depth, quote, current = [], 0, None, []
  for ch in text:
    if quote:
      if ch == quote:
        quote = None
    elif ch in '\'"':
      quote = ch
    elif ch in '[{(':
      depth += 1
    elif ch in ']})':
      depth -= 1
    elif ch == sep and depth == 0:
      parts.append(''.join(current))
      current = []
      continue
    current.append(ch)
  parts.append(''.join(current))
  return [p for p in (p.strip() for p in parts) if p]


def parse_override(text: Union[str, dict, None]) -> dict[str, Any]:
  """Parses `--params_override`: a YAML/JSON mapping, or `a.b=c,d=e`.

  A dotted key becomes a nested mapping. An empty value means None. A dict
  (from Python callers) is taken as already parsed.
  """
  if isinstance(text, dict):
    return copy.deepcopy(text)
  if not text or not text.strip():
    return {}
  stripped = text.strip()
  if not re.match(r'^[\w.]+\s*=', stripped):
    loaded = yaml_safe.load(stripped, '--params_override')
    if not isinstance(loaded, dict):
      raise ConfigError('--params_override: expected a mapping or a.b=c,d=e, '
                        f'got {yaml_safe.shorten(repr(text))}')
    return loaded
  items = []
  for item in _split_top_level(stripped):
    if '=' not in item:
      raise ConfigError(f'--params_override: '
                        f'{yaml_safe.shorten(repr(item))} is not key=value')
    key, raw = item.split('=', 1)
    key, raw = key.strip(), raw.strip()
    try:
      value = yaml_safe.load(raw, '--params_override') if raw else None
    except ConfigError:
      value = raw
    items.append((key, value))
  return nest_dotted(items, '--params_override')


def nest_dotted(items, source: str) -> dict[str, Any]:
  """(dotted key, value) pairs, e.g. ('model.name', 'unet3d'), as nested
  mappings; later pairs win. Errors name `source`."""
  result: dict[str, Any] = {}
  for key, value in items:
    node = result
    parts = key.split('.')
    for part in parts[:-1]:
      node = node.setdefault(part, {})
      if not isinstance(node, dict):
        raise ConfigError(f"{source}: '{key}' conflicts with an earlier "
                          'value')
    node[parts[-1]] = value
  return result

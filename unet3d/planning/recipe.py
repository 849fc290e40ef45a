"""A `PlannedRecipe` as a commented YAML recipe that `unet_main.py` loads
unchanged.

Every key is preceded by a comment line giving its reason; the header says
what the recipe was planned from, what the converter applied, and any
warning. Values are written as JSON, which YAML reads as it is.

Reasons, notes, warnings and the header embed names from dataset.json
(labels, modalities, case ids, paths): every comment line is made safe
(line breaks and other control characters escaped) so that nothing in it
can end the comment, and the rendered text is parsed back and checked to
hold exactly the plan's keys and values before it is written.
"""

from __future__ import annotations

import json
import unicodedata
from typing import Any

from unet3d import config
from unet3d.planning import planned


# Unicode categories escaped in comments: control, format, surrogate,
# private-use, unassigned, line and paragraph separators.
_UNSAFE_CATEGORIES = ('Cc', 'Cf', 'Cs', 'Co', 'Cn', 'Zl', 'Zp')


def _escape(ch: str) -> str:
  code = ord(ch)
  if code <= 0xff:
    return f'\\x{code:02x}'
  return f'\\u{code:04x}' if code <= 0xffff else f'\\U{code:08x}'


def safe_comment(text: str) -> str:
  """`text` as the body of one YAML comment line: line breaks (\\n, \\r,
  \\x85, \\u2028, \\u2029) and other control or invisible characters are
  written as escapes, so nothing can end the comment."""
  return ''.join(_escape(ch) if unicodedata.category(ch) in
                 _UNSAFE_CATEGORIES else ch for ch in str(text))


def yaml_value(value: Any) -> str:
  """`value` as a one-line YAML flow value: JSON, with every character
  outside printable ASCII escaped (YAML's \\U for those beyond the BMP,
  which JSON would split into surrogates) and floats as YAML 1.1 reads
  them (3e-05 would be a string: written 3.0e-05)."""
  if isinstance(value, float):
    text = json.dumps(value, allow_nan=False)
    return text.replace('e', '.0e') if 'e' in text and '.' not in text else (
        text)
  if isinstance(value, (list, tuple)):
    return '[' + ', '.join(yaml_value(v) for v in value) + ']'
  if isinstance(value, dict):
    return '{' + ', '.join(f'{yaml_value(str(k))}: {yaml_value(v)}'
                           for k, v in value.items()) + '}'
  text = json.dumps(value, ensure_ascii=False)
  return ''.join(ch if 0x20 <= ord(ch) < 0x7f else _escape(ch) if
                 ord(ch) > 0xff else f'\\u{ord(ch):04x}' for ch in text)


def _tree(entries: list[tuple[str, Any, str]]) -> dict:
  """Dotted keys -> nested dicts of (value, reason) leaves, in order."""
  root: dict = {}
  for key, value, reason in entries:
    node = root
    parts = key.split('.')
    for part in parts[:-1]:
      node = node.setdefault(part, {})
    node[parts[-1]] = (value, reason)
  return root


def _lines(tree: dict, indent: str = '') -> list[str]:
  out = []
  for key, node in tree.items():
    if isinstance(node, dict):
      out.append(f'{indent}{key}:')
      out.extend(_lines(node, indent + '  '))
    else:
      value, reason = node
      out.append(f'{indent}# {safe_comment(reason)}')
      out.append(f'{indent}{key}: {yaml_value(value)}')
  return out


def render(plan: planned.PlannedRecipe, header: list[str]) -> str:
  """The recipe's text: header comments, notes, warnings, then the keys."""
  lines = [f'# {safe_comment(h)}' if h else '#' for h in header]
  if plan.notes:
    lines += ['#', '# What the plan measured and chose, and the preprocessing '
              'predict replays from dataset.json:']
    lines += [f'#   - {safe_comment(n)}' for n in plan.notes]
  if plan.warnings:
    lines += ['#', '# WARNINGS:']
    lines += [f'#   - {safe_comment(w)}' for w in plan.warnings]
  lines.append('')
  lines += _lines(_tree(plan.entries))
  return '\n'.join(lines) + '\n'


def _flatten(tree: dict, prefix: str = '') -> list[tuple[str, Any]]:
  """Nested mappings -> (dotted key, leaf value) pairs, in order."""
  out = []
  for key, value in tree.items():
    if isinstance(value, dict) and value:
      out += _flatten(value, f'{prefix}{key}.')
    else:
      out.append((f'{prefix}{key}', value))
  return out


def check_rendered(text: str, plan: planned.PlannedRecipe, source: str) -> None:
  """Raises a ValueError naming `source` unless the rendered text parses to
  exactly the plan's keys with its values (a recipe whose keys differ is a
  bug, caught before the file is written)."""
  parsed = _flatten(config.parse_yaml(text, source))
  intended = [(k, json.loads(json.dumps(v))) for k, v, _ in plan.entries]
  if sorted(k for k, _ in parsed) != sorted(k for k, _ in intended):
    extra = sorted({k for k, _ in parsed} ^ {k for k, _ in intended})
    raise ValueError(f'{source}: the rendered keys differ from the plan\'s '
                     f'({", ".join(extra)[:200]})')
  wrong = [k for k, v in parsed if dict(intended)[k] != v]
  if wrong:
    raise ValueError(f'{source}: rendered values differ from the plan\'s '
                     f'({", ".join(wrong)[:200]})')


def check_loads(text: str, source: str) -> config.Config:
  """The recipe as a validated config (a plan that does not load is a bug,
  caught before the file is written)."""
  return config.build_config_from_mapping(config.parse_yaml(text, source))

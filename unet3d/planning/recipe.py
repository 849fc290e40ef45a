"""A `PlannedRecipe` as a commented YAML recipe that `unet_main.py` loads
unchanged.

Every key is preceded by a comment line giving its reason; the header says
what the recipe was planned from, what the converter applied, and any
warning. Values are written as JSON, which YAML reads as it is.
"""

from __future__ import annotations

import json
from typing import Any

from unet3d import config
from unet3d.planning import planner


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
      out.append(f'{indent}# {reason}')
      out.append(f'{indent}{key}: {json.dumps(value)}')
  return out


def render(plan: planner.PlannedRecipe, header: list[str]) -> str:
  """The recipe's text: header comments, notes, warnings, then the keys."""
  lines = [f'# {h}' if h else '#' for h in header]
  if plan.notes:
    lines += ['#', '# Preprocessing the converter applied (predict replays it '
              'from dataset.json):']
    lines += [f'#   - {n}' for n in plan.notes]
  if plan.warnings:
    lines += ['#', '# WARNINGS:']
    lines += [f'#   - {w}' for w in plan.warnings]
  lines.append('')
  lines += _lines(_tree(plan.entries))
  return '\n'.join(lines) + '\n'


def check_loads(text: str, source: str) -> config.Config:
  """The recipe as a validated config (a plan that does not load is a bug,
  caught before the file is written)."""
  return config.build_config_from_mapping(config.parse_yaml(text, source))

"""The config reference and the option tables, generated from the schema.

`docs/config_reference.md` lists every key of `unet3d/config/schema.py`'s
dataclasses with its type, default and meaning (the comment above the
field, or after it on the same line); the registries (models, losses,
optimizers, schedules) supply their names and one-line descriptions, and
the page ends with their option tables. `scripts/make_config_reference.py`
writes it, and `tests/test_config_reference.py` fails when it is out of
date.

A comment line of the form `# --- name ---` heads a block of fields and is
no field's meaning.
"""

from __future__ import annotations

import dataclasses
import inspect
import re
import typing
from typing import Any, Iterator

import yaml

from unet3d import config
from unet3d.config import coerce
from unet3d import losses
from unet3d import models
from unet3d import optimizers
from unet3d.models import blocks

_HEADING = re.compile(r'^-+\s.*\s-+$')
_FIELD = re.compile(r'^\s+(\w+)\s*:\s*[^=#]+?(?:=\s*(.*?))?\s*(?:#\s*(.*))?$')


@dataclasses.dataclass(frozen=True)
class Key:
  """One config key: dotted name, type, default and meaning."""
  name: str
  type: str
  default: str
  meaning: str


def field_comments(cls: type) -> dict[str, str]:
  """{field: its comment}: the comment lines right above the field plus a
  comment after it on the same line, joined."""
  names = {f.name for f in dataclasses.fields(cls)}
  comments: dict[str, str] = {}
  pending: list[str] = []
  for line in inspect.getsource(cls).splitlines()[1:]:
    stripped = line.strip()
    if stripped.startswith('#'):
      text = stripped[1:].strip()
      pending = [] if _HEADING.match(text) else pending + [text]
      continue
    match = _FIELD.match(line)
    if match and match.group(1) in names:
      inline = match.group(3) or ''
      comments[match.group(1)] = ' '.join(pending + [inline]).strip()
    pending = []
  return comments


def _default_text(value: Any) -> str:
  """A default as it would be written in YAML (empty for None)."""
  if value is None:
    return ''
  return yaml.safe_dump(value, default_flow_style=True,
                        width=1000).strip().removesuffix('\n...').strip()


def _field_default(f: dataclasses.Field) -> Any:
  if f.default is not dataclasses.MISSING:
    return f.default
  return f.default_factory()  # type: ignore[misc]


def registry_choices() -> dict[str, tuple[str, ...]]:
  """Keys whose values a registry owns -> the names it accepts."""
  return {
      'loss': losses.LOSS_NAMES,
      'optimizer': tuple(optimizers.OPTIMIZERS),
      'train.lr_schedule': tuple(optimizers.LR_SCHEDULES),
      'model.name': models.MODEL_NAMES,
      **{key: tuple(str(v) for v in allowed if v is not None)
         for key, allowed in models.MODEL_CHOICES.items()},
  }


def _choices(name: str) -> tuple[str, ...]:
  if name in config.CHOICES:
    return tuple(str(c) for c in config.CHOICES[name] if c is not None)
  return registry_choices().get(name, ())


def walk(cls: type = config.Config, prefix: str = '') -> Iterator[Key]:
  """Every key of the schema, groups after the flat keys of their level."""
  hints = typing.get_type_hints(cls)
  comments = field_comments(cls)
  groups = []
  for f in dataclasses.fields(cls):
    tp = hints[f.name]
    if dataclasses.is_dataclass(tp):
      groups.append((f.name, tp))
      continue
    name = prefix + f.name
    meaning = comments.get(f.name, '')
    choices = _choices(name)
    if choices and not all(c in meaning for c in choices):
      meaning = (meaning + ' ' if meaning else '') + 'One of: ' + ', '.join(
          f'`{c}`' for c in choices) + '.'
    yield Key(name, coerce.type_name(tp), _default_text(_field_default(f)),
              meaning)
  for name, tp in groups:
    yield from walk(tp, prefix + name + '.')


def group_docs() -> dict[str, str]:
  """{'' (flat keys) or group prefix: the dataclass docstring's first
  paragraph}."""
  out = {'': (config.Config.__doc__ or '').strip().split('\n\n')[0]}

  def visit(cls, prefix):
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
      tp = hints[f.name]
      if dataclasses.is_dataclass(tp):
        name = prefix + f.name
        out[name] = ' '.join((tp.__doc__ or '').strip().split('\n\n')[0]
                             .split())
        visit(tp, name + '.')

  visit(config.Config, '')
  return out


def _cell(text: str) -> str:
  return text.replace('|', '\\|').replace('\n', ' ')


def _table(header: list[str], rows: list[list[str]]) -> str:
  lines = ['| ' + ' | '.join(header) + ' |',
           '|' + '|'.join('---' for _ in header) + '|']
  lines += ['| ' + ' | '.join(_cell(c) for c in row) + ' |' for row in rows]
  return '\n'.join(lines)


def _key_rows(keys: list[Key]) -> list[list[str]]:
  return [[f'`{k.name}`', k.type, f'`{k.default}`' if k.default else '',
           k.meaning] for k in keys]


def config_reference() -> str:
  """The text of docs/config_reference.md."""
  keys = list(walk())
  docs = group_docs()
  out = ['# Config reference', '',
         'Generated from `unet3d/config/schema.py` by '
         '`python scripts/make_config_reference.py`; do not edit by hand '
         '(`tests/test_config_reference.py` fails when it is out of date).',
         '',
         'A value comes from the defaults, then `--config_file`, then '
         '`--params_override` (`a.b=c,d=e` with dotted keys), then explicit '
         'flags. An empty default means None (written as an empty YAML '
         'value). Unknown keys are an error.', '']
  sections: dict[str, list[Key]] = {}
  for key in keys:
    group = key.name.rsplit('.', 1)[0] if '.' in key.name else ''
    sections.setdefault(group, []).append(key)
  for group, group_keys in sections.items():
    title = 'Top-level keys' if not group else f'`{group}`'
    out += [f'## {title}', '']
    if docs.get(group):
      out += [docs[group], '']
    out += [_table(['key', 'type', 'default', 'meaning'],
                   _key_rows(group_keys)), '']
  out += ['## Option tables', '', option_tables()]
  return '\n'.join(out).rstrip() + '\n'


def option_tables() -> str:
  """The option tables of docs/config_reference.md: models, model options, losses, optimizers,
  learning-rate schedules, augmentations."""
  keys = {k.name: k for k in walk()}
  model_flat = ('num_channels', 'num_classes', 'num_base_filters', 'depth',
                'deconvolution', 'dropout_rate', 'num_segmentation_levels',
                'use_batch_norm')
  model_keys = [keys[n] for n in model_flat] + [
      k for n, k in keys.items() if n.startswith('model.')]
  words = {'conv': '{}', 'norm': '{} norm', 'act': '{}', 'drop': '{}'}
  letters = ', '.join(f'`{ch}` ' + words[role].format(name)
                      for ch, (role, name) in
                      blocks.LAYER_ORDER_LETTERS.items())
  parts = [
      '### Models (`model.name`)', '',
      _table(['name', 'what'], [[f'`{n}`', e.description]
                                for n, e in models.MODELS.items()]), '',
      '### Model options', '',
      _table(['key', 'type', 'default', 'meaning'], _key_rows(model_keys)),
      '', f'`model.layer_order` letters: {letters}.', '',
      '### Losses (`loss`, options under `loss_options`)', '',
      _table(['name', 'what'], [[f'`{n}`', e.description]
                                for n, e in losses.LOSSES.items()]), '',
      '### Optimizers (`optimizer`)', '',
      _table(['name', 'what'], [[f'`{n}`', e.description]
                                for n, e in optimizers.OPTIMIZERS.items()]),
      '', '### Learning-rate schedules (`train.lr_schedule`, with '
      '`train.warmup_steps`)', '',
      _table(['name', 'what'], [[f'`{n}`', e.description]
                                for n, e in optimizers.LR_SCHEDULES.items()]),
      '', '### Augmentations (`data.augmentation`)', '',
      _table(['key', 'type', 'default', 'meaning'], _key_rows(
          [k for n, k in keys.items()
           if n.startswith('data.augmentation.')])),
  ]
  return '\n'.join(parts)

"""The one YAML reader: duplicate keys, aliases and unsafe tags refused, in
one short line naming the source (and the line)."""

import tracemalloc

import pytest

from unet3d import config
from unet3d import yaml_safe
from unet3d.config import overrides
from unet3d.errors import ConfigError


def _bomb(levels=9, width=9):
  """Billion laughs: each level lists the one before `width` times."""
  lines = ['a0: &a0 ["' + 'x' * 100 + '"]']
  for i in range(1, levels):
    lines.append(f'a{i}: &a{i} [' + ', '.join([f'*a{i - 1}'] * width) + ']')
  lines.append(f'train_steps: *a{levels - 1}')
  return '\n'.join(lines) + '\n'


DUPLICATES = [
    ('train_steps: 1\ntrain_steps: 2\n', 'train_steps', 2),
    ('model:\n  name: unet3d\n  filters: [4]\n  name: unet3plus\n', 'name', 4),
    ('data: {cache: none, cache: memory}\n', 'cache', 1),
    ('"train_steps": 1\ntrain_steps: 2\n', 'train_steps', 2),
    ('model:\n  a:\n    b: 1\n    b: 2\n', 'b', 4),
    ('[{k: 1, k: 2}]\n', 'k', 1),
]


@pytest.mark.parametrize('text,key,line', DUPLICATES)
def test_duplicate_keys_are_refused_naming_source_key_and_line(text, key,
                                                               line):
  with pytest.raises(ConfigError) as e:
    yaml_safe.load(text, 'config file x.yaml')
  message = str(e.value)
  assert message.startswith('config file x.yaml: duplicate key')
  assert repr(key) in message and f'(line {line})' in message
  assert '\n' not in message


def test_parse_yaml_and_params_override_refuse_duplicates():
  with pytest.raises(ConfigError, match=r"f.yaml: duplicate key 'seed'"):
    config.parse_yaml('seed: 1\nseed: 2\n', 'f.yaml')
  with pytest.raises(ConfigError, match='--params_override: duplicate key'):
    overrides.parse_override('{seed: 1, seed: 2}')
  with pytest.raises(ConfigError, match=r'params.yaml: duplicate key'):
    config.from_yaml('model_dir: /a\nmodel_dir: /b\n', 'params.yaml')


@pytest.mark.parametrize('text', [
    _bomb(),
    _bomb(levels=30, width=2),
    'a: &x 1\nb: *x\n',
    'a: &x {k: 1}\nb:\n  <<: *x\n',
    '- &a [1]\n- *a\n',
])
def test_aliases_are_refused_before_expanding_in_a_short_line(text):
  # Bounded memory is what shows the alias was refused, not expanded: a
  # bomb expands to billions of nodes.
  tracemalloc.start()
  with pytest.raises(ConfigError) as e:
    config.parse_yaml(text, 'config file bomb.yaml')
  peak = tracemalloc.get_traced_memory()[1]
  tracemalloc.stop()
  message = str(e.value)
  assert 'aliases are not allowed' in message
  assert message.startswith('config file bomb.yaml:')
  assert len(message) < 300 and '\n' not in message
  assert peak < 20 * 2**20


def test_an_alias_bomb_in_params_override_is_refused():
  with pytest.raises(ConfigError, match='aliases are not allowed'):
    overrides.parse_override('{' + _bomb().replace('\n', ', ')[:-2] + '}')


@pytest.mark.parametrize('text', [
    '!!python/object/apply:os.system ["true"]\n',
    'a: !!python/name:os.system\n',
    'a: !!python/object:collections.OrderedDict {}\n',
])
def test_python_tags_are_refused(text):
  with pytest.raises(ConfigError, match='not valid YAML'):
    yaml_safe.load(text, 'x.yaml')


def test_errors_never_echo_a_huge_value():
  huge = 'k: "' + 'x' * 1_000_000
  with pytest.raises(ConfigError) as e:
    yaml_safe.load(huge, 'y' * 10_000)
  assert len(str(e.value)) < 500
  # 30,000 characters: 60 times the bound; more only costs parse time.
  with pytest.raises(ConfigError) as e:
    overrides.parse_override('[' + '1, ' * 10_000 + '1]')
  assert len(str(e.value)) < 500
  with pytest.raises(ConfigError) as e:
    yaml_safe.load('[' * 100_000, 'deep.yaml')
  assert len(str(e.value)) < 300


def test_plain_yaml_still_loads():
  assert yaml_safe.load('a: 1\nb: [1, 2]\nc: {d: x}\n', 's') == {
      'a': 1, 'b': [1, 2], 'c': {'d': 'x'}}
  assert overrides.parse_override('model.filters=[4, 8],seed=3') == {
      'model': {'filters': [4, 8]}, 'seed': 3}

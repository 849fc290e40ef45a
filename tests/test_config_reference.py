"""unet3d/config_reference.py: the generated reference and its option tables
are up to date, complete, and say what the schema and registries say."""

import dataclasses
import os
import subprocess
import sys
import typing

from unet3d import config
from unet3d import config_reference
from unet3d import losses
from unet3d import models
from unet3d import optimizers

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIX = 'run python scripts/make_config_reference.py'


def _read(*parts):
  with open(os.path.join(REPO, *parts)) as f:
    return f.read()


def test_docs_config_reference_is_up_to_date():
  assert _read('docs', 'config_reference.md') == (
      config_reference.config_reference()), FIX


def test_option_tables_are_in_the_reference_not_the_readme():
  assert config_reference.option_tables() in _read('docs', 'config_reference.md')
  readme = _read('README.md')
  assert '<!-- BEGIN GENERATED: option tables' not in readme
  assert 'docs/config_reference.md' in readme


def _all_keys(cls=config.Config, prefix=''):
  hints = typing.get_type_hints(cls)
  out = []
  for f in dataclasses.fields(cls):
    if dataclasses.is_dataclass(hints[f.name]):
      out += _all_keys(hints[f.name], prefix + f.name + '.')
    else:
      out.append(prefix + f.name)
  return out


def test_every_key_has_type_default_and_meaning():
  keys = {k.name: k for k in config_reference.walk()}
  assert sorted(keys) == sorted(_all_keys())
  for key in keys.values():
    assert key.type and key.meaning, key
  # Defaults are the schema's, in YAML.
  assert keys['input_image_size'].default == '[128, 128, 128]'
  assert keys['model.output_activation'].default == 'softmax'
  assert keys['dtype'].default == ''
  assert keys['data.augmentation.flip_prob'].meaning.startswith(
      'Probability of a flip')
  assert keys['dtype'].type == 'str or empty'


def test_comments_become_meanings():
  class Probe:  # pylint: disable=too-few-public-methods
    pass

  @dataclasses.dataclass
  class Example(Probe):
    """Docstring."""
    # --- a heading ---
    # First line
    # second line.
    a: int = 1
    b: str = 'x'  # inline
    # Above and
    c: float = 0.5  # inline too.
    d: bool = True

  got = config_reference.field_comments(Example)
  assert got == {'a': 'First line second line.', 'b': 'inline',
                 'c': 'Above and inline too.', 'd': ''}


def test_registry_names_appear_with_their_descriptions():
  text = config_reference.option_tables()
  for name, entry in losses.LOSSES.items():
    assert f'| `{name}` | {entry.description}' in text
  for name in list(optimizers.OPTIMIZERS) + list(optimizers.LR_SCHEDULES):
    assert f'| `{name}` |' in text
  for name in models.MODEL_NAMES:
    assert f'| `{name}` |' in text
  assert '`model.layer_order`' in text
  loss_key = next(k for k in config_reference.walk() if k.name == 'loss')
  assert all(f'`{n}`' in loss_key.meaning for n in losses.LOSS_NAMES)


def test_script_check_mode_passes_when_up_to_date():
  script = os.path.join(REPO, 'scripts', 'make_config_reference.py')
  ok = subprocess.run([sys.executable, script, '--check'],
                      capture_output=True, text=True, check=False)
  assert ok.returncode == 0, ok.stderr
  assert 'up to date' in ok.stdout

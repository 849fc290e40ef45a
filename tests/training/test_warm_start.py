"""Tests for unet3d/training/warm_start.py: init_checkpoint fine-tuning."""

import numpy as np
import pytest
import tensorflow as tf

from tests import runs
from unet3d import config
from unet3d import models
from unet3d import run_dir
from unet3d.config import ConfigError
from unet3d.training import state as state_lib
from unet3d.training import warm_start


def test_match_pairs_by_name_and_shape():
  target = {'enc0_conv1/kernel': (3, 1), 'dec0_conv1/kernel': (3, 2),
            'logits/kernel': (2, 3), 'enc1_conv1/bias': (4,)}
  source = {'enc0_conv1/kernel': (3, 1), 'dec0_conv1/kernel': (3, 2),
            'logits/kernel': (2, 4)}
  every = warm_start.match(target, source, 'all')
  assert [n for n, _ in every.restored] == ['enc0_conv1/kernel',
                                            'dec0_conv1/kernel']
  assert every.skipped == [('logits/kernel', [2, 3], 'source shape [2, 4]'),
                           ('enc1_conv1/bias', [4], 'not in the source')]
  for modules in ('encoder', 'backbone'):
    encoder = warm_start.match(target, source, modules)
    assert [n for n, _ in encoder.restored] == ['enc0_conv1/kernel']
    assert ('dec0_conv1/kernel', [3, 2], f'not in {modules}') in \
        encoder.skipped
  assert warm_start.in_modules('pool0/x', 'encoder')
  assert not warm_start.in_modules('up0/kernel', 'encoder')


def test_format_table():
  result = warm_start.Match([('enc0/kernel', [3])],
                            [('logits/kernel', [2], 'source shape [4]')])
  table = warm_start.format_table(
      result, warm_start.Source('checkpoint', '/r/ckpt-4', '/r'), 'all')
  assert table.splitlines() == [
      'init_checkpoint /r/ckpt-4 (checkpoint, modules all): restored 1 of 2 '
      'variables',
      '  restored  enc0/kernel    [3]',
      '  skipped   logits/kernel  [2]  (source shape [4])']


def _source_run(folder, **override):
  """A run folder with params.yaml and a model-only checkpoint."""
  cfg = runs.run_config(folder, folder, **override)
  run_dir.save_params(cfg)
  model = models.build_model(cfg)
  prefix = tf.train.Checkpoint(model=model).save(str(folder / 'ckpt'))
  return cfg, model, prefix


def test_find_source(tmp_path):
  _, _, prefix = _source_run(tmp_path / 'run')
  assert warm_start.find_source(prefix) == warm_start.Source(
      'checkpoint', prefix, str(tmp_path / 'run'))
  assert warm_start.find_source(str(tmp_path / 'run')).prefix == prefix
  export = tmp_path / 'saved_model' / '4'
  export.mkdir(parents=True)
  (export / 'saved_model.pb').write_bytes(b'')
  assert warm_start.find_source(str(export)) == warm_start.Source(
      'saved_model', str(export / 'variables' / 'variables'), str(export))
  with pytest.raises(ConfigError, match='init_checkpoint: .* is not a '
                     'checkpoint prefix'):
    warm_start.find_source(str(tmp_path / 'nothing'))


def _values(model, prefix):
  return {v.path: v.numpy() for v in model.variables
          if v.path.startswith(prefix)}


@pytest.mark.parametrize('modules', ['all', 'encoder'])
def test_a_new_run_starts_from_the_source(tmp_path, capsys, modules):
  _, source, prefix = _source_run(tmp_path / 'src')
  cfg = runs.run_config(tmp_path, tmp_path / 'new', num_classes=3,
                        init_checkpoint=prefix,
                        init_checkpoint_modules=modules)
  state = state_lib.build_train_state(cfg, tf.distribute.get_strategy())
  for name, value in _values(source, 'enc').items():
    np.testing.assert_array_equal(_values(state.model, 'enc')[name], value)
  decoder = _values(state.model, 'dec0_conv1/kernel')
  same = np.array_equal(decoder['dec0_conv1/kernel'],
                        _values(source, 'dec0_conv1/kernel')[
                            'dec0_conv1/kernel'])
  assert same == (modules == 'all')
  table = capsys.readouterr().out
  assert f'init_checkpoint {prefix} (checkpoint, modules {modules})' in table
  assert 'skipped   logits/kernel' in table  # 4 classes there, 3 here
  assert state.step == 0


def test_from_an_exported_saved_model(tmp_path, capsys):
  from unet3d.inference import export  # pylint: disable=g-import-not-at-top
  src_cfg, source, _ = _source_run(tmp_path / 'src')
  folder = export.export_saved_model(source, src_cfg,
                                     str(tmp_path / 'src' / 'saved_model' / '2'))
  cfg = runs.run_config(tmp_path, tmp_path / 'new', init_checkpoint=folder)
  model = models.build_model(cfg)
  result = warm_start.warm_start(cfg, model)
  assert not result.skipped
  for name, value in _values(source, '').items():
    np.testing.assert_array_equal(_values(model, name)[name], value)
  assert '(saved_model, modules all): restored' in capsys.readouterr().out


def test_resume_wins_and_nothing_matching_is_an_error(tmp_path):
  _, _, prefix = _source_run(tmp_path / 'src', num_base_filters=4,
                             num_classes=3)
  cfg = runs.run_config(tmp_path, tmp_path / 'new', init_checkpoint=prefix)
  model = models.build_model(cfg)
  with pytest.raises(ConfigError, match='init_checkpoint: .*: no variable of '
                     'the model matches'):
    warm_start.warm_start(cfg, model)
  _source_run(tmp_path / 'new')  # the run has its own checkpoint now
  assert warm_start.warm_start(cfg, model) is None
  with pytest.raises(ConfigError, match='init_checkpoint_modules: expected '
                     'one of all, encoder, backbone'):
    config.validate(config.merge(cfg, {'init_checkpoint_modules': 'x'}))

"""Tests for unet3d/training/trainer.py: train, resume, params.yaml."""

import numpy as np
import pytest
import tensorflow as tf

from tests import runs
from unet3d import config
from unet3d import distribute
from unet3d import models
from unet3d import run_dir
from unet3d.training import trainer


@pytest.fixture(scope='module')
def records(tmp_path_factory):
  root = tmp_path_factory.mktemp('records')
  return root, runs.make_records(root)


_cfg = runs.run_config


def _checkpoint_steps(model_dir):
  state = tf.train.get_checkpoint_state(str(model_dir))
  return sorted(int(p.rsplit('-', 1)[1]) for p in state.all_model_checkpoint_paths)


def test_train_then_resume_continues_from_the_saved_step(records, tmp_path):
  root, _ = records
  cfg = _cfg(root, tmp_path / 'run')
  strategy = tf.distribute.OneDeviceStrategy('/cpu:0')
  state = trainer.build_train_state(cfg, strategy)
  assert state.step == 0
  result = trainer.train(cfg, strategy, state)
  assert result['step'] == 4 and result['steps_run'] == 4
  assert np.isfinite(result['loss'])
  assert _checkpoint_steps(tmp_path / 'run') == [2, 4]
  assert run_dir.load_params(cfg.model_dir) == cfg
  trained = [w.numpy() for w in state.model.weights]

  # As a new process would: rebuild everything. The state comes back at
  # step 4 with the trained weights, not a fresh initialisation.
  restored = trainer.build_train_state(cfg, strategy)
  assert restored.step == 4
  for a, b in zip(trained, (w.numpy() for w in restored.model.weights)):
    np.testing.assert_array_equal(a, b)
  fresh = models.build_model(cfg)
  assert any(not np.array_equal(a, w.numpy())
             for a, w in zip(trained, fresh.weights) if a.size > 1)

  cfg6 = config.merge(cfg, {'train_steps': 6})
  result = trainer.train(cfg6, strategy, restored)
  assert result['step'] == 6
  assert result['steps_run'] == 2  # only the two missing steps ran
  assert _checkpoint_steps(tmp_path / 'run') == [2, 4, 6]


def test_train_when_already_done_runs_nothing(records, tmp_path):
  root, _ = records
  cfg = _cfg(root, tmp_path / 'run', train_steps=2)
  trainer.train(cfg)
  again = trainer.train(cfg)
  assert again['step'] == 2 and again['loss'] is None


def test_mirrored_training_on_two_logical_cpus(records, tmp_path):
  root, _ = records
  cfg = _cfg(root, tmp_path / 'mirrored', train_steps=2,
             distribution_strategy='mirrored')
  strategy = distribute.mirrored_strategy(['/cpu:0', '/cpu:1'])
  assert strategy.num_replicas_in_sync == 2
  result = trainer.train(cfg, strategy)
  assert result['step'] == 2 and np.isfinite(result['loss'])




def _scalar_steps(log_dir, tag):
  """{step: value} of one scalar in a TensorBoard event folder."""
  out = {}
  for path in tf.io.gfile.glob(f'{log_dir}/events.out.tfevents.*'):
    for raw in tf.data.TFRecordDataset(path):
      event = tf.compat.v1.Event.FromString(raw.numpy())
      for value in event.summary.value:
        if value.tag == tag:
          out[event.step] = float(tf.make_ndarray(value.tensor))
  return out


def test_summaries_every_n_steps_whatever_steps_per_loop(records, tmp_path):
  root, _ = records
  cfg = _cfg(root, tmp_path / 'run', train_steps=6, train_item_count=4,
             train={'steps_per_loop': 4, 'summary_every_n_steps': 2,
                    'checkpoint_every_n_steps': 100})
  trainer.train(cfg)
  log_dir = tmp_path / 'run' / trainer.TRAIN_SUMMARY_DIR
  assert sorted(_scalar_steps(log_dir, 'loss')) == [2, 4, 6]
  lr = _scalar_steps(log_dir, 'learning_rate')
  assert lr[2] == pytest.approx(1e-3 * 0.5 ** (1 / 100000), rel=1e-6)
  # 4 cases per epoch at batch 2: 2 steps per epoch.
  assert _scalar_steps(log_dir, 'epoch') == {2: 1.0, 4: 2.0, 6: 3.0}
  # Speed once per loop of steps_per_loop steps (the last loop is shorter).
  assert sorted(_scalar_steps(log_dir, 'steps_per_second')) == [4, 6]


def test_start_up_line_counts_the_split_files_training_fold(records,
                                                           tmp_path):
  split = tmp_path / 'splits.json'
  split.write_text('{"folds": [{"train": ["a", "b", "c"], "val": ["d"]}]}')
  cfg = _cfg(records[0], tmp_path / 'run',
             data={'split_file': str(split), 'fold': 0})
  model = models.build_model(cfg)
  line = trainer.describe_run(cfg, tf.distribute.get_strategy(), model,
                              False)
  assert '3 training cases (data.split_file fold 0)' in line

"""Tests for unet3d/run_dir.py and the file I/O of a run: params.yaml,
checkpoints, restoring without an optimizer, and a run folder on a
TensorFlow filesystem (ram://, as gs:// on Cloud TPU)."""

import uuid

import numpy as np
import pytest
import tensorflow as tf

from tests import runs
from unet3d import config
from unet3d import fileio
from unet3d import run_dir
from unet3d.evaluation import evaluator
from unet3d.evaluation import report as report_lib
from unet3d.training import trainer


@pytest.fixture(scope='module')
def records(tmp_path_factory):
  root = tmp_path_factory.mktemp('records')
  runs.make_records(root)
  return root


def test_params_round_trip_is_atomic(tmp_path):
  cfg = config.build_config(params_override=(
      f'model_dir={tmp_path},input_image_size=[32,32,32],'
      'model.filters=[4,8,16,32],loss_options.class_weights=[0.5,1,2]'))
  run_dir.save_params(cfg)
  assert run_dir.load_params(str(tmp_path)) == cfg
  assert [p.name for p in tmp_path.iterdir()] == [run_dir.PARAMS_FILE]
  assert run_dir.load_params(str(tmp_path / 'nothing')) is None


def test_train_and_eval_with_model_dir_in_memory_filesystem(records):
  model_dir = f'ram://run-{uuid.uuid4().hex}'
  cfg = runs.run_config(records, model_dir)
  trainer.train(cfg)
  report = evaluator.evaluate(cfg)
  # Nothing went to a local folder named 'ram:'; everything is in model_dir.
  assert run_dir.load_params(model_dir) == cfg
  assert run_dir.latest_checkpoint(model_dir).endswith('ckpt-4')
  saved = fileio.read_json(fileio.join(model_dir,
                                       report_lib.EVAL_RESULTS_FILE))
  assert saved['mean_foreground_dice'] == pytest.approx(
      report['mean_foreground_dice'])
  assert saved['step'] == 4
  assert fileio.listdir(fileio.join(model_dir, trainer.TRAIN_SUMMARY_DIR))


def test_restore_model_needs_no_optimizer_and_matches_training(records,
                                                              tmp_path):
  cfg = runs.run_config(records, tmp_path / 'run', train_steps=2)
  strategy = tf.distribute.OneDeviceStrategy('/cpu:0')
  state = trainer.build_train_state(cfg, strategy)
  trainer.train(cfg, strategy, state)
  model, step = run_dir.restore_model(cfg)
  assert step == 2
  for a, b in zip(state.model.weights, model.weights):
    np.testing.assert_array_equal(a.numpy(), b.numpy())
  with pytest.raises(config.ConfigError, match='is not a checkpoint'):
    run_dir.restore_model(cfg, checkpoint=str(tmp_path / 'nope'))

"""Tests for unet3d/evaluation/evaluator.py: crop and whole-volume eval
against numpy dice of the model's own predictions."""

import json
import os

import numpy as np
import pytest
import tensorflow as tf

from tests import runs
from unet3d import config
from unet3d import distribute
from unet3d import run_dir
from unet3d.evaluation import evaluator
from unet3d.evaluation import report as report_lib
from unet3d.inference import sliding_window
from unet3d.models import heads
from unet3d.training import trainer

SIZE = runs.SIZE
_cfg = runs.run_config
_numpy_dice = runs.numpy_dice


@pytest.fixture(scope='module')
def records(tmp_path_factory):
  root = tmp_path_factory.mktemp('records')
  return root, runs.make_records(root)


def test_evaluate_matches_numpy_dice_of_the_model_predictions(records,
                                                              tmp_path):
  root, val_volumes = records
  cfg = _cfg(root, tmp_path / 'run')
  trainer.train(cfg)
  report = evaluator.evaluate(cfg)

  model, _ = run_dir.restore_model(cfg)
  start = (24 - SIZE) // 2
  crop = slice(start, start + SIZE)
  images = np.stack([v.image[crop, crop, crop] for v in val_volumes])
  labels = np.stack([v.label[crop, crop, crop] for v in val_volumes])
  logits = heads.inference_logits(model(images, training=False))
  preds = np.argmax(np.asarray(logits), axis=-1)
  assert report['num_cases'] == 3
  names = list(report['per_class'])
  for cls in range(1, 4):
    expected = np.mean([_numpy_dice(p, t, cls) for p, t in zip(preds, labels)])
    assert report['per_class'][names[cls]]['dice'] == pytest.approx(
        expected, abs=1e-5)
  with open(os.path.join(cfg.model_dir, report_lib.EVAL_RESULTS_FILE)) as f:
    assert json.load(f)['mean_foreground_dice'] == pytest.approx(
        report['mean_foreground_dice'])


def test_eval_without_checkpoint_names_model_dir(records, tmp_path):
  root, _ = records
  cfg = _cfg(root, tmp_path / 'empty')
  with pytest.raises(config.ConfigError, match='no checkpoint in .*empty'):
    evaluator.evaluate(cfg)


def test_whole_volume_eval_uses_sliding_windows_and_surface_metrics(
    records, tmp_path):
  root, val_volumes = records
  cfg = _cfg(root, tmp_path / 'run', data={'eval_mode': 'whole_volume'},
             metrics={'surface_metrics': True, 'brats_regions': True})
  trainer.train(cfg)
  report = evaluator.evaluate(cfg)
  assert report['num_cases'] == 3 and report['eval_mode'] == 'whole_volume'

  model, _ = run_dir.restore_model(cfg)

  def predict(batch):
    return tf.nn.softmax(model(batch, training=False)).numpy()

  names = list(report['per_class'])
  preds = []
  for volume in val_volumes:
    probs = sliding_window.sliding_window_inference(
        predict, volume.image, [SIZE] * 3, overlap=0.5)
    assert probs.shape == (24, 24, 24, 4)  # the whole volume, not a crop
    preds.append(np.argmax(probs, axis=-1))
  for cls in range(1, 4):
    expected = np.mean([_numpy_dice(p, v.label, cls)
                        for p, v in zip(preds, val_volumes)])
    assert report['per_class'][names[cls]]['dice'] == pytest.approx(
        expected, abs=1e-5)
  surface = report['surface_metrics']
  assert len(surface['per_case']) == 3
  assert set(surface['mean']) == {names[1], names[2], names[3]}
  assert set(report['regions']) == {'whole_tumor', 'tumor_core',
                                    'enhancing_tumor'}


def test_two_replicas_report_what_one_device_reports(records, tmp_path):
  """Integer counts gathered from 2 logical CPUs (3 cases in batches of 2:
  the last batch gives one replica nothing) equal the 1-device counts."""
  root, _ = records
  cfg = _cfg(root, tmp_path / 'run', model={'sync_batch_norm': True})
  state = trainer.build_train_state(cfg, tf.distribute.OneDeviceStrategy(
      '/cpu:0'))
  state.manager.save(checkpoint_number=0)
  one = evaluator.evaluate(cfg, strategy=tf.distribute.OneDeviceStrategy(
      '/cpu:0'))
  two = evaluator.evaluate(cfg, strategy=distribute.mirrored_strategy(
      ['/cpu:0', '/cpu:1']))
  assert one['num_cases'] == two['num_cases'] == 3
  assert one == two

"""Tests for unet3d/training/loop.py: train, resume, evaluate, params.yaml."""

import json
import os

import numpy as np
import pytest
import tensorflow as tf

from unet3d import config
from unet3d import distribute
from unet3d import models
from unet3d.data import schema
from unet3d.data import synthetic
from unet3d.inference import sliding_window
from unet3d.training import loop

SIZE = 16


def _write_cases(path, num_cases, seed):
  rng = np.random.default_rng(seed)
  volumes = []
  for i in range(num_cases):
    image, label = synthetic.make_demo_volume(rng, (24, 24, 24))
    image = (image - image.mean()) / image.std()
    volumes.append(schema.Volume(
        image=image[..., None].astype(np.float32), label=label,
        spacing=np.array([1.0, 1.0, 1.5]),
        affine=synthetic.demo_affine((24, 24, 24)), case_id=f'case{seed}_{i}'))
  schema.write_records(path, (schema.encode_volume(v) for v in volumes))
  return volumes


@pytest.fixture(scope='module')
def records(tmp_path_factory):
  root = tmp_path_factory.mktemp('records')
  _write_cases(str(root / 'train-0.tfrecord'), 3, seed=1)
  _write_cases(str(root / 'train-1.tfrecord'), 3, seed=2)
  val = _write_cases(str(root / 'val-0.tfrecord'), 3, seed=3)
  return root, val


def _cfg(records_root, model_dir, **override):
  values = {
      'model_dir': str(model_dir),
      'training_file_pattern': str(records_root / 'train-*'),
      'eval_file_pattern': str(records_root / 'val-*'),
      'input_image_size': [SIZE] * 3,
      'num_classes': 4,
      'num_base_filters': 2,
      'depth': 2,
      'train_batch_size': 2,
      'eval_batch_size': 2,
      'train_steps': 4,
      'init_learning_rate': 1e-3,
      'loss': 'dice_ce',
      'use_index_label_in_train': True,
      'distribution_strategy': 'cpu',
      'train': {'steps_per_loop': 2, 'checkpoint_every_n_steps': 2},
      'data': {'eval_image_size': [SIZE] * 3},
  }
  cfg = config.merge(config.Config(), values)
  cfg = config.merge(cfg, override)
  config.validate(cfg)
  return cfg


def _checkpoint_steps(model_dir):
  state = tf.train.get_checkpoint_state(str(model_dir))
  return sorted(int(p.rsplit('-', 1)[1]) for p in state.all_model_checkpoint_paths)


def test_train_then_resume_continues_from_the_saved_step(records, tmp_path):
  root, _ = records
  cfg = _cfg(root, tmp_path / 'run')
  strategy = tf.distribute.OneDeviceStrategy('/cpu:0')
  state = loop.build_state(cfg, strategy)
  assert state.step == 0
  result = loop.train(cfg, strategy, state)
  assert result['step'] == 4 and result['steps_run'] == 4
  assert np.isfinite(result['loss'])
  assert _checkpoint_steps(tmp_path / 'run') == [2, 4]
  assert config.load(config.params_path(cfg.model_dir)) == cfg
  trained = [w.numpy() for w in state.model.weights]

  # As a new process would: rebuild everything. The state comes back at
  # step 4 with the trained weights, not a fresh initialisation.
  restored = loop.build_state(cfg, strategy)
  assert restored.step == 4
  for a, b in zip(trained, (w.numpy() for w in restored.model.weights)):
    np.testing.assert_array_equal(a, b)
  fresh = models.build_model(cfg)
  assert any(not np.array_equal(a, w.numpy())
             for a, w in zip(trained, fresh.weights) if a.size > 1)

  cfg6 = config.merge(cfg, {'train_steps': 6})
  result = loop.train(cfg6, strategy, restored)
  assert result['step'] == 6
  assert result['steps_run'] == 2  # only the two missing steps ran
  assert _checkpoint_steps(tmp_path / 'run') == [2, 4, 6]


def test_train_when_already_done_runs_nothing(records, tmp_path):
  root, _ = records
  cfg = _cfg(root, tmp_path / 'run', train_steps=2)
  loop.train(cfg)
  again = loop.train(cfg)
  assert again['step'] == 2 and again['loss'] is None


def _numpy_dice(pred, label, cls):
  p, t = pred == cls, label == cls
  if not p.any() and not t.any():
    return 1.0  # nnU-Net's convention, the config default
  return 2.0 * np.logical_and(p, t).sum() / (p.sum() + t.sum())


def test_evaluate_matches_numpy_dice_of_the_model_predictions(records,
                                                              tmp_path):
  root, val_volumes = records
  cfg = _cfg(root, tmp_path / 'run')
  loop.train(cfg)
  report = loop.evaluate(cfg)

  state = loop.build_state(cfg, tf.distribute.OneDeviceStrategy('/cpu:0'),
                           with_optimizer=False)
  start = (24 - SIZE) // 2
  crop = slice(start, start + SIZE)
  images = np.stack([v.image[crop, crop, crop] for v in val_volumes])
  labels = np.stack([v.label[crop, crop, crop] for v in val_volumes])
  logits = models.inference_logits(state.model(images, training=False))
  preds = np.argmax(np.asarray(logits), axis=-1)
  assert report['num_cases'] == 3
  names = list(report['per_class'])
  for cls in range(1, 4):
    expected = np.mean([_numpy_dice(p, t, cls) for p, t in zip(preds, labels)])
    assert report['per_class'][names[cls]]['dice'] == pytest.approx(
        expected, abs=1e-5)
  with open(os.path.join(cfg.model_dir, loop.EVAL_RESULTS_FILE)) as f:
    assert json.load(f)['mean_foreground_dice'] == pytest.approx(
        report['mean_foreground_dice'])


def test_eval_without_checkpoint_names_model_dir(records, tmp_path):
  root, _ = records
  cfg = _cfg(root, tmp_path / 'empty')
  with pytest.raises(config.ConfigError, match='no checkpoint in .*empty'):
    loop.evaluate(cfg)


def test_mirrored_training_on_two_logical_cpus(records, tmp_path):
  root, _ = records
  cfg = _cfg(root, tmp_path / 'mirrored', train_steps=2,
             distribution_strategy='mirrored')
  strategy = distribute.mirrored_strategy(['/cpu:0', '/cpu:1'])
  assert strategy.num_replicas_in_sync == 2
  result = loop.train(cfg, strategy)
  assert result['step'] == 2 and np.isfinite(result['loss'])


def test_whole_volume_eval_uses_sliding_windows_and_surface_metrics(
    records, tmp_path):
  root, val_volumes = records
  cfg = _cfg(root, tmp_path / 'run', data={'eval_mode': 'whole_volume'},
             metrics={'surface_metrics': True, 'brats_regions': True})
  loop.train(cfg)
  report = loop.evaluate(cfg)
  assert report['num_cases'] == 3 and report['eval_mode'] == 'whole_volume'

  state = loop.build_state(cfg, tf.distribute.OneDeviceStrategy('/cpu:0'),
                           with_optimizer=False)

  def predict(batch):
    return tf.nn.softmax(state.model(batch, training=False)).numpy()

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

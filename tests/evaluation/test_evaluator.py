"""Tests for unet3d/evaluation/evaluator.py: crop and whole-volume eval
against numpy dice of the model's own predictions."""

import csv
import json
import os
import shutil

import numpy as np
import pytest
import tensorflow as tf

from tests import runs
from unet3d import config
from unet3d import distribute
from unet3d import run_dir
from unet3d.evaluation import evaluator
from unet3d.evaluation import report as report_lib
from unet3d.evaluation import tables
from unet3d.inference import sliding_window
from unet3d.inference import whole_volume
from unet3d.models import heads
from unet3d.training import trainer

SIZE = runs.SIZE
_cfg = runs.run_config
_numpy_dice = runs.numpy_dice


@pytest.fixture(scope='module')
def records(tmp_path_factory):
  root = tmp_path_factory.mktemp('records')
  return root, runs.make_records(root)


@pytest.fixture(scope='module')
def trained_run(records, tmp_path_factory):
  """One run of the default tiny config, trained 2 steps; tests copy it."""
  root, _ = records
  model_dir = tmp_path_factory.mktemp('trained') / 'run'
  trainer.train(_cfg(root, model_dir, train_steps=2))
  return model_dir


def _copy_run(trained_run, model_dir):
  """A copy of the trained run in `model_dir` (its params name the copy)."""
  shutil.copytree(trained_run, model_dir)
  run_dir.save_params(config.merge(run_dir.load_params(str(model_dir)),
                                   {'model_dir': str(model_dir)}))


def test_evaluate_matches_numpy_dice_of_the_model_predictions(
    records, trained_run, tmp_path):
  root, val_volumes = records
  cfg = _cfg(root, tmp_path / 'run', train_steps=2)
  _copy_run(trained_run, tmp_path / 'run')
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
    records, trained_run, tmp_path):
  root, val_volumes = records
  cfg = _cfg(root, tmp_path / 'run', data={'eval_mode': 'whole_volume'},
             metrics={'surface_metrics': True, 'brats_regions': True},
             train_steps=2)
  _copy_run(trained_run, tmp_path / 'run')
  report = evaluator.evaluate(cfg)
  assert report['num_cases'] == 3 and report['eval_mode'] == 'whole_volume'

  model, _ = run_dir.restore_model(cfg)

  def predict(batch):
    return tf.nn.softmax(model(batch, training=False)).numpy()

  names = list(report['per_class'])
  preds = []
  for volume in val_volumes:
    probs = sliding_window.sliding_window_inference(
        predict, volume.image,
        sliding_window.WindowOptions([SIZE] * 3, overlap=0.5))
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
  """Cases gathered from 2 logical CPUs (3 cases in batches of 2: the last
  batch gives one replica only padding) are the 1-device cases, in order.

  Compared through each case's hard prediction: a replica predicts a batch
  of 1 where one device predicts 2, and oneDNN's kernels for the two batch
  sizes round differently, which can flip the argmax of an untrained
  model's near-tied voxels; the labels must agree on all but a few voxels.
  """
  root, _ = records
  cfg = _cfg(root, tmp_path / 'run', model={'sync_batch_norm': True},
             metrics={'surface_metrics': False, 'overlays': False})
  state = trainer.build_train_state(cfg, tf.distribute.OneDeviceStrategy(
      '/cpu:0'))
  state.manager.save(checkpoint_number=0)
  model, _ = run_dir.restore_model(cfg)
  predict_fn = whole_volume.probabilities_fn(cfg, model)

  def cases(strategy):
    return list(evaluator._crop_cases(cfg, predict_fn, strategy))  # pylint: disable=protected-access

  one = cases(tf.distribute.OneDeviceStrategy('/cpu:0'))
  two = cases(distribute.mirrored_strategy(['/cpu:0', '/cpu:1']))
  assert [c.case_id for c in one] == [c.case_id for c in two]
  assert len(one) == 3
  for a, b in zip(one, two):
    np.testing.assert_array_equal(a.label, b.label)
    assert np.mean(a.prediction != b.prediction) < 0.01
  # And the whole report runs under the mirrored strategy.
  report = evaluator.evaluate(cfg, strategy=distribute.mirrored_strategy(
      ['/cpu:0', '/cpu:1']))
  assert report['num_cases'] == 3


def test_eval_writes_case_and_summary_tables_and_overlays(records, tmp_path):
  root, val_volumes = records
  cfg = _cfg(root, tmp_path / 'run')
  from unet3d import models  # pylint: disable=g-import-not-at-top
  model = models.build_model(cfg)
  report = evaluator.evaluate(cfg, model=model, step=0)
  folder = tmp_path / 'run' / 'eval'
  assert report['report_dir'] == str(folder)
  assert 'report: ' + str(folder) in report_lib.format_report(report)
  with open(folder / 'cases.csv') as f:
    rows = list(csv.DictReader(f))
  assert tuple(rows[0]) == tables.CASE_COLUMNS
  assert 'volume_label_ml' in tables.CASE_COLUMNS
  names = list(report['per_class'])
  # 3 cases x 3 foreground classes; each row's dice is numpy's dice of the
  # model's centre-crop prediction.
  assert len(rows) == 9
  assert {r['class'] for r in rows} == set(names[1:])
  start = (24 - SIZE) // 2
  crop = slice(start, start + SIZE)
  by_id = {v.case_id: v for v in val_volumes}
  for row in rows:
    volume = by_id[row['case_id']]
    logits = heads.inference_logits(model(volume.image[None, crop, crop, crop],
                                          training=False))
    pred = np.argmax(np.asarray(logits), axis=-1)[0]
    cls = names.index(row['class'])
    assert float(row['dice']) == pytest.approx(
        _numpy_dice(pred, volume.label[crop, crop, crop], cls), abs=1e-5)
    assert int(row['label_voxels']) == int(
        (volume.label[crop, crop, crop] == cls).sum())
    assert row['hd95'] != '' and row['nsd'] != ''  # surface metrics are on
  with open(folder / 'summary.csv') as f:
    summary = {r['class']: r for r in csv.DictReader(f)}
  assert list(summary) == names[1:] + [tables.MEAN_FOREGROUND]
  for name in names[1:]:
    assert float(summary[name]['dice_mean']) == pytest.approx(
        report['per_class'][name]['dice'], abs=1e-5)
  with open(folder / 'summary.json') as f:
    content = json.load(f)
  assert content['step'] == 0 and content['num_cases'] == 3
  assert len(content['classes']) == 4
  # Every report states the conventions: the new defaults.
  from unet3d.metrics import conventions  # pylint: disable=g-import-not-at-top
  expected = conventions.Conventions().describe()
  assert report['conventions'] == content['conventions'] == expected
  with open(folder / 'conventions.json') as f:
    assert json.load(f) == expected
  with open(tmp_path / 'run' / 'eval_results.json') as f:
    assert json.load(f)['conventions'] == expected
  # Volumes: voxel counts times one voxel volume per case.
  for row in rows:
    if int(row['label_voxels']) and int(row['predicted_voxels']):
      assert float(row['volume_label_ml']) / int(row['label_voxels']) == \
          pytest.approx(float(row['volume_pred_ml']) /
                        int(row['predicted_voxels']), rel=1e-5)
  with open(folder / 'cases.json') as f:
    assert len(json.load(f)) == 9
  pngs = sorted(p.name for p in (folder / 'overlays').iterdir())
  assert pngs == sorted(f'{v.case_id}.png' for v in val_volumes)


def test_an_ensemble_averages_the_members_probabilities(records, trained_run,
                                                        tmp_path):
  root, val_volumes = records
  # Two runs of different architectures: each is restored from its own
  # params.yaml.
  first = _cfg(root, tmp_path / 'a', train_steps=2)
  second = _cfg(root, tmp_path / 'b', train_steps=2, num_base_filters=3,
                model={'normalization': 'instance'})
  _copy_run(trained_run, tmp_path / 'a')
  trainer.train(second)
  cfg = _cfg(root, tmp_path / 'a', data={'eval_mode': 'whole_volume'},
             metrics={'surface_metrics': False, 'overlays': False},
             inference={'ensemble': [str(tmp_path / 'a'),
                                     str(tmp_path / 'b')]})
  report = evaluator.evaluate(cfg)
  assert [m['step'] for m in report['ensemble']] == [2, 2]
  assert report['report_dir'] == str(tmp_path / 'a' / 'eval' / 'ensemble')
  assert os.path.isfile(os.path.join(report['report_dir'],
                                     report_lib.EVAL_RESULTS_FILE))
  assert not os.path.exists(tmp_path / 'a' / report_lib.EVAL_RESULTS_FILE)

  members = [run_dir.restore_model(c)[0] for c in (first, second)]

  def mean_probabilities(batch):
    return np.mean([tf.nn.softmax(m(batch, training=False)).numpy()
                    for m in members], axis=0)

  names = list(report['per_class'])
  preds = [np.argmax(sliding_window.sliding_window_inference(
      mean_probabilities, v.image,
      sliding_window.WindowOptions([SIZE] * 3, overlap=0.5)), -1)
           for v in val_volumes]
  for cls in range(1, 4):
    expected = np.mean([_numpy_dice(p, v.label, cls)
                        for p, v in zip(preds, val_volumes)])
    assert report['per_class'][names[cls]]['dice'] == pytest.approx(
        expected, abs=1e-5)


def test_ensemble_members_must_share_the_interface(records, trained_run,
                                                   tmp_path):
  root, _ = records
  _copy_run(trained_run, tmp_path / 'a')
  # A member with 3 classes: a's folder whose params.yaml says so (the
  # interface is checked from params.yaml, before any model is restored; the
  # 4-class records cannot train a 3-class model).
  shutil.copytree(tmp_path / 'a', tmp_path / 'b')
  run_dir.save_params(config.merge(run_dir.load_params(str(tmp_path / 'b')),
                                   {'num_classes': 3,
                                    'model_dir': str(tmp_path / 'b')}))
  cfg = _cfg(root, tmp_path / 'a', inference={
      'ensemble': [str(tmp_path / 'a'), str(tmp_path / 'b')]})
  with pytest.raises(config.ConfigError,
                     match=r'inference.ensemble: .*b has num_classes=3, the '
                     'run has 4'):
    evaluator.evaluate(cfg)
  cfg = _cfg(root, tmp_path / 'a', inference={
      'ensemble': [str(tmp_path / 'a'), str(tmp_path / 'none')]})
  with pytest.raises(config.ConfigError, match='none has no params.yaml'):
    evaluator.evaluate(cfg)


def test_eval_checks_it_can_write_its_reports_before_inference(
    records, tmp_path, monkeypatch):
  root, _ = records
  cfg = _cfg(root, tmp_path / 'run')
  os.makedirs(cfg.model_dir)
  # model_dir/eval is a regular file: the reports cannot be written there
  # (root ignores read-only permissions, not this).
  with open(os.path.join(cfg.model_dir, report_lib.EVAL_SUMMARY_DIR), 'w') as f:
    f.write('x')

  def restored(*args, **kwargs):
    raise AssertionError('the model was restored before the write check')

  monkeypatch.setattr(evaluator.ensemble, 'members', lambda *a: None)
  monkeypatch.setattr(evaluator.restore, 'restore_for_inference', restored)
  with pytest.raises(ValueError) as info:
    evaluator.evaluate(cfg)
  folder = evaluator.report_dir(cfg)
  assert str(info.value).startswith(f'model_dir: cannot write to {folder} (')
  assert '\n' not in str(info.value)

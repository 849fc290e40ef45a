"""A converted dataset resampled to a coarser spacing: the records, their
fingerprint and what predict replays."""

import json
import os
import shutil

import numpy as np
import pytest

from unet3d.input import dataset_info
from unet3d.input import schema
from unet3d.planning import fingerprint
from unet3d.preprocess import dataset_json
from unet3d.preprocess import regrid
from unet3d.preprocess import resample
from tests import demo_records


@pytest.fixture(scope='module')
def converted(tmp_path_factory):
  return demo_records.convert_demo_task(
      tmp_path_factory.mktemp('regrid'), 3, (24, 24, 20), seed=1,
      validation_fraction=0.34)


def _volumes(folder):
  info = dataset_info.read(os.path.join(folder, 'dataset.json'))
  out = {}
  for split, names in info['shards'].items():
    for name in names:
      for record in schema.read_records(os.path.join(folder, name)):
        volume = schema.decode_volume(record)
        out[volume.case_id] = volume
  return info, out


def test_the_foreground_box_is_the_labels_bounding_box(converted):
  info, volumes = _volumes(converted)
  for case in info['cases']:
    label = volumes[case['case_id']].label
    hits = np.argwhere(label > 0)
    assert case['foreground_box'] == {
        'start': hits.min(axis=0).tolist(),
        'stop': (hits.max(axis=0) + 1).tolist()}


def test_records_resampled_to_a_coarser_spacing(converted, tmp_path):
  out = str(tmp_path / 'coarse')
  stored = fingerprint.read(converted)
  target = tuple(float(s) * 2 for s in stored.stored_spacing())
  regrid.regrid_dataset(converted, out, target, 'test')
  info, volumes = _volumes(out)
  _, originals = _volumes(converted)
  assert set(volumes) == set(originals)
  for case_id, volume in volumes.items():
    original = originals[case_id]
    grid = resample.resample_grid(original.image.shape, original.spacing,
                                  target)
    # The converter's resampling of the stored arrays, as an independent
    # reference for the image; labels are one-hot linear.
    np.testing.assert_allclose(
        volume.image, resample.resample_image(original.image, grid, 3),
        atol=1e-5)
    np.testing.assert_array_equal(
        volume.label, resample.resample_label(original.label, grid, 'linear'))
    np.testing.assert_allclose(volume.spacing, target)
  # The split and the fingerprint follow the new grid.
  assert info['shards'] == dataset_info.read(
      os.path.join(converted, 'dataset.json'))['shards']
  coarse = fingerprint.read(out)
  for case in coarse.cases:
    volume = volumes[case.case_id]
    assert case.stored_shape == volume.image.shape[:3]
    counts = np.bincount(volume.label.ravel(), minlength=4)
    assert case.class_voxel_counts == {str(k): int(v)
                                       for k, v in enumerate(counts)}
    # The planner's prediction of the coarser grid is within a voxel.
    predicted = stored.at_spacing(target).cases
    match = [c for c in predicted if c.case_id == case.case_id][0]
    assert np.abs(np.subtract(match.stored_shape, case.stored_shape)).max(
        ) <= 1
  # Predict replays the converter's steps straight to the new spacing.
  plan = dataset_json.plan_from_dataset_info(info)
  assert plan.target_spacing == target
  assert info['resampled_from']['fingerprint_sha256'] == stored.sha256
  assert json.load(open(os.path.join(out, 'splits.json'))) == json.load(
      open(os.path.join(converted, 'splits.json')))


def test_an_existing_output_is_refused_without_overwrite(converted,
                                                         tmp_path):
  out = tmp_path / 'coarse'
  out.mkdir()
  (out / 'something').write_text('x')
  with pytest.raises(ValueError, match='not empty'):
    regrid.regrid_dataset(converted, str(out), (2.0, 2.0, 2.0), 'test')
  assert (out / 'something').read_text() == 'x'


def test_a_folder_without_dataset_json_is_one_line(tmp_path):
  with pytest.raises(ValueError, match='dataset.json: not found'):
    regrid.regrid_dataset(str(tmp_path), str(tmp_path / 'out'),
                          (2.0, 2.0, 2.0), 'test')


def test_training_accepts_records_the_plan_resampled(converted, tmp_path):
  from unet3d import config  # pylint: disable=g-import-not-at-top
  from unet3d.training import trainer  # pylint: disable=g-import-not-at-top
  out = str(tmp_path / 'coarse')
  regrid.regrid_dataset(converted, out, (2.0, 2.0, 2.0), 'test')
  planned = fingerprint.read(converted).sha256

  def changed(sha):
    cfg = config.build_config(params_override={
        'training_file_pattern': os.path.join(out, 'train-*.tfrecord'),
        'plan': {'fingerprint_sha256': sha}})
    return trainer.warn_if_data_changed_since_plan(cfg)

  assert not changed(planned)
  assert changed('0' * 64)


def test_the_cases_a_pattern_reads(converted):
  info = dataset_info.read(os.path.join(converted, 'dataset.json'))
  train = sum(c['split'] == 'train' for c in info['cases'])
  assert dataset_info.cases_read_by(
      os.path.join(converted, 'train-*.tfrecord')) == train
  assert dataset_info.cases_read_by(
      os.path.join(converted, '*.tfrecord')) == len(info['cases'])
  assert dataset_info.cases_read_by(
      os.path.join(converted, 'train-*.tfrecord') + ',' +
      os.path.join(converted, 'val-*.tfrecord')) == len(info['cases'])


def test_an_unreadable_shard_is_one_line_naming_it(converted, tmp_path):
  broken = tmp_path / 'broken'
  shutil.copytree(converted, broken)
  info = dataset_info.read(str(broken / 'dataset.json'))
  shard = broken / info['shards']['val'][0]
  shard.write_bytes(shard.read_bytes()[:-40])  # truncated GZIP stream
  with pytest.raises(ValueError) as raised:
    regrid.regrid_dataset(str(broken), str(tmp_path / 'out'),
                          (2.0, 2.0, 2.0), 'test')
  message = str(raised.value)
  assert message.startswith(f'{shard}: cannot read the records (')
  assert '\n' not in message
  assert not (tmp_path / 'out').exists()

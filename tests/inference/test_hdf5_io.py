"""Tests for unet3d/inference/hdf5_io.py: predict on pytorch-3dunet HDF5."""

import h5py
import numpy as np
import pytest

from tests import runs
from unet3d import config
from unet3d.inference import hdf5_io
from unet3d.inference import predict
from unet3d.inference import restore
from unet3d.inference import whole_volume
from unet3d.training import trainer


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
  """Four steps of the tiny 4-class run; its config predicts preprocessed
  volumes (predict.preprocessing none)."""
  root = tmp_path_factory.mktemp('records')
  runs.make_records(root)
  cfg = runs.run_config(root, tmp_path_factory.mktemp('model'),
                        predict={'preprocessing': 'none'})
  trainer.train(cfg)
  return cfg


def _write_h5(path, raw, **attrs):
  with h5py.File(path, 'w') as f:
    dataset = f.create_dataset('raw', data=raw)
    for k, v in attrs.items():
      dataset.attrs[k] = v


def _direct(cfg, image):
  """The model's segmentation of image [Z, Y, X, C], without predict."""
  restored = restore.restore_for_inference(cfg)
  volume = whole_volume.volume_fn(cfg, restored.probabilities)
  probabilities = volume(image)
  return (whole_volume.segmentation(probabilities, 'softmax'),
          probabilities)


def test_predict_reads_raw_and_writes_predictions_h5(trained, tmp_path):
  rng = np.random.default_rng(0)
  zyx = rng.normal(size=(20, 18, 16)).astype(np.float32)
  czyx = rng.normal(size=(1, 16, 20, 18)).astype(np.float32)
  _write_h5(tmp_path / 'a.h5', zyx, element_size_um=[2000., 1000., 1000.])
  _write_h5(tmp_path / 'b.hdf5', czyx)
  out = tmp_path / 'out'
  cfg = config.merge(trained, {'predict': {
      'input_pattern': f'{tmp_path}/*.h5,{tmp_path}/*.hdf5',
      'output_dir': str(out), 'save_probabilities': 'hdf5'}})
  report = predict.predict_files(cfg)
  assert not report['failed']
  assert sorted(p.name for p in out.iterdir()) == [
      'a_predictions.h5', 'b_predictions.h5']
  for name, image in (('a', zyx[..., None]),
                      ('b', np.moveaxis(czyx, 0, -1))):
    labels, probabilities = _direct(cfg, image)
    with h5py.File(out / f'{name}_predictions.h5', 'r') as f:
      written = f['predictions'][()]
      assert written.dtype == np.uint8
      assert written.shape == image.shape[:3]  # the input's (Z, Y, X)
      np.testing.assert_array_equal(written, labels)
      stored = f['probabilities']
      assert stored.dtype == np.float16
      assert stored.shape == (4,) + image.shape[:3]
      np.testing.assert_allclose(
          stored[()], np.moveaxis(probabilities, -1, 0), atol=1e-3)
      if name == 'a':
        np.testing.assert_allclose(f['predictions'].attrs['element_size_um'],
                                   [2000., 1000., 1000.])


def test_wrong_channels_or_rank_fail_in_one_line(trained, tmp_path):
  _write_h5(tmp_path / 'two.h5', np.zeros((2, 8, 8, 8), np.float32))
  _write_h5(tmp_path / 'flat.h5', np.zeros((8, 8), np.float32))
  cfg = config.merge(trained, {'predict': {
      'input_pattern': f'{tmp_path}/*.h5', 'output_dir': str(tmp_path / 'o')}})
  report = predict.predict_files(cfg)
  errors = sorted(f['error'] for f in report['failed'])
  assert errors[0].endswith('flat.h5: /raw must be (Z, Y, X) or (C, Z, Y, X) '
                            '(predict.hdf5_dataset), got shape (8, 8)')
  assert errors[1].endswith('two.h5: /raw has 2 channel(s), but the model '
                            'expects num_channels=1')


def test_grid_affine_uses_element_size_else_the_target_spacing():
  np.testing.assert_allclose(
      hdf5_io.grid_affine({'element_size_um': [500, 250, 250]}, None),
      np.diag([0.5, 0.25, 0.25, 1.0]))
  np.testing.assert_allclose(hdf5_io.grid_affine({}, None), np.eye(4))


def test_dataset_json_replays_the_converters_steps_on_the_same_grid(
    tmp_path):
  """The HDF5 converter's dataset.json: the volume is z-scored as the
  records were, and stays on its (Z, Y, X) grid (no spacing known)."""
  from unet3d.preprocess import convert  # pylint: disable=g-import-not-at-top
  from unet3d.preprocess import hdf5  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)
  for i in range(3):
    with h5py.File(tmp_path / f'c{i}.h5', 'w') as f:
      f['raw'] = rng.normal(size=(12, 14, 16)).astype(np.float32) + 5
      f['label'] = (rng.random((12, 14, 16)) > 0.5).astype(np.uint8)
  info = convert.convert(hdf5.source(str(tmp_path), class_names=['a', 'b']),
                         str(tmp_path / 'records'))
  cfg = config.merge(config.Config(), {'num_classes': 2})
  seen = []

  def volume(image):
    seen.append(image)
    return np.stack([np.full(image.shape[:3], 0.3),
                     np.full(image.shape[:3], 0.7)], -1)

  out = predict.predict_hdf5_file(str(tmp_path / 'c0.h5'),
                                  str(tmp_path / 'c0_predictions.h5'), volume,
                                  cfg, info, with_probabilities=True)
  assert seen[0].shape == (12, 14, 16, 1)
  assert abs(seen[0].mean()) < 1e-5 and abs(seen[0].std() - 1) < 1e-4
  with h5py.File(out, 'r') as f:
    np.testing.assert_array_equal(f['predictions'][()], 1)
    assert f['probabilities'].shape == (2, 12, 14, 16)

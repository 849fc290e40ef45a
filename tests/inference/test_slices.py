"""Tests for unet3d/inference/slices.py: 2D models predict volumes slice by
slice."""

import nibabel as nib
import numpy as np
import pytest

from unet3d import config
from unet3d import models
from unet3d.inference import predict
from unet3d.inference import slices
from unet3d.inference import whole_volume
from unet3d.preprocess import io

SIZE = 16


def _cfg(**values):
  cfg = config.merge(config.Config(), {
      'model': {'spatial_dims': 2}, 'num_classes': 3, 'num_channels': 3,
      'num_base_filters': 2, 'depth': 2, 'input_image_size': [SIZE, SIZE],
      'predict_batch_size': 2, 'distribution_strategy': 'cpu',
      'predict': {'preprocessing': 'none'}})
  cfg = config.merge(cfg, values)
  config.validate(cfg)
  return cfg


@pytest.fixture(scope='module')
def model():
  return models.build_model(_cfg())


def _write_volume(path, shape):
  image = np.random.default_rng(0).normal(size=shape).astype(np.float32)
  affine = np.diag([0.8, 0.9, 2.5, 1.0])
  affine[:3, 3] = [-5.0, 3.0, 10.0]
  io.save_nifti(str(path), image, affine)
  return image


def test_each_slice_is_the_models_prediction_with_its_neighbours(
    model, tmp_path):
  cfg = _cfg()
  image = _write_volume(tmp_path / 'ct.nii.gz', (SIZE, SIZE, 5))
  out = predict.predict_file(
      str(tmp_path / 'ct.nii.gz'), str(tmp_path / 'ct_seg.nii.gz'),
      whole_volume.probabilities_fn(cfg, [model]), cfg, None)
  written = nib.load(out)
  assert written.shape == image.shape
  np.testing.assert_allclose(written.affine,
                             nib.load(tmp_path / 'ct.nii.gz').affine)
  segmentation = np.asarray(written.dataobj)
  for k in range(image.shape[2]):
    below, above = max(k - 1, 0), min(k + 1, image.shape[2] - 1)
    one = np.stack([image[..., below], image[..., k], image[..., above]], -1)
    expected = np.argmax(model(one[None], training=False)[0].numpy(), -1)
    np.testing.assert_array_equal(segmentation[..., k], expected)


def test_slices_are_resized_to_the_model_and_back(model, tmp_path):
  cfg = _cfg()
  shape = (12, 20, 3)
  _write_volume(tmp_path / 'ct.nii', shape)
  seen = []

  def predict_fn(batch):  # background left of the slice's centre column
    seen.append(batch.shape)
    probabilities = np.zeros(batch.shape[:3] + (3,), np.float32)
    probabilities[:, :, :SIZE // 2, 0] = 1
    probabilities[:, :, SIZE // 2:, 1] = 1
    return probabilities

  out = predict.predict_file(str(tmp_path / 'ct.nii'),
                             str(tmp_path / 'seg.nii.gz'), predict_fn, cfg,
                             None)
  segmentation = np.asarray(nib.load(out).dataobj)
  assert segmentation.shape == shape
  assert seen == [(2, SIZE, SIZE, 3)] * 2  # 3 slices, 2 a call, padded
  np.testing.assert_array_equal(segmentation[:, :10], 0)
  np.testing.assert_array_equal(segmentation[:, 10:], 1)


def test_volume_channels_follow_the_recorded_context():
  info = {'preprocessing': {'slices': {'context_slices': 2,
                                       'in_plane_size': 32}}}
  cfg = _cfg(num_channels=5)
  assert slices.volume_channels(cfg, info) == 1
  assert slices.slice_size(cfg, info) == (32, 32)
  assert slices.volume_channels(_cfg(num_channels=1)) == 1
  assert slices.volume_channels(_cfg(model={'spatial_dims': 3},
                                     input_image_size=[8, 8, 8])) == 3

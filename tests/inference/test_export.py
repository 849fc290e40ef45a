"""Tests for unet3d/inference/export.py: SavedModel round trip."""

import os

import numpy as np
import pytest
import tensorflow as tf

from unet3d import config
from unet3d import models
from unet3d.inference import export


def _cfg(tmp_path, **model):
  cfg = config.merge(config.Config(), {
      'model_dir': str(tmp_path), 'num_classes': 3, 'num_base_filters': 2,
      'depth': 2, 'input_image_size': [16, 16, 16], 'model': model})
  config.validate(cfg)
  return cfg


@pytest.mark.parametrize('activation', ['softmax', 'sigmoid'])
def test_saved_model_reproduces_the_keras_model(tmp_path, activation):
  cfg = _cfg(tmp_path, output_activation=activation)
  model = models.build_model(cfg)
  path = export.export_saved_model(model, cfg, str(tmp_path / 'export'))
  assert os.path.isfile(os.path.join(path, 'params.yaml'))
  assert not os.path.exists(path + '.tmp-incomplete')
  serve = tf.saved_model.load(path).signatures['serving_default']
  # Any size divisible by the stride, not only the training size.
  image = np.random.default_rng(0).normal(size=(2, 8, 12, 16, 1)).astype(
      np.float32)
  out = serve(image=tf.constant(image))
  logits = model(image, training=False).numpy()
  if activation == 'softmax':
    e = np.exp(logits - logits.max(-1, keepdims=True))
    np.testing.assert_allclose(out['probabilities'].numpy(),
                               e / e.sum(-1, keepdims=True), atol=1e-5)
    np.testing.assert_array_equal(out['classes'].numpy(), logits.argmax(-1))
  else:
    np.testing.assert_allclose(out['probabilities'].numpy(),
                               1 / (1 + np.exp(-logits)), atol=1e-5)
    np.testing.assert_array_equal(out['masks'].numpy(), logits > 0)


def test_export_refuses_an_existing_folder_and_needs_a_checkpoint(tmp_path):
  cfg = _cfg(tmp_path)
  model = models.build_model(cfg)
  (tmp_path / 'export').mkdir()
  with pytest.raises(ValueError, match='export folder exists'):
    export.export_saved_model(model, cfg, str(tmp_path / 'export'))
  with pytest.raises(config.ConfigError, match='no checkpoint'):
    export.export_model(cfg)

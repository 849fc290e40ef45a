"""Tests for unet3d/inference/whole_volume.py: which head inference uses,
CGM gating, ensemble means, and the window settings from the config."""

import dataclasses

import numpy as np
import pytest
import tensorflow as tf

from tests.models import helpers
from unet3d import models
from unet3d.config import InferenceConfig
from unet3d.inference import sliding_window
from unet3d.inference import whole_volume
from unet3d.models import heads


def _softmax(x):
  e = np.exp(x - x.max(-1, keepdims=True))
  return e / e.sum(-1, keepdims=True)


def test_deep_supervision_cgm_models_use_the_gated_full_resolution_head():
  cfg = helpers.tiny_config('unet3plus_deepsup_cgm')
  tf.keras.utils.set_random_seed(0)
  model = models.build_model(cfg)
  batch = np.random.default_rng(0).normal(size=(4, 16, 16, 16, 1)).astype(
      np.float32)
  outputs = model(batch, training=False)
  assert outputs[heads.DEEP_SUPERVISION]  # the heads inference must skip
  present = np.argmax(outputs[heads.CLASSIFICATION].numpy(), -1) > 0
  logits = outputs[heads.LOGITS].numpy()
  expected = np.where(present[:, None, None, None, None], _softmax(logits),
                      np.eye(3)[0])
  got = whole_volume.probabilities_fn(cfg, model)(batch).numpy()
  assert got.shape == (4, 16, 16, 16, 3)
  np.testing.assert_allclose(got, expected, atol=1e-6)


def test_an_ensemble_averages_probabilities():
  cfg = helpers.tiny_config()
  tf.keras.utils.set_random_seed(1)
  members = [models.build_model(cfg) for _ in range(3)]
  batch = np.random.default_rng(1).normal(size=(2, 16, 16, 16, 1)).astype(
      np.float32)
  expected = np.mean([_softmax(m(batch, training=False).numpy())
                      for m in members], axis=0)
  got = whole_volume.probabilities_fn(cfg, members)(batch).numpy()
  np.testing.assert_allclose(got, expected, atol=1e-6)


def test_volume_fn_uses_the_configured_window():
  cfg = dataclasses.replace(
      helpers.tiny_config(), predict_batch_size=3,
      inference=InferenceConfig(overlap=0.25, weighting='constant',
                                mirror_axes=[1]))
  tf.keras.utils.set_random_seed(2)
  model = models.build_model(cfg)
  predict_fn = whole_volume.probabilities_fn(cfg, model)
  image = np.random.default_rng(2).normal(size=(20, 30, 17, 1)).astype(
      np.float32)
  expected = sliding_window.sliding_window_inference(
      lambda b: predict_fn(b).numpy(), image, sliding_window.WindowOptions(
          [16] * 3, overlap=0.25, weighting='constant',
          mirror_axes=[1])).numpy()
  volume = whole_volume.volume_fn(cfg, predict_fn)
  np.testing.assert_allclose(volume(image), expected, atol=1e-6)
  labels = whole_volume.segmentation(expected, 'softmax')
  np.testing.assert_array_equal(
      whole_volume.segmentation_tensor(tf.constant(expected), 'softmax'),
      labels)


def test_window_options_of_a_config_are_one_frozen_value():
  cfg = dataclasses.replace(
      helpers.tiny_config(), predict_batch_size=3,
      inference=InferenceConfig(overlap=0.25, weighting='constant',
                                mirror_axes=[2, 0]))
  options = sliding_window.WindowOptions.from_config(cfg)
  assert options == sliding_window.WindowOptions(
      tuple(cfg.input_image_size), overlap=0.25, batch_size=3,
      weighting='constant', mirror_axes=(2, 0))
  assert isinstance(options.patch_size, tuple) and hash(options)
  with pytest.raises(dataclasses.FrozenInstanceError):
    options.overlap = 0.5

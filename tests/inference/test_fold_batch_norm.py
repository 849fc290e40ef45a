"""Tests for unet3d/inference/fold_batch_norm.py: the folded clone gives the
model's inference outputs (within 1e-5) for the U-Net and UNet 3+ with
trained-looking batch-norm statistics, has no batch norm left after a conv,
and leaves models without foldable pairs alone."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from unet3d import config
from unet3d import models
from unet3d.inference import fold_batch_norm as fb
from unet3d.inference import whole_volume


def _model(name, size=16, **overrides):
  cfg = config.build_config(None, {
      'input_image_size': [size] * 3, 'num_channels': 2, 'num_classes': 3,
      'num_base_filters': 4, 'depth': 3, 'model': {'name': name},
      **overrides})
  return cfg, models.build_model(cfg)


def _randomise_statistics(model, seed=0):
  """Batch-norm weights and moving statistics far from their defaults."""
  rng = np.random.default_rng(seed)
  for layer in model.layers:
    if isinstance(layer, keras.layers.BatchNormalization):
      c = layer.moving_mean.shape[0]
      layer.gamma.assign(rng.uniform(0.5, 1.5, c))
      layer.beta.assign(rng.normal(size=c) * 0.2)
      layer.moving_mean.assign(rng.normal(size=c) * 0.3)
      layer.moving_variance.assign(rng.uniform(0.3, 3.0, c))


def _norms(model):
  return [l for l in model.layers
          if isinstance(l, keras.layers.BatchNormalization)]


@pytest.mark.parametrize('name', ['unet3d', 'unet3plus_deepsup_cgm'])
def test_folded_clone_gives_the_same_outputs(name):
  _, model = _model(name)
  _randomise_statistics(model)
  folded = fb.fold_batch_norm(model)
  assert folded is not model
  assert len(_norms(folded)) < len(_norms(model))
  assert any(isinstance(l, fb.FoldedConv) for l in folded.layers)
  x = np.random.default_rng(1).normal(size=(2, 16, 16, 16, 2)).astype(
      np.float32)
  expected = tf.nest.flatten(model(x, training=False))
  got = tf.nest.flatten(folded(x, training=False))
  assert len(got) == len(expected)
  for e, g in zip(expected, got):
    np.testing.assert_allclose(g.numpy(), e.numpy(), atol=1e-5, rtol=1e-5)


def test_unet_folds_every_batch_norm():
  _, model = _model('unet3d')
  folded = fb.fold_batch_norm(model)
  assert _norms(folded) == []
  assert (sum(isinstance(l, fb.FoldedConv) for l in folded.layers) ==
          len(_norms(model)))


def test_folded_weights_by_hand():
  inputs = keras.Input((4, 4, 4, 1))
  conv = keras.layers.Conv3D(2, 1, use_bias=True)
  norm = keras.layers.BatchNormalization(epsilon=0.5)
  model = keras.Model(inputs, norm(conv(inputs)))
  conv.kernel.assign(np.array([2.0, -1.0], np.float32).reshape(1, 1, 1, 1, 2))
  conv.bias.assign([1.0, 0.0])
  norm.gamma.assign([3.0, 1.0])
  norm.beta.assign([0.5, -0.5])
  norm.moving_mean.assign([1.0, 2.0])
  norm.moving_variance.assign([3.5, 1.5])  # + eps: 4 and 2
  kernel, bias = fb.folded_weights(conv, norm)
  np.testing.assert_allclose(kernel.reshape(2), [2.0 * 1.5, -1.0 / 2**0.5],
                             rtol=1e-6)
  np.testing.assert_allclose(bias, [0.5, -2.0 / 2**0.5 - 0.5], rtol=1e-6)


def test_nothing_to_fold_returns_the_model():
  inputs = keras.Input((4, 4, 4, 1))
  model = keras.Model(inputs, keras.layers.Conv3D(2, 1)(inputs))
  assert fb.fold_batch_norm(model) is model


def test_probabilities_fn_folds_on_request():
  cfg, model = _model('unet3d')
  _randomise_statistics(model, seed=2)
  x = np.random.default_rng(3).normal(size=(1, 16, 16, 16, 2)).astype(
      np.float32)
  plain = whole_volume.probabilities_fn(cfg, model)(x)
  folded = whole_volume.probabilities_fn(cfg, model, fold_batch_norm=True)(x)
  np.testing.assert_allclose(folded.numpy(), plain.numpy(), atol=1e-5)

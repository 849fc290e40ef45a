"""Tests for unet3d/models/unet.py: the Model Garden U-Net and its variants."""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from tests.models.helpers import tiny_config
from unet3d.config import Config, ConfigError
from unet3d import models


def unet_counts(cin, pairs, classes, rank, norm_params=4, deconv=True,
                residual=False, strided=False):
  """Closed form (kernels, all parameters) of the U-Net topology.

  pairs: (first, second) conv filters per encoder level. norm_params: weights
  per channel of each normalisation (BN 4, GN 2, none 0).
  """
  kernels = biases = norm_ch = 0
  k = 3**rank

  def conv(ci, co, size=k):
    nonlocal kernels, biases
    kernels += size * ci * co
    biases += co

  def unit(ci, a, b, project):
    nonlocal norm_ch
    conv(ci, a)
    conv(a, b)
    norm_ch += a + b
    if residual and project:
      conv(ci, b, 1)
      norm_ch += b

  c = cin
  for level, (a, b) in enumerate(pairs):
    unit(c, a, b, c != b or (strided and level > 0))
    c = b
  for level in reversed(range(len(pairs) - 1)):
    skip = pairs[level][1]
    if deconv:
      conv(c, c, 2**rank)
    unit(c + skip, skip, skip, True)
    c = skip
  conv(c, classes, 1)
  return kernels, kernels + biases + norm_params * norm_ch


def _kernel_count(model):
  return sum(math.prod(v.shape) for v in model.weights
             if v.name == 'kernel')


def test_default_model_garden_parameter_count_pin():
  model = models.build_model(Config())
  pairs = [(32 * 2**d, 64 * 2**d) for d in range(4)]
  kernels, total = unet_counts(1, pairs, 3, rank=3)
  assert _kernel_count(model) == kernels
  assert round(kernels / 1e6, 2) == 19.07
  assert model.count_params() == total


def test_variant_parameter_count_2d_residual_strided_capped():
  cfg = tiny_config(rank=2, depth=4, filters=[2, 4, 8, 8], max_filters=6,
                    residual=True, downsampling='strided_conv',
                    normalization='group', num_groups=2, num_channels=3)
  model = models.build_model(cfg)
  pairs = [(2, 2), (4, 4), (6, 6), (6, 6)]
  kernels, total = unet_counts(3, pairs, 3, rank=2, norm_params=2,
                               residual=True, strided=True)
  assert _kernel_count(model) == kernels
  assert model.count_params() == total
  assert not [l for l in model.layers if 'pool' in l.name]
  assert model.get_layer('enc1_conv1').strides == (2, 2)
  assert model.get_layer('enc0_conv1').strides == (1, 1)


def test_upsampling_without_deconvolution():
  cfg = tiny_config(deconvolution=False, use_batch_norm=False)
  model = models.build_model(cfg)
  assert not [l for l in model.layers
              if isinstance(l, keras.layers.Conv3DTranspose)]
  _, total = unet_counts(1, [(2, 4), (4, 8), (8, 16)], 3, rank=3,
                         norm_params=0, deconv=False)
  assert model.count_params() == total


def test_any_size_divisible_by_the_stride_works():
  model = models.build_model(tiny_config(size=16))  # depth 3: stride 4
  out = model(np.zeros((2, 8, 12, 20, 1), np.float32))
  assert out.shape == (2, 8, 12, 20, 3)
  assert out.dtype == tf.float32


def test_deep_supervision_heads_are_upsampled_coarse_heads():
  cfg = tiny_config(rank=2, size=16, num_segmentation_levels=3)
  model = models.build_model(cfg)
  x = np.random.default_rng(0).normal(size=(2, 16, 16, 1)).astype(np.float32)
  out = model(x)
  assert set(out) == {'logits', 'deep_supervision'}
  assert len(out['deep_supervision']) == 2
  for level, side in enumerate(out['deep_supervision'], start=1):
    coarse = keras.Model(model.input,
                         model.get_layer(f'logits_level{level}').output)(x)
    assert coarse.shape == (2, 16 // 2**level, 16 // 2**level, 3)
    want = tf.image.resize(coarse, (16, 16), method='bilinear')
    np.testing.assert_allclose(side, want, atol=1e-5)


def test_dropout_only_in_training():
  cfg = tiny_config(dropout_rate=0.5, use_batch_norm=False)
  model = models.build_model(cfg)
  assert [l.name for l in model.layers if 'dropout' in l.name] == [
      'enc0_dropout', 'enc1_dropout', 'enc2_dropout']
  x = np.random.default_rng(1).normal(size=(1, 16, 16, 16, 1))
  x = x.astype(np.float32)
  np.testing.assert_array_equal(model(x, training=False),
                                model(x, training=False))
  assert not np.allclose(model(x, training=True), model(x, training=False))
  plain = models.build_model(tiny_config(dropout_rate=0.0))
  assert not [l for l in plain.layers if 'dropout' in l.name]


@pytest.mark.parametrize('overrides,key', [
    (dict(filters=[4, 8]), 'model.filters'),
    (dict(num_segmentation_levels=4), 'num_segmentation_levels'),
    (dict(max_filters=0), 'model.max_filters'),
])
def test_bad_unet_configs(overrides, key):
  with pytest.raises(ConfigError, match=key) as info:
    models.build_model(tiny_config(**overrides))
  assert '\n' not in str(info.value)

"""Tests for unet3d/models/unet.py: the Model Garden U-Net and its variants."""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from tests.models.helpers import tiny_config, upsample_numpy
from unet3d.config import Config, ConfigError
from unet3d import models


def unet_counts(cin, pairs, classes, rank, norm_params=4, deconv=True,
                residual=False, strided=False, kernel_sizes=None,
                pool_sizes=None):
  """Closed form (kernels, all parameters) of the U-Net topology.

  pairs: (first, second) conv filters per encoder level. norm_params: weights
  per channel of each normalisation (BN 4, GN 2, none 0). kernel_sizes: the
  per-axis conv kernel of each level (3 on every axis when None);
  pool_sizes: the per-axis factor of each level transition, also the
  transposed conv's kernel (2 when None).
  """
  kernels = biases = norm_ch = 0
  levels = len(pairs)
  volume = [3**rank] * levels if kernel_sizes is None else [
      math.prod(k) for k in kernel_sizes]
  up_volume = [2**rank] * (levels - 1) if pool_sizes is None else [
      math.prod(p) for p in pool_sizes]

  def conv(ci, co, size):
    nonlocal kernels, biases
    kernels += size * ci * co
    biases += co

  def unit(ci, a, b, project, size):
    nonlocal norm_ch
    conv(ci, a, size)
    conv(a, b, size)
    norm_ch += a + b
    if residual and project:
      conv(ci, b, 1)
      norm_ch += b

  c = cin
  for level, (a, b) in enumerate(pairs):
    unit(c, a, b, c != b or (strided and level > 0), volume[level])
    c = b
  for level in reversed(range(levels - 1)):
    skip = pairs[level][1]
    if deconv:
      conv(c, c, up_volume[level])
    unit(c + skip, skip, skip, True, volume[level])
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


# Anisotropic levels: level 0 -> 1 pools only in-plane (axes 0, 1), level
# 1 -> 2 every axis; level 0 convs skip axis 2, level 2 convs axis 0.
POOLS = [[2, 2, 1], [2, 2, 2]]
KERNELS = [[3, 3, 1], [3, 3, 3], [1, 3, 3]]


def _anisotropic(**overrides):
  return tiny_config(pool_sizes=POOLS, kernel_sizes=KERNELS,
                     input_image_size=[16, 16, 8], **overrides)


def _spatial_shape(model, layer, x):
  return tuple(keras.Model(model.input, model.get_layer(layer).output)(x)
               .shape[1:-1])


def test_anisotropic_pools_and_kernels():
  model = models.build_model(_anisotropic())
  x = np.random.default_rng(2).normal(size=(1, 16, 16, 8, 1))
  x = x.astype(np.float32)
  assert model(x).shape == (1, 16, 16, 8, 3)
  # 16 / (2 * 2), 16 / (2 * 2), 8 / (1 * 2).
  assert _spatial_shape(model, 'enc1_act2', x) == (8, 8, 8)
  assert _spatial_shape(model, 'enc2_act2', x) == (4, 4, 4)
  assert model.get_layer('pool0').pool_size == (2, 2, 1)
  assert model.get_layer('pool1').pool_size == (2, 2, 2)
  for level, kernel in enumerate(KERNELS):
    names = [f'enc{level}_conv1', f'enc{level}_conv2']
    if level < 2:
      names += [f'dec{level}_conv1', f'dec{level}_conv2']
    for name in names:
      assert model.get_layer(name).kernel.shape[:3] == tuple(kernel), name
  # Transposed convs: kernel = strides = the transition's pool factors.
  assert model.get_layer('up0').kernel.shape[:3] == (2, 2, 1)
  assert model.get_layer('up0').strides == (2, 2, 1)
  assert model.get_layer('up1').kernel.shape[:3] == (2, 2, 2)
  assert model.get_layer('logits').kernel.shape[:3] == (1, 1, 1)
  kernels, total = unet_counts(1, [(2, 4), (4, 8), (8, 16)], 3, rank=3,
                               kernel_sizes=KERNELS, pool_sizes=POOLS)
  assert _kernel_count(model) == kernels
  assert model.count_params() == total


def test_anisotropic_strided_residual_downsampling():
  model = models.build_model(_anisotropic(downsampling='strided_conv',
                                          residual=True))
  x = np.zeros((1, 16, 16, 8, 1), np.float32)
  assert model(x).shape == (1, 16, 16, 8, 3)
  assert not [l for l in model.layers if 'pool' in l.name]
  assert model.get_layer('enc1_conv1').strides == (2, 2, 1)
  assert model.get_layer('enc1_proj').strides == (2, 2, 1)
  assert model.get_layer('enc2_conv1').strides == (2, 2, 2)
  assert model.get_layer('enc2_conv1').kernel.shape[:3] == (1, 3, 3)
  assert _spatial_shape(model, 'enc2_act2', x) == (4, 4, 4)
  _, total = unet_counts(1, [(2, 4), (4, 8), (8, 16)], 3, rank=3,
                         residual=True, strided=True, kernel_sizes=KERNELS,
                         pool_sizes=POOLS)
  assert model.count_params() == total


def test_anisotropic_nearest_upsampling():
  model = models.build_model(_anisotropic(deconvolution=False))
  x = np.random.default_rng(3).normal(size=(1, 16, 16, 8, 1))
  x = x.astype(np.float32)
  assert model(x).shape == (1, 16, 16, 8, 3)
  assert model.get_layer('up0').size == (2, 2, 1)
  # Nearest up-sampling repeats each bottleneck voxel 2 x 2 x 2 times.
  coarse = np.asarray(keras.Model(model.input,
                                  model.get_layer('dec1_act2').output)(x))
  up = np.asarray(keras.Model(model.input, model.get_layer('up0').output)(x))
  np.testing.assert_array_equal(
      up, coarse.repeat(2, axis=1).repeat(2, axis=2))
  _, total = unet_counts(1, [(2, 4), (4, 8), (8, 16)], 3, rank=3,
                         deconv=False, kernel_sizes=KERNELS, pool_sizes=POOLS)
  assert model.count_params() == total


def test_anisotropic_deep_supervision_heads_are_full_size():
  model = models.build_model(_anisotropic(num_segmentation_levels=2))
  x = np.random.default_rng(4).normal(size=(1, 16, 16, 8, 1))
  x = x.astype(np.float32)
  out = model(x)
  assert out['logits'].shape == (1, 16, 16, 8, 3)
  (side,) = out['deep_supervision']
  assert side.shape == (1, 16, 16, 8, 3)
  coarse = np.asarray(keras.Model(
      model.input, model.get_layer('logits_level1').output)(x))
  assert coarse.shape == (1, 8, 8, 8, 3)
  assert model.get_layer('logits_level1_up').factor == (2, 2, 1)
  np.testing.assert_allclose(side, upsample_numpy(coarse, (2, 2, 1)),
                             atol=1e-5)


def test_recompute_grad_with_anisotropic_kernels_gives_the_same_output():
  plain = models.build_model(_anisotropic(residual=True))
  recomputed = models.build_model(_anisotropic(residual=True,
                                               recompute_grad=True))
  assert recomputed.get_layer('enc0').unit['conv1'].kernel_size == (3, 3, 1)
  assert recomputed.count_params() == plain.count_params()

  def key(v):
    return v.path.split('/')[-2] + '/' + v.name
  by_name = {key(v): v for v in plain.weights}
  assert len(by_name) == len(recomputed.weights)
  rng = np.random.default_rng(5)
  for v in recomputed.weights:
    # Random weights, so that a wrong kernel or stride shows.
    value = rng.normal(0.0, 0.3, size=v.shape).astype(np.float32)
    if 'variance' in v.name:
      value = np.abs(value) + 0.5
    by_name[key(v)].assign(value)
    v.assign(value)
  x = rng.normal(size=(2, 16, 16, 8, 1)).astype(np.float32)
  np.testing.assert_allclose(recomputed(x, training=False),
                             plain(x, training=False), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize('overrides,key', [
    (dict(filters=[4, 8]), 'model.filters'),
    (dict(num_segmentation_levels=4), 'num_segmentation_levels'),
    (dict(max_filters=0), 'model.max_filters'),
])
def test_bad_unet_configs(overrides, key):
  with pytest.raises(ConfigError, match=key) as info:
    models.build_model(tiny_config(**overrides))
  assert '\n' not in str(info.value)

"""Tests for unet3d/models/unet3plus.py: full-scale skips, heads, CGM."""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from tests.models.helpers import tiny_config, upsample_numpy
from unet3d.config import ConfigError
from unet3d import models
from unet3d.models import unet3plus


def unet3plus_count(cin, filters, cat, classes, rank, norm_params=4,
                    deep_supervision=False, cgm=False, kernel_sizes=None):
  """Closed-form parameter count of UNet 3+ (no residual); kernel_sizes:
  the per-axis conv kernel of each level (3 on every axis when None)."""
  n = len(filters)
  volume = [3**rank] * n if kernel_sizes is None else [
      math.prod(k) for k in kernel_sizes]
  total = 0

  def conv(ci, co, size, norm=True):
    nonlocal total
    total += size * ci * co + co + (norm_params * co if norm else 0)

  c = cin
  for level, f in enumerate(filters):
    conv(c, f, volume[level])
    conv(f, f, volume[level])
    c = f
  for i in range(n - 2, -1, -1):
    for j in range(n):
      if j <= i or j == n - 1:
        conv(filters[j], cat, volume[i])
      else:
        conv(n * cat, cat, volume[i])
    conv(n * cat, n * cat, volume[i])
  conv(n * cat, classes, volume[0], norm=False)
  if deep_supervision:
    for i in range(1, n - 1):
      conv(n * cat, classes, volume[i], norm=False)
    conv(filters[-1], classes, volume[n - 1], norm=False)
  if cgm:
    conv(filters[-1], 2, size=1, norm=False)
  return total


@pytest.mark.parametrize('name,ds,cgm', [
    ('unet3plus', False, False),
    ('unet3plus_deepsup', True, False),
    ('unet3plus_deepsup_cgm', True, True),
])
def test_parameter_count_closed_form(name, ds, cgm):
  cfg = tiny_config(name, rank=3, filters=[2, 3, 4, 5], cat_channels=2,
                    num_channels=2)
  model = models.build_model(cfg)
  assert model.count_params() == unet3plus_count(
      2, [2, 3, 4, 5], 2, 3, rank=3, deep_supervision=ds, cgm=cgm)


def test_default_filters_follow_the_paper_scaled():
  cfg = tiny_config('unet3plus', filters=None, num_base_filters=16)
  assert unet3plus.encoder_filters(cfg) == [16, 32, 64, 128, 256]
  cfg = tiny_config('unet3plus', filters=None, num_base_filters=64,
                    max_filters=320)
  assert unet3plus.encoder_filters(cfg) == [64, 128, 256, 320, 320]


def test_full_scale_skips_of_each_stage():
  cfg = tiny_config('unet3plus', rank=2, filters=[2, 2, 2, 2])
  model = models.build_model(cfg)
  # Stage 1 of 4 levels: enc0 pooled x2, enc1, dec2 up x2, bottleneck up x4.
  assert model.get_layer('dec1_pool_enc0').pool_size == (2, 2)
  assert not [l for l in model.layers if l.name.startswith('dec0_pool')]
  assert model.get_layer('dec0_up_dec3').factor == 8
  assert model.get_layer('dec1_up_dec3').factor == 4
  assert model.get_layer('dec1_up_dec2').factor == 2
  concat = model.get_layer('dec1_concat')
  sources = [t._keras_history[0].name for t in concat.input]  # pylint: disable=protected-access
  assert sources == ['dec1_from_enc0_act1', 'dec1_from_enc1_act1',
                     'dec1_from_dec2_act1', 'dec1_from_dec3_act1']
  assert model.get_layer('dec2_pool_enc0').pool_size == (4, 4)


def test_deep_supervision_order_finest_first():
  cfg = tiny_config('unet3plus_deepsup', rank=2, filters=[2, 2, 2, 2])
  model = models.build_model(cfg)
  x = np.random.default_rng(0).normal(size=(1, 16, 16, 1)).astype(np.float32)
  out = model(x)
  assert len(out['deep_supervision']) == 3
  for level, side in enumerate(out['deep_supervision'], start=1):
    coarse = keras.Model(model.input,
                         model.get_layer(f'logits_level{level}').output)(x)
    assert coarse.shape[1] == 16 // 2**level
    want = tf.image.resize(coarse, (16, 16), method='bilinear')
    np.testing.assert_allclose(side, want, atol=1e-5)


def test_cgm_is_global_max_of_a_1x1_conv_of_the_bottleneck():
  cfg = tiny_config('unet3plus_deepsup_cgm', use_batch_norm=False)
  model = models.build_model(cfg)
  x = np.random.default_rng(1).normal(size=(2, 16, 16, 16, 1))
  x = x.astype(np.float32)
  bottleneck = keras.Model(model.input, model.get_layer('enc2_act2').output)
  feats = np.asarray(bottleneck(x))
  kernel, bias = model.get_layer('cgm_conv').get_weights()
  want = (feats @ kernel[0, 0, 0] + bias).max(axis=(1, 2, 3))
  got = model(x, training=False)['classification']
  assert got.shape == (2, 2)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_cgm_trains_with_bce():
  cfg = tiny_config('unet3plus_deepsup_cgm', rank=2)
  model = models.build_model(cfg)
  rng = np.random.default_rng(2)
  x = rng.normal(size=(4, 16, 16, 1)).astype(np.float32)
  present = np.array([[1, 0], [0, 1], [0, 1], [1, 0]], np.float32)
  x[present[:, 1] == 1] += 2.0
  optimizer = keras.optimizers.Adam(0.02)
  variables = model.trainable_variables
  losses = []
  for _ in range(15):
    with tf.GradientTape() as tape:
      logits = model(x, training=True)['classification']
      loss = tf.reduce_mean(tf.nn.sigmoid_cross_entropy_with_logits(
          present, logits))
    grads = tape.gradient(loss, variables)
    cgm_grad = grads[[v.path for v in variables].index('cgm_conv/kernel')]
    assert float(tf.norm(cgm_grad)) > 0
    optimizer.apply_gradients(
        [(g, v) for g, v in zip(grads, variables) if g is not None])
    losses.append(float(loss))
  assert np.mean(losses[-3:]) < 0.7 * losses[0]


# 4 levels; per-axis scales of levels 0..3: (1, 1, 1), (2, 2, 1), (4, 4, 2),
# (4, 8, 4).
POOLS = [[2, 2, 1], [2, 2, 2], [1, 2, 2]]
KERNELS = [[3, 3, 1], [3, 3, 3], [3, 3, 3], [1, 3, 3]]


def _anisotropic(name, **overrides):
  return tiny_config(name, filters=[2, 3, 4, 5], pool_sizes=POOLS,
                     kernel_sizes=KERNELS, input_image_size=[16, 16, 8],
                     **overrides)


@pytest.mark.parametrize('downsampling', ['maxpool', 'strided_conv'])
def test_anisotropic_full_scale_skips(downsampling):
  model = models.build_model(_anisotropic('unet3plus',
                                          downsampling=downsampling))
  x = np.random.default_rng(3).normal(size=(2, 16, 16, 8, 1))
  x = x.astype(np.float32)
  assert model(x).shape == (2, 16, 16, 8, 3)
  bottleneck = keras.Model(model.input, model.get_layer('enc3_act2').output)
  assert bottleneck(x).shape == (2, 4, 2, 2, 5)
  # Encoder j -> stage i: max-pool by scale_i / scale_j per axis.
  assert model.get_layer('dec1_pool_enc0').pool_size == (2, 2, 1)
  assert model.get_layer('dec2_pool_enc0').pool_size == (4, 4, 2)
  assert model.get_layer('dec2_pool_enc1').pool_size == (2, 2, 2)
  # Decoder j -> stage i: linear up-sampling by scale_j / scale_i per axis.
  ups = {'dec0_up_dec1': (2, 2, 1), 'dec0_up_dec2': (4, 4, 2),
         'dec0_up_dec3': (4, 8, 4), 'dec1_up_dec2': (2, 2, 2),
         'dec1_up_dec3': (2, 4, 4), 'dec2_up_dec3': (1, 2, 2)}
  for layer, factors in ups.items():
    assert model.get_layer(layer).axis_factors(3) == factors, layer
  for i in range(3):
    for tag in ('from_enc0', 'fuse'):
      conv = model.get_layer(f'dec{i}_{tag}_conv1')
      assert conv.kernel.shape[:3] == tuple(KERNELS[i])
  assert model.get_layer('enc3_conv2').kernel.shape[:3] == (1, 3, 3)
  assert model.get_layer('logits').kernel.shape[:3] == (3, 3, 1)
  if downsampling == 'strided_conv':
    assert model.get_layer('enc3_conv1').strides == (1, 2, 2)
  else:
    assert model.get_layer('pool2').pool_size == (1, 2, 2)
  assert model.count_params() == unet3plus_count(
      1, [2, 3, 4, 5], 2, 3, rank=3, kernel_sizes=KERNELS)


def test_anisotropic_deep_supervision_and_cgm():
  model = models.build_model(_anisotropic('unet3plus_deepsup_cgm'))
  x = np.random.default_rng(4).normal(size=(1, 16, 16, 8, 1))
  x = x.astype(np.float32)
  out = model(x, training=False)
  assert out['logits'].shape == (1, 16, 16, 8, 3)
  assert out['classification'].shape == (1, 2)
  scales = [(2, 2, 1), (4, 4, 2), (4, 8, 4)]
  assert len(out['deep_supervision']) == 3
  for level, (side, scale) in enumerate(zip(out['deep_supervision'], scales),
                                        start=1):
    head = model.get_layer(f'logits_level{level}')
    assert head.kernel.shape[:3] == tuple(KERNELS[level])
    coarse = np.asarray(keras.Model(model.input, head.output)(x))
    assert coarse.shape[1:4] == tuple(s // f for s, f in
                                      zip((16, 16, 8), scale))
    assert side.shape == (1, 16, 16, 8, 3)
    np.testing.assert_allclose(side, upsample_numpy(coarse, scale),
                               atol=1e-5)
  assert model.count_params() == unet3plus_count(
      1, [2, 3, 4, 5], 2, 3, rank=3, deep_supervision=True, cgm=True,
      kernel_sizes=KERNELS)


def test_bad_unet3plus_configs():
  with pytest.raises(ConfigError, match='model.filters'):
    models.build_model(tiny_config('unet3plus', filters=[4]))
  with pytest.raises(ConfigError, match='model.cat_channels'):
    models.build_model(tiny_config('unet3plus', cat_channels=0))

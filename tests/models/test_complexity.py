"""Tests for unet3d/models/complexity.py: parameter counts and FLOPs."""

import keras
import pytest

from tests.models.helpers import tiny_config
from unet3d import models
from unet3d.models import blocks
from unet3d.models import complexity


def test_single_conv_flops_match_the_hand_formula():
  inputs = keras.Input([None, None, None, 3])
  outputs = keras.layers.Conv3D(5, 3, strides=2, padding='same')(inputs)
  info = complexity.model_summary(keras.Model(inputs, outputs), [8, 10, 12, 3])
  out_voxels = 4 * 5 * 6
  assert info['gflops'] == pytest.approx(2 * 27 * 3 * 5 * out_voxels / 1e9)
  assert info['trainable_params'] == 27 * 3 * 5 + 5
  assert info['layers'][0]['output_shape'] == [4, 5, 6, 5]


def test_transpose_conv_and_pool_flops():
  inputs = keras.Input([None, None, 4])
  x = keras.layers.Conv2DTranspose(6, 2, strides=2)(inputs)
  x = keras.layers.MaxPool2D(2)(x)
  info = complexity.model_summary(keras.Model(inputs, x), [5, 7, 4])
  conv_t = 2 * 4 * 4 * 6 * (5 * 7)
  pool = 4 * (5 * 7 * 6)
  assert info['gflops'] == pytest.approx((conv_t + pool) / 1e9)


def test_linear_upsample_flops_count_only_upsampled_axes():
  inputs = keras.Input([None, None, None, 2])
  x = blocks.LinearUpsample((2, 1, 3))(inputs)
  info = complexity.model_summary(keras.Model(inputs, x), [4, 5, 6, 2])
  out = (8 * 5 * 18) * 2
  # One lerp (3 FLOPs) per output element on each of the 2 up-sampled axes.
  assert info['gflops'] == pytest.approx(3 * 2 * out / 1e9)
  assert info['layers'][0]['output_shape'] == [8, 5, 18, 2]


def test_norm_params_are_split_into_trainable_and_not():
  model = models.build_model(tiny_config('unet3d', rank=2))
  info = complexity.model_summary(model, [16, 16, 1])
  bn_channels = sum(l.gamma.shape[0] for l in model.layers
                    if isinstance(l, keras.layers.BatchNormalization))
  assert info['non_trainable_params'] == 2 * bn_channels
  assert info['total_params'] == model.count_params()
  assert info['trainable_params'] == model.count_params() - 2 * bn_channels


def test_recompute_units_count_the_same_flops():
  plain = models.build_model(tiny_config('unet3plus_deepsup_cgm',
                                         residual=True))
  recomputed = models.build_model(tiny_config('unet3plus_deepsup_cgm',
                                              residual=True,
                                              recompute_grad=True))
  a = complexity.model_summary(plain, [16, 16, 16, 1])
  b = complexity.model_summary(recomputed, [16, 16, 16, 1])
  assert a['gflops'] > 0
  assert b['gflops'] == pytest.approx(a['gflops'])
  assert b['total_params'] == a['total_params']


def test_unet_flops_scale_with_voxels_and_format():
  model = models.build_model(tiny_config('unet3d', use_batch_norm=False))
  small = complexity.model_summary(model, [16, 16, 16, 1])
  big = complexity.model_summary(model, [32, 32, 32, 1])
  # Every layer is convolutional: FLOPs are proportional to input voxels.
  assert big['gflops'] == pytest.approx(8 * small['gflops'])
  text = complexity.format_summary(big)
  assert f"{big['total_params']:,d}" in text
  assert f"{big['gflops']:.3f}" in text
  assert 'enc0_conv1' in text

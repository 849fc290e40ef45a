"""Tests for unet3d/models/blocks.py: units, norms, activations, upsampling."""

import numpy as np
import pytest
import keras
import tensorflow as tf

from unet3d.config import ConfigError
from unet3d.models import blocks
from tests.models.helpers import interp_axis, tiny_config


def test_linear_upsample_2d_matches_tf_image_resize():
  x = np.random.default_rng(0).normal(size=(2, 5, 7, 3)).astype(np.float32)
  got = blocks.LinearUpsample(4)(x)
  want = tf.image.resize(x, (20, 28), method='bilinear')
  np.testing.assert_allclose(got, want, atol=1e-5)


def test_linear_upsample_3d_matches_numpy_separable():
  x = np.random.default_rng(1).normal(size=(1, 3, 4, 2, 2)).astype(np.float32)
  want = x
  for axis in (1, 2, 3):
    want = interp_axis(want, axis, 2)
  got = blocks.LinearUpsample(2)(x)
  assert got.shape == (1, 6, 8, 4, 2)
  np.testing.assert_allclose(got, want, atol=1e-5)


def test_linear_upsample_per_axis_factors_match_numpy():
  x = np.random.default_rng(9).normal(size=(2, 3, 4, 2, 2)).astype(np.float32)
  layer = blocks.LinearUpsample((2, 1, 3))
  got = layer(x)
  assert got.shape == (2, 6, 4, 6, 2)
  # Axis 2 (factor 1) is untouched; the others interpolate independently.
  want = interp_axis(interp_axis(x, 1, 2), 3, 3)
  np.testing.assert_allclose(got, want, atol=1e-5)
  # Half-pixel centres by hand on axis 3 (factor 3, n = 2): outputs sit at
  # input coordinates -1/3 (clamped to 0), 0, 1/3, 2/3, 1, 4/3 (clamped to 1).
  col = interp_axis(x, 1, 2)[0, 0, 0, :, 0]
  lerp = [col[0], col[0], col[0] + (col[1] - col[0]) / 3,
          col[0] + 2 * (col[1] - col[0]) / 3, col[1], col[1]]
  np.testing.assert_allclose(np.asarray(got)[0, 0, 0, :, 0], lerp, atol=1e-5)
  assert layer.compute_output_shape((None, 3, None, 2, 2)) == (
      None, 6, None, 6, 2)


def test_linear_upsample_config_round_trips_per_axis_and_int():
  x = np.random.default_rng(10).normal(size=(1, 2, 3, 2, 1))
  x = x.astype(np.float32)
  layer = blocks.LinearUpsample([2, 1, 3], name='up')
  restored = keras.saving.deserialize_keras_object(
      keras.saving.serialize_keras_object(layer))
  assert restored.factor == (2, 1, 3) and restored.name == 'up'
  np.testing.assert_array_equal(restored(x), layer(x))
  # A config saved before per-axis factors: an int for every axis.
  old = blocks.LinearUpsample.from_config({'name': 'old', 'factor': 2})
  assert old.factor == 2 and old.get_config()['factor'] == 2
  np.testing.assert_allclose(old(x), blocks.LinearUpsample((2, 2, 2))(x))
  # A uniform tuple keeps the int spelling of those configs.
  assert blocks.LinearUpsample((4, 4, 4)).get_config()['factor'] == 4


def test_instance_norm_normalises_each_sample_and_channel():
  spec = blocks.BlockSpec(rank=3, normalization='instance')
  layer = blocks.norm(spec, 4, 'n')
  x = np.random.default_rng(2).normal(3.0, 2.0, (2, 4, 4, 4, 4))
  x = x.astype(np.float32)
  got = np.asarray(layer(x))
  mean = x.mean(axis=(1, 2, 3), keepdims=True)
  var = x.var(axis=(1, 2, 3), keepdims=True)
  np.testing.assert_allclose(got, (x - mean) / np.sqrt(var + layer.epsilon),
                             atol=1e-4)


def test_group_norm_groups_channels():
  spec = blocks.BlockSpec(rank=2, normalization='group', num_groups=2)
  layer = blocks.norm(spec, 4, 'n')
  x = np.random.default_rng(3).normal(size=(1, 3, 3, 4)).astype(np.float32)
  got = np.asarray(layer(x))
  groups = x.reshape(1, 3, 3, 2, 2)
  mean = groups.mean(axis=(1, 2, 4), keepdims=True)
  var = groups.var(axis=(1, 2, 4), keepdims=True)
  want = ((groups - mean) / np.sqrt(var + layer.epsilon)).reshape(x.shape)
  np.testing.assert_allclose(got, want, atol=1e-4)


def test_group_norm_rejects_indivisible_channels():
  spec = blocks.BlockSpec(normalization='group', num_groups=4)
  with pytest.raises(ConfigError, match='model.num_groups'):
    blocks.norm(spec, 6, 'enc0_norm1')


def test_batch_norm_uses_channel_axis():
  spec = blocks.BlockSpec(normalization='batch')
  layer = blocks.norm(spec, 5, 'bn')
  layer.build((None, 8, 8, 8, 5))
  assert tuple(layer.gamma.shape) == (5,)


@pytest.mark.parametrize('name,want', [
    ('relu', lambda x: np.maximum(x, 0)),
    ('leaky_relu', lambda x: np.where(x > 0, x, 0.2 * x)),
    ('elu', lambda x: np.where(x > 0, x, np.expm1(x))),
    ('prelu', lambda x: np.where(x > 0, x, 0.25 * x)),  # initial slope
])
def test_activations(name, want):
  spec = blocks.BlockSpec(rank=2, activation=name, leaky_relu_alpha=0.2)
  x = np.linspace(-3, 3, 2 * 3 * 3 * 2).reshape(2, 3, 3, 2).astype(np.float32)
  np.testing.assert_allclose(blocks.activation(spec, 'a')(x), want(x),
                             atol=1e-6)


def _unit_model(spec, in_channels, filters, strides=1, kernel_size=3):
  inputs = keras.Input([None, None, None, in_channels])
  return keras.Model(inputs, blocks.conv_unit(inputs, spec, filters, 'u',
                                              strides=strides,
                                              kernel_size=kernel_size))


def _zero_layer(model, name):
  layer = model.get_layer(name)
  layer.set_weights([np.zeros_like(w) for w in layer.get_weights()])


def test_residual_unit_identity_shortcut():
  # With the second conv zeroed the unit is relu(0 + x).
  spec = blocks.BlockSpec(normalization='none', residual=True)
  model = _unit_model(spec, 3, [4, 3])
  _zero_layer(model, 'u_conv2')
  x = np.random.default_rng(4).normal(size=(1, 4, 4, 4, 3)).astype(np.float32)
  np.testing.assert_allclose(model(x), np.maximum(x, 0), atol=1e-6)


def test_residual_unit_projection_shortcut_with_stride():
  spec = blocks.BlockSpec(normalization='none', residual=True)
  model = _unit_model(spec, 2, [3, 3], strides=2)
  _zero_layer(model, 'u_conv2')
  kernel, bias = model.get_layer('u_proj').get_weights()
  x = np.random.default_rng(5).normal(size=(1, 4, 4, 4, 2)).astype(np.float32)
  # 1x1 stride-2 conv == pick every other voxel, then a matmul.
  want = np.maximum(x[:, ::2, ::2, ::2] @ kernel[0, 0, 0] + bias, 0)
  got = model(x)
  assert got.shape == (1, 2, 2, 2, 3)
  np.testing.assert_allclose(got, want, atol=1e-5)


def test_plain_unit_is_two_conv_norm_act():
  spec = blocks.BlockSpec(rank=2, normalization='none', residual=False)
  inputs = keras.Input([None, None, 2])
  model = keras.Model(inputs, blocks.conv_unit(inputs, spec, [3, 4], 'u'))
  names = [l.name for l in model.layers[1:]]
  assert names == ['u_conv1', 'u_act1', 'u_conv2', 'u_act2']
  x = np.random.default_rng(6).normal(size=(1, 5, 5, 2)).astype(np.float32)
  c1, c2 = model.get_layer('u_conv1'), model.get_layer('u_conv2')
  want = np.maximum(c2(np.maximum(c1(x), 0)), 0)
  np.testing.assert_allclose(model(x), want, atol=1e-5)


@pytest.mark.parametrize('normalization', ['batch', 'group'])
def test_recompute_unit_matches_plain_unit_and_gradients(normalization):
  # Batch norm checks that the recomputation also runs in training mode.
  plain_spec = blocks.BlockSpec(normalization=normalization, num_groups=2,
                                residual=True, activation='prelu')
  re_spec = blocks.BlockSpec(normalization=normalization, num_groups=2,
                             residual=True, activation='prelu', recompute=True)
  plain = _unit_model(plain_spec, 2, [4, 4])
  recomputed = _unit_model(re_spec, 2, [4, 4])
  by_name = {v.path.split('/')[-2] + '/' + v.name: v for v in plain.weights}
  assert len(by_name) == len(recomputed.weights)
  for v in recomputed.weights:
    v.assign(by_name[v.path.split('/')[-2] + '/' + v.name])
  x = tf.random.stateless_normal((2, 4, 4, 4, 2), seed=(1, 2))

  def grads(model):
    with tf.GradientTape() as tape:
      loss = tf.reduce_sum(model(x, training=True) ** 2)
    return loss, dict(zip(
        [v.path.split('/')[-2] + '/' + v.name
         for v in model.trainable_variables],
        tape.gradient(loss, model.trainable_variables)))

  loss_a, grads_a = grads(plain)
  loss_b, grads_b = grads(recomputed)
  np.testing.assert_allclose(loss_a, loss_b, rtol=1e-5)
  assert grads_a.keys() == grads_b.keys()
  for key, grad in grads_a.items():
    np.testing.assert_allclose(grads_b[key], grad, rtol=1e-4, atol=1e-5,
                               err_msg=key)


def test_unit_per_axis_kernel_and_strides_reach_every_conv():
  spec = blocks.BlockSpec(normalization='none', residual=True)
  model = _unit_model(spec, 2, [3, 3], strides=(2, 1, 2),
                      kernel_size=(3, 1, 5))
  assert model.get_layer('u_conv1').kernel.shape == (3, 1, 5, 2, 3)
  assert model.get_layer('u_conv2').kernel.shape == (3, 1, 5, 3, 3)
  assert model.get_layer('u_conv1').strides == (2, 1, 2)
  assert model.get_layer('u_conv2').strides == (1, 1, 1)
  # The projection shortcut takes the same per-axis strides, 1x1x1.
  _zero_layer(model, 'u_conv2')
  kernel, bias = model.get_layer('u_proj').get_weights()
  assert kernel.shape == (1, 1, 1, 2, 3)
  x = np.random.default_rng(11).normal(size=(1, 4, 3, 6, 2))
  x = x.astype(np.float32)
  want = np.maximum(x[:, ::2, :, ::2] @ kernel[0, 0, 0] + bias, 0)
  got = model(x)
  assert got.shape == (1, 2, 3, 3, 3)
  np.testing.assert_allclose(got, want, atol=1e-5)


def test_recompute_unit_with_per_axis_kernels_matches_plain_unit():
  kwargs = dict(normalization='batch', residual=True)
  plain = _unit_model(blocks.BlockSpec(**kwargs), 2, [4, 4],
                      strides=(2, 2, 1), kernel_size=(3, 3, 1))
  recomputed = _unit_model(blocks.BlockSpec(recompute=True, **kwargs), 2,
                           [4, 4], strides=(2, 2, 1), kernel_size=(3, 3, 1))
  unit = recomputed.get_layer('u')
  assert unit.unit['conv1'].kernel.shape == (3, 3, 1, 2, 4)
  assert unit.unit['proj'].strides == (2, 2, 1)
  config = unit.get_config()
  assert (config['kernel_size'], config['strides']) == ((3, 3, 1), (2, 2, 1))
  by_name = {v.path.split('/')[-2] + '/' + v.name: v for v in plain.weights}
  assert len(by_name) == len(recomputed.weights)
  for v in recomputed.weights:
    v.assign(by_name[v.path.split('/')[-2] + '/' + v.name])
  x = tf.random.stateless_normal((2, 4, 4, 3, 2), seed=(5, 6))
  for training in (False, True):
    np.testing.assert_allclose(recomputed(x, training=training),
                               plain(x, training=training),
                               rtol=1e-5, atol=1e-5)
  restored = blocks.RecomputeUnit.from_config(config)
  assert restored.unit['conv2'].kernel_size == (3, 3, 1)


@pytest.mark.parametrize('text, order, norm_name, act', [
    ('cr', 'ca', 'none', 'relu'),
    ('crg', 'can', 'group', 'relu'),
    ('cbr', 'cna', 'batch', 'relu'),
    ('gcr', 'nca', 'group', 'relu'),
    ('cge', 'cna', 'group', 'elu'),
    ('bcl', 'nca', 'batch', 'leaky_relu'),
])
def test_parse_layer_order(text, order, norm_name, act):
  assert blocks.parse_layer_order(text) == (order, norm_name, act)


@pytest.mark.parametrize('text, message', [
    ('rc', 'cannot start with an activation'),
    ('cc', 'exactly one c'),
    ('cgbr', 'exactly one c'),
    ('cxr', 'may only use the letters'),
    ('', 'may only use the letters'),
])
def test_bad_layer_order_names_the_key(text, message):
  with pytest.raises(ConfigError, match=f'model.layer_order: .*{message}'):
    blocks.parse_layer_order(text)


def _ordered_model(order, in_channels=2, filters=(4, 4), residual=False):
  _, norm_name, act = blocks.parse_layer_order(order)
  spec = blocks.BlockSpec(normalization=norm_name, activation=act or 'relu',
                          num_groups=2, residual=residual,
                          order=blocks.parse_layer_order(order)[0])
  return _unit_model(spec, in_channels, list(filters))


def _group_norm(x, groups, eps=1e-3):
  """numpy group norm over spatial axes and channel groups (gamma 1, beta 0,
  Keras' default epsilon)."""
  b, *spatial, c = x.shape
  g = x.reshape(b, -1, groups, c // groups)
  mean = g.mean(axis=(1, 3), keepdims=True)
  var = g.var(axis=(1, 3), keepdims=True)
  return ((g - mean) / np.sqrt(var + eps)).reshape(x.shape)


@pytest.mark.parametrize('order', ['gcr', 'crg', 'cgr'])
def test_layer_order_runs_layers_in_that_order(order):
  model = _ordered_model(order)
  names = [l.name for l in model.layers[1:]]
  letters = {'c': 'conv', 'g': 'norm', 'r': 'act'}
  assert names == [f'u_{letters[ch]}{i}' for i in (1, 2) for ch in order]
  x = np.random.default_rng(7).normal(size=(1, 4, 4, 4, 2)).astype(np.float32)
  c1, c2 = model.get_layer('u_conv1'), model.get_layer('u_conv2')
  ops = {'c': None, 'g': lambda t: _group_norm(t, 2),
         'r': lambda t: np.maximum(t, 0)}
  want = x
  for conv_layer in (c1, c2):
    for ch in order:
      want = np.asarray(conv_layer(want)) if ch == 'c' else ops[ch](want)
  np.testing.assert_allclose(model(x), want, atol=1e-4)


def test_norm_before_conv_normalises_the_input_channels():
  model = _ordered_model('gcr', in_channels=6, filters=(4, 4))
  assert model.get_layer('u_norm1').gamma.shape == (6,)
  assert model.get_layer('u_norm2').gamma.shape == (4,)


def test_cr_has_no_norm_and_residual_keeps_the_last_activation_after_add():
  model = _ordered_model('cr', in_channels=3, filters=(4, 3), residual=True)
  names = [l.name for l in model.layers[1:]]
  assert not any('norm' in n for n in names)
  _zero_layer(model, 'u_conv2')
  x = np.random.default_rng(8).normal(size=(1, 4, 4, 4, 3)).astype(np.float32)
  np.testing.assert_allclose(model(x), np.maximum(x, 0), atol=1e-6)


def test_recompute_unit_follows_the_layer_order():
  order, norm_name, act = blocks.parse_layer_order('gcr')
  kwargs = dict(normalization=norm_name, activation=act, num_groups=2,
                order=order)
  plain = _unit_model(blocks.BlockSpec(**kwargs), 2, [4, 4])
  recomputed = _unit_model(blocks.BlockSpec(recompute=True, **kwargs), 2,
                           [4, 4])
  by_name = {v.path.split('/')[-2] + '/' + v.name: v for v in plain.weights}
  for v in recomputed.weights:
    v.assign(by_name[v.path.split('/')[-2] + '/' + v.name])
  x = tf.random.stateless_normal((1, 4, 4, 4, 2), seed=(3, 4))
  np.testing.assert_allclose(recomputed(x), plain(x), rtol=1e-5, atol=1e-5)


def test_layer_order_from_the_config_and_default_unchanged():
  default = blocks.block_spec(tiny_config())
  assert (default.order, default.normalization, default.activation) == (
      'cna', 'batch', 'relu')
  spec = blocks.block_spec(tiny_config(layer_order='gcr', num_groups=2))
  assert (spec.order, spec.normalization, spec.activation) == (
      'nca', 'group', 'relu')


@pytest.mark.parametrize('shape', [(2, 6, 5, 4, 3), (3, 7, 5, 4)])
def test_fused_batch_norm_equals_keras_batch_norm(shape):
  """Forward (training and inference), moving statistics and gradients of
  the fused layer equal Keras' BatchNormalization on the same weights."""
  rng = np.random.default_rng(0)
  x = tf.constant(rng.normal(2.0, 3.0, size=shape), tf.float32)
  fused = blocks.FusedBatchNormalization(axis=-1, momentum=0.9)
  plain = keras.layers.BatchNormalization(axis=-1, momentum=0.9)
  fused.build(x.shape)
  plain.build(x.shape)
  gamma = rng.normal(1.0, 0.2, size=shape[-1]).astype(np.float32)
  beta = rng.normal(0.0, 0.5, size=shape[-1]).astype(np.float32)
  for layer in (fused, plain):
    layer.gamma.assign(gamma)
    layer.beta.assign(beta)
  target = tf.constant(rng.normal(size=shape), tf.float32)
  outputs, grads = [], []
  for layer in (fused, plain):
    with tf.GradientTape() as tape:
      tape.watch(x)
      y = layer(x, training=True)
      loss = tf.reduce_sum(y * target)
    outputs.append(y.numpy())
    grads.append([g.numpy() for g in tape.gradient(
        loss, [x, layer.gamma, layer.beta])])
  np.testing.assert_allclose(outputs[0], outputs[1], rtol=1e-4, atol=1e-4)
  for a, b in zip(*grads):
    np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-3)
  np.testing.assert_allclose(fused.moving_mean.numpy(),
                             plain.moving_mean.numpy(), rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(fused.moving_variance.numpy(),
                             plain.moving_variance.numpy(), rtol=1e-5)
  np.testing.assert_allclose(fused(x, training=False).numpy(),
                             plain(x, training=False).numpy(),
                             rtol=1e-4, atol=1e-4)

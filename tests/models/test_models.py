"""Tests for unet3d/models/__init__.py: the registry over every model.

Shapes in 2D and 3D, gradients, save/load, mixed precision, training, the
CGM gate of inference_logits and config errors.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

from tests.models.helpers import tiny_config
from unet3d import config
from unet3d.config import Config, ConfigError
from unet3d import models
from unet3d.models import heads

MULTI_HEAD = {
    # name: (number of deep supervision heads with filters [2, 4, 4], cgm)
    'unet3plus_deepsup': (2, False),
    'unet3plus_deepsup_cgm': (2, True),
}


def _config(name, rank, **kwargs):
  if name == 'unet3d_deepsup':
    return tiny_config('unet3d', rank, num_segmentation_levels=3, **kwargs)
  return tiny_config(name, rank, **kwargs)


ALL = list(models.MODEL_NAMES) + ['unet3d_deepsup']


def _input(rank, batch=2, size=16, channels=1, seed=0):
  rng = np.random.default_rng(seed)
  return rng.normal(size=(batch,) + (size,) * rank + (channels,)).astype(
      np.float32)


def _heads(outputs):
  """Every logits tensor of a model output, main head first."""
  if not isinstance(outputs, dict):
    return [outputs]
  return [outputs['logits']] + list(outputs['deep_supervision'])


def test_registry_names():
  assert set(models.MODEL_NAMES) == {'unet3d', 'unet3plus',
                                     'unet3plus_deepsup',
                                     'unet3plus_deepsup_cgm'}


@pytest.mark.parametrize('rank', [2, 3])
@pytest.mark.parametrize('name', ALL)
def test_output_shapes_and_dtypes(name, rank):
  model = models.build_model(_config(name, rank, num_channels=2))
  assert model.input.shape == (None,) * (rank + 1) + (2,)
  out = model(_input(rank, channels=2), training=False)
  heads = _heads(out)
  for head in heads:
    assert head.shape == (2,) + (16,) * rank + (3,)
    assert head.dtype == tf.float32
  if name == 'unet3d':
    assert not isinstance(out, dict)
  elif name == 'unet3d_deepsup':
    assert set(out) == {'logits', 'deep_supervision'}
    assert len(heads) == 3
  elif name == 'unet3plus':
    assert not isinstance(out, dict)
  else:
    num_side, cgm = MULTI_HEAD[name]
    assert len(out['deep_supervision']) == num_side
    assert ('classification' in out) == cgm
    if cgm:
      assert out['classification'].shape == (2, 2)
      assert out['classification'].dtype == tf.float32


def _loss(outputs, labels):
  """Softmax CE over every head, + BCE of the CGM head against presence."""
  onehot = tf.one_hot(labels, 3)
  loss = 0.0
  for head in _heads(outputs):
    loss += tf.reduce_mean(
        tf.nn.softmax_cross_entropy_with_logits(onehot, head))
  if isinstance(outputs, dict) and 'classification' in outputs:
    present = tf.reduce_any(labels > 0, axis=list(range(1, labels.ndim)))
    target = tf.one_hot(tf.cast(present, tf.int32), 2)
    loss += tf.reduce_mean(tf.nn.sigmoid_cross_entropy_with_logits(
        target, outputs['classification']))
  return loss


def _labels(x):
  # Class from the input's sign and magnitude: learnable by a tiny model.
  return np.where(x[..., 0] > 0.5, 2, np.where(x[..., 0] < -0.5, 1, 0))


def _nonzero_gradient_check(model, variables, grads):
  dead = [v.path for v, g in zip(variables, grads)
          if g is None or not np.any(np.asarray(g))]
  assert not dead


@pytest.mark.parametrize('name', ALL)
def test_gradients_reach_every_variable_2d(name):
  keras.utils.set_random_seed(0)
  model = models.build_model(_config(name, 2, activation='leaky_relu'))
  x = _input(2, batch=2, size=16)
  with tf.GradientTape() as tape:
    loss = _loss(model(x, training=True), _labels(x))
  variables = model.trainable_variables
  _nonzero_gradient_check(model, variables, tape.gradient(loss, variables))


@pytest.mark.parametrize('name', ALL)
def test_gradients_reach_every_variable_and_training_reduces_loss(name):
  keras.utils.set_random_seed(0)
  # Recompute equals plain back-prop (test_blocks); one model here is enough.
  model = models.build_model(_config(name, 3, residual=True,
                                     recompute_grad=name == 'unet3d'))
  x = _input(3, batch=2, size=16)
  labels = _labels(x)
  optimizer = keras.optimizers.Adam(0.005)
  variables = model.trainable_variables
  losses = []
  # Eager: tracing a tf.function of a step costs more than 6 eager steps.
  for step in range(6):
    with tf.GradientTape() as tape:
      loss = _loss(model(x, training=True), labels)
    grads = tape.gradient(loss, variables)
    if step == 0:
      _nonzero_gradient_check(model, variables, grads)
    optimizer.apply_gradients(zip(grads, variables))
    losses.append(float(loss))
  assert np.mean(losses[-2:]) < 0.95 * losses[0], losses


@pytest.mark.parametrize('name,kwargs', [
    ('unet3d', dict(rank=3, num_segmentation_levels=2, activation='prelu',
                    normalization='instance', dropout_rate=0.1)),
    ('unet3plus_deepsup_cgm', dict(rank=2, recompute_grad=True,
                                   residual=True, downsampling='strided_conv')),
])
def test_save_load_round_trip(tmp_path, name, kwargs):
  rank = kwargs.pop('rank')
  model = models.build_model(tiny_config(name, rank, **kwargs))
  x = _input(rank, batch=1)
  # Move BN statistics away from their initial values first.
  model(x, training=True)
  path = str(tmp_path / 'model.keras')
  model.save(path)
  loaded = keras.models.load_model(path)
  want = model(x, training=False)
  got = loaded(x, training=False)
  tf.nest.map_structure(
      lambda a, b: np.testing.assert_array_equal(np.asarray(a), np.asarray(b)),
      want, got)


@pytest.mark.parametrize('policy', ['mixed_bfloat16', 'mixed_float16'])
@pytest.mark.parametrize('name', ['unet3d_deepsup', 'unet3plus_deepsup_cgm'])
def test_mixed_precision_logits_are_float32(policy, name):
  keras.mixed_precision.set_global_policy(policy)
  model = models.build_model(_config(name, 3, normalization='group',
                                     num_groups=2))
  assert model.get_layer('enc0_conv1').compute_dtype == policy.split('_')[1]
  out = model(_input(3, batch=1), training=False)
  for head in _heads(out):
    assert head.dtype == tf.float32
  if isinstance(out, dict) and 'classification' in out:
    assert out['classification'].dtype == tf.float32
  assert heads.inference_logits(out).dtype == tf.float32


def test_inference_logits_gates_absent_samples_to_background():
  rng = np.random.default_rng(3)
  logits = rng.normal(size=(3, 4, 4, 4, 3)).astype(np.float32)
  classification = np.array([[2.0, -1.0], [-1.0, 2.0], [0.0, 0.5]],
                            np.float32)
  outputs = {'logits': logits, 'deep_supervision': [],
             'classification': classification}
  got = np.asarray(heads.inference_logits(outputs))
  np.testing.assert_array_equal(got[1:], logits[1:])
  assert np.all(np.argmax(got[0], axis=-1) == 0)
  assert np.all(got[0, ..., 0] > 1e3) and np.all(got[0, ..., 1:] < -1e3)
  sig = np.asarray(heads.inference_logits(outputs, 'sigmoid'))
  assert np.all(sig[0] < -1e3)
  np.testing.assert_array_equal(sig[1:], logits[1:])
  # Without a CGM head: the main logits, untouched.
  np.testing.assert_array_equal(
      heads.inference_logits({'logits': logits, 'deep_supervision': []}),
      logits)
  assert heads.inference_logits(logits) is logits


@pytest.mark.parametrize('overrides,pattern', [
    (dict(name='unet3plus_deepsub'), "model.name: unknown model "
     "'unet3plus_deepsub'; did you mean 'unet3plus_deepsup'"),
    (dict(depth=6), r'input_image_size: \[16, 16, 16\] .*6 levels'),
    (dict(name='unet3plus', filters=[2, 4, 4, 4, 4, 4]),
     r'input_image_size: .*stride 32'),
    (dict(data_format='channels_first'), 'data_format'),
    (dict(normalization='group', num_groups=3), 'model.num_groups'),
    (dict(normalization='layer'), 'model.normalization'),
    (dict(activation='gelu'), 'model.activation'),
    (dict(downsampling='avgpool'), 'model.downsampling'),
    (dict(num_classes=0), 'num_classes'),
])
def test_bad_configs_raise_one_line_errors(overrides, pattern):
  name = overrides.pop('name', 'unet3d')
  cfg = tiny_config(name, **overrides)
  with pytest.raises(ConfigError, match=pattern) as info:
    models.build_model(cfg)
  assert '\n' not in str(info.value)


def test_axis_strides():
  assert models.axis_strides(Config()) == [8, 8, 8]
  cfg = config.merge(Config(), {'model': {'name': 'unet3plus'}})
  assert models.axis_strides(cfg) == [16, 16, 16]
  cfg = config.merge(Config(), {'model': {'filters': [8, 16]}})
  assert models.axis_strides(cfg) == [2, 2, 2]
  cfg = config.merge(Config(), {'model': {
      'spatial_dims': 2, 'pool_sizes': [[2, 1], [2, 3], [1, 2]]},
                                'input_image_size': [32, 32]})
  # Per axis: 2 * 2 * 1 and 1 * 3 * 2.
  assert models.axis_strides(cfg) == [4, 6]

"""Tests for unet3d/training/gradients.py: clipping and loss scaling under a
2-replica MirroredStrategy (logical CPUs) and 2 local workers, each compared
with one device on the same global batch."""

import inspect

import keras
from keras.src.backend.tensorflow import optimizer as tf_optimizer
import numpy as np
import pytest
import tensorflow as tf

from tests import multi_worker_job
from unet3d import distribute
from unet3d.training import gradients

GLOBAL_BATCH = 8
STEPS = 3
CLIP = 0.05


def _mirrored():
  return distribute.mirrored_strategy(['/cpu:0', '/cpu:1'])


def _one_device():
  return tf.distribute.get_strategy()


def _data():
  rng = np.random.default_rng(0)
  x = rng.normal(size=(GLOBAL_BATCH * STEPS, 5)).astype('float32') * 3
  y = rng.normal(size=(GLOBAL_BATCH * STEPS, 1)).astype('float32')
  return tf.data.Dataset.from_tensor_slices((x, y)).batch(GLOBAL_BATCH)


def _build(strategy, make_optimizer):
  with strategy.scope():
    keras.utils.set_random_seed(1)
    model = keras.Sequential([keras.Input((5,)),
                              keras.layers.Dense(4, activation='tanh'),
                              keras.layers.Dense(1)])
    optimizer = make_optimizer()
    optimizer.build(model.trainable_variables)
  return model, optimizer


def _train(strategy, make_optimizer, mode, bad_replica=None, steps=STEPS):
  """Trains `steps` steps; mode 'stock' (optimizer.apply_gradients, the
  loop before this module), 'ours' (gradients.apply_gradients) or 'manual'
  (all-reduce, then the stock apply_gradients). `bad_replica` gets an inf
  gradient. Returns (model, optimizer, initial weights)."""
  model, optimizer = _build(strategy, make_optimizer)
  if mode == 'ours':
    gradients.disable_keras_aggregation(optimizer)
  initial = _weights(model)
  dataset = strategy.experimental_distribute_dataset(_data().take(steps))

  def step_fn(x, y):
    with tf.GradientTape() as tape:
      per_example = tf.reduce_sum((model(x, training=True) - y) ** 2, axis=-1)
      loss = tf.nn.compute_average_loss(per_example,
                                        global_batch_size=GLOBAL_BATCH)
      scaled = optimizer.scale_loss(loss)
    grads = tape.gradient(scaled, model.trainable_variables)
    if bad_replica is not None:
      replica = tf.distribute.get_replica_context().replica_id_in_sync_group
      grads = [grads[0] + tf.where(replica == bad_replica, np.inf, 0.0)
              ] + grads[1:]
    if mode == 'ours':
      gradients.apply_gradients(optimizer, grads, model.trainable_variables)
    elif mode == 'manual':
      grads = tf.distribute.get_replica_context().all_reduce('sum', grads)
      optimizer.apply_gradients(zip(grads, model.trainable_variables))
    else:
      optimizer.apply_gradients(zip(grads, model.trainable_variables))

  run = tf.function(lambda inputs: strategy.run(step_fn, args=inputs))
  for inputs in dataset:
    run(inputs)
  return model, optimizer, initial


def _weights(model):
  return [v.numpy() for v in model.trainable_variables]


def _max_diff(a, b):
  return max(float(np.abs(x - y).max()) for x, y in zip(a, b))


def _scales(strategy, optimizer):
  return [float(t) for t in strategy.experimental_local_results(
      optimizer.dynamic_scale.value)]


OPTIMIZERS = {
    'sgd_global_clipnorm': lambda: keras.optimizers.SGD(
        0.1, global_clipnorm=CLIP),
    'adam_global_clipnorm_weight_decay': lambda: keras.optimizers.Adam(
        0.01, global_clipnorm=CLIP, weight_decay=0.01),
    'nesterov_clipnorm': lambda: keras.optimizers.SGD(
        0.1, momentum=0.9, nesterov=True, clipnorm=CLIP),
    'sgd_no_clip': lambda: keras.optimizers.SGD(0.1),
    'loss_scale_sgd_global_clipnorm': lambda: (
        keras.optimizers.LossScaleOptimizer(
            keras.optimizers.SGD(0.1, global_clipnorm=CLIP))),
}


def test_the_clip_bites_in_these_tests():
  model, _ = _build(_one_device(), keras.optimizers.SGD)
  x, y = next(iter(_data()))
  with tf.GradientTape() as tape:
    loss = tf.reduce_mean(tf.reduce_sum((model(x) - y) ** 2, axis=-1))
  norm = tf.linalg.global_norm(tape.gradient(loss, model.trainable_variables))
  assert float(norm) > 10 * CLIP


@pytest.mark.parametrize('name', sorted(OPTIMIZERS))
def test_two_replicas_match_one_device_on_the_global_batch(name):
  make = OPTIMIZERS[name]
  reference, reference_optimizer, _ = _train(_one_device(), make, 'stock')
  ours, optimizer, _ = _train(_mirrored(), make, 'ours')
  for a, b in zip(_weights(reference), _weights(ours)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
  assert (int(optimizer.iterations.numpy()) ==
          int(reference_optimizer.iterations.numpy()) == STEPS)


def test_stock_keras_clips_each_replica_before_summing():
  """Why this module exists: Keras' global_clipnorm sees partial gradients."""
  make = OPTIMIZERS['sgd_global_clipnorm']
  reference, _, _ = _train(_one_device(), make, 'stock')
  stock, _, _ = _train(_mirrored(), make, 'stock')
  assert _max_diff(_weights(reference), _weights(stock)) > 1e-3


def test_stock_apply_sums_again_so_the_keras_summation_must_be_off():
  """Summing in the loop and then calling Keras' apply doubles the update,
  and Keras 3 has no argument to skip its summation."""
  make = OPTIMIZERS['sgd_no_clip']
  one, _, initial = _train(_one_device(), make, 'stock', steps=1)
  manual, _, _ = _train(_mirrored(), make, 'manual', steps=1)
  np.testing.assert_allclose(_weights(manual)[1] - initial[1],
                             2 * (_weights(one)[1] - initial[1]), rtol=1e-5)
  assert list(inspect.signature(keras.optimizers.SGD.apply_gradients)
              .parameters) == ['self', 'grads_and_vars']


def test_one_device_is_unchanged():
  make = OPTIMIZERS['adam_global_clipnorm_weight_decay']
  reference, _, _ = _train(_one_device(), make, 'stock')
  ours, _, _ = _train(_one_device(), make, 'ours')
  assert _max_diff(_weights(reference), _weights(ours)) == 0.0


def test_stock_loss_scaling_applies_an_overflow_of_replica_1():
  """Why: LossScaleOptimizer consults only the first replica's check."""
  strategy = _mirrored()
  make = OPTIMIZERS['loss_scale_sgd_global_clipnorm']
  model, optimizer, _ = _train(strategy, make, 'stock', bad_replica=1, steps=1)
  assert not all(np.isfinite(w).all() for w in _weights(model))
  assert _scales(strategy, optimizer) == [2.0**15, 2.0**15]  # not lowered


@pytest.mark.parametrize('bad_replica', [0, 1])
def test_an_overflow_on_any_replica_skips_the_step_everywhere(bad_replica):
  strategy = _mirrored()
  make = OPTIMIZERS['loss_scale_sgd_global_clipnorm']
  model, optimizer, initial = _train(strategy, make, 'ours',
                                     bad_replica=bad_replica, steps=1)
  for variable, before in zip(model.trainable_variables, initial):
    for copy in strategy.experimental_local_results(variable.value):
      np.testing.assert_array_equal(copy.numpy(), before)
  assert int(optimizer.iterations.numpy()) == 0
  assert _scales(strategy, optimizer) == [2.0**14, 2.0**14]


def test_training_after_a_skipped_step_matches_one_device():
  """Overflow on replica 1 at the first of three steps: the result is a
  1-device run of the last two steps with the halved loss scale."""
  strategy = _mirrored()
  make = OPTIMIZERS['loss_scale_sgd_global_clipnorm']
  model, optimizer = _build(strategy, make)
  gradients.disable_keras_aggregation(optimizer)
  batches = list(_data().take(3))

  def step_fn(x, y, overflow):
    with tf.GradientTape() as tape:
      loss = tf.nn.compute_average_loss(
          tf.reduce_sum((model(x, training=True) - y) ** 2, axis=-1),
          global_batch_size=GLOBAL_BATCH)
      scaled = optimizer.scale_loss(loss)
    grads = tape.gradient(scaled, model.trainable_variables)
    replica = tf.distribute.get_replica_context().replica_id_in_sync_group
    bad = tf.logical_and(overflow, tf.equal(replica, 1))
    grads = [grads[0] + tf.where(bad, np.inf, 0.0)] + grads[1:]
    gradients.apply_gradients(optimizer, grads, model.trainable_variables)

  run = tf.function(lambda inputs, overflow: strategy.run(
      step_fn, args=inputs + (overflow,)))
  for i, batch in enumerate(batches):
    inputs = next(iter(strategy.experimental_distribute_dataset(
        tf.data.Dataset.from_tensors(batch).unbatch().batch(GLOBAL_BATCH))))
    run(inputs, tf.constant(i == 0))

  reference, reference_optimizer = _build(_one_device(), make)
  for x, y in batches[1:]:
    with tf.GradientTape() as tape:
      loss = tf.reduce_mean(tf.reduce_sum((reference(x) - y) ** 2, axis=-1))
      scaled = reference_optimizer.scale_loss(loss)
    reference_optimizer.apply_gradients(zip(
        tape.gradient(scaled, reference.trainable_variables),
        reference.trainable_variables))
  for a, b in zip(_weights(reference), _weights(model)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
  assert int(optimizer.iterations.numpy()) == 2
  assert _scales(strategy, optimizer) == [2.0**14, 2.0**14]


def test_every_worker_skips_an_overflow_of_one_worker():
  """Two local MultiWorkerMirroredStrategy workers, inf on worker 1 only:
  both skip and halve the scale (stock Keras lets worker 0 apply the step
  and hang in the update's collective)."""
  for code, result, out in multi_worker_job.run_workers(['loss_scale']):
    assert code == 0, out[-3000:]
    assert result == {'iterations': 0, 'scale': 2.0**14, 'unchanged': True}


def test_the_keras_hook_exists_and_is_what_sums():
  """Fails when a Keras upgrade renames or stops using the private hook that
  disable_keras_aggregation replaces: re-check
  keras/src/backend/tensorflow/optimizer.py then."""
  assert callable(getattr(tf_optimizer.TFOptimizer,
                          '_all_reduce_sum_gradients', None))
  assert '_all_reduce_sum_gradients' in inspect.getsource(
      tf_optimizer.TFOptimizer._backend_update_step)  # pylint: disable=protected-access


def test_a_missing_hook_stops_training(monkeypatch):
  monkeypatch.delattr(tf_optimizer.TFOptimizer, '_all_reduce_sum_gradients')
  with pytest.raises(RuntimeError, match='changed how the TF backend sums'):
    gradients.disable_keras_aggregation(keras.optimizers.SGD())


def test_apply_gradients_refuses_an_optimizer_that_still_sums():
  model, optimizer = _build(_one_device(), OPTIMIZERS['sgd_no_clip'])
  grads = [tf.zeros_like(v) for v in model.trainable_variables]
  with pytest.raises(ValueError, match='call disable_keras_aggregation'):
    gradients.apply_gradients(optimizer, grads, model.trainable_variables)
  gradients.disable_keras_aggregation(optimizer)
  assert gradients.aggregation_disabled(optimizer)
  gradients.disable_keras_aggregation(optimizer)  # idempotent
  assert gradients.apply_gradients(optimizer, grads,
                                   model.trainable_variables).numpy()


def test_checkpoints_and_config_are_unchanged(tmp_path):
  def fresh():
    model, optimizer = _build(_one_device(),
                              OPTIMIZERS['loss_scale_sgd_global_clipnorm'])
    return tf.train.Checkpoint(model=model, optimizer=optimizer), optimizer

  checkpoint, optimizer = fresh()
  before = checkpoint.save(str(tmp_path / 'before'))
  gradients.disable_keras_aggregation(optimizer)
  after = checkpoint.save(str(tmp_path / 'after'))
  assert ([n for n, _ in tf.train.list_variables(before)] ==
          [n for n, _ in tf.train.list_variables(after)])
  restored, _ = fresh()
  restored.restore(after).assert_existing_objects_matched()
  assert optimizer.get_config()['inner_optimizer']['config'][
      'global_clipnorm'] == CLIP

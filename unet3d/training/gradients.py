"""Gradients summed over every replica once, before clipping and before the
loss-scale overflow check.

Keras 3 optimizers (TensorFlow backend, checked on Keras 3.15) clip inside
`apply()` and only then sum the gradients across replicas
(`_clip_gradients`, then `_backend_update_step` -> `_all_reduce_sum_gradients`).
In a custom loop `apply()` runs inside `strategy.run` on each replica's
*partial* gradient, so `global_clipnorm` clips each part and sums the clipped
parts: the update and its direction change with the number of replicas.
Keras 3 has no argument to skip its own summation (no
`skip_gradients_aggregation`; keras-team/keras#19308), so summing in the loop
and calling `apply()` would add the gradients twice.

`LossScaleOptimizer`, when the strategy uses merge_call (MirroredStrategy,
MultiWorkerMirroredStrategy, TPUStrategy), tests each replica's gradients for
inf/NaN but keeps only the first replica's answer: an overflow on another
replica is applied to the weights and the loss scale is not lowered; across
workers the replicas can take different branches and the collective inside
the update hangs.

So the training step calls `apply_gradients` here instead of the
optimizer's: the gradients are summed in one all-reduce before the optimizer
sees them. An inf or NaN on any replica stays inf or NaN in the sum, and
every replica holds the same sum, so the loss-scale check agrees everywhere
(all skip the step and halve the scale together). The optimizer's own
summation is switched off (`disable_keras_aggregation`), so Keras' clipping
then sees the global gradient, unscaled by LossScaleOptimizer first.
"""

from __future__ import annotations

from typing import Sequence

import keras
import tensorflow as tf


def _no_aggregation(grads_and_vars):
  """Stands in for TFOptimizer._all_reduce_sum_gradients: already summed."""
  return list(grads_and_vars)


def update_optimizer(optimizer):
  """The optimizer that runs update_step (inside loss scaling, if any)."""
  if isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
    return optimizer.inner_optimizer
  return optimizer


def disable_keras_aggregation(optimizer):
  """Stops `optimizer.apply()` from summing gradients across replicas, for a
  loop that sums them with `all_reduce_gradients`. Idempotent; returns the
  optimizer. Checkpoints and get_config() are unchanged (the override is a
  plain function on the instance, which Keras does not track).

  Raises:
    RuntimeError: this Keras no longer has the `_all_reduce_sum_gradients`
      hook (keras/src/backend/tensorflow/optimizer.py); summing would happen
      twice or never, so training must not start.
  """
  target = update_optimizer(optimizer)
  if not callable(getattr(type(target), '_all_reduce_sum_gradients', None)):
    raise RuntimeError(
        f'{type(target).__name__} has no _all_reduce_sum_gradients: Keras '
        f'{keras.__version__} changed how the TF backend sums gradients '
        'across replicas; unet3d.training.gradients must follow it')
  target._all_reduce_sum_gradients = _no_aggregation  # pylint: disable=protected-access
  return optimizer


def aggregation_disabled(optimizer) -> bool:
  """True when `disable_keras_aggregation` has been applied."""
  target = update_optimizer(optimizer)
  return target.__dict__.get('_all_reduce_sum_gradients') is _no_aggregation


def _values(grad):
  return grad.values if isinstance(grad, tf.IndexedSlices) else grad


def all_reduce_gradients(grads: Sequence) -> tuple[list, tf.Tensor]:
  """Sums gradients over all replicas and workers in one batched all-reduce.

  Call inside `strategy.run`, on gradients of a loss divided by the global
  batch size (tf.nn.compute_average_loss). None gradients (variables the loss
  does not reach) pass through.

  Returns:
    (gradients, finite): the global gradients, the same on every replica,
    and a scalar bool, True when they are all finite (False when any
    replica's were not, or the sum overflowed).
  """
  grads = list(grads)
  present = [i for i, g in enumerate(grads) if g is not None]
  context = tf.distribute.get_replica_context()
  if context is None:
    raise RuntimeError('all_reduce_gradients runs in a replica context '
                       '(inside strategy.run)')
  reduced = context.all_reduce(tf.distribute.ReduceOp.SUM,
                               [grads[i] for i in present])
  out = list(grads)
  for i, g in zip(present, reduced):
    out[i] = g
  # Unused by the training step, so tf.function prunes it there.
  flags = [tf.reduce_all(tf.math.is_finite(_values(g))) for g in reduced]
  return out, tf.reduce_all(flags) if flags else tf.constant(True)


def apply_gradients(optimizer, grads: Sequence,
                    variables: Sequence) -> tf.Tensor:
  """`all_reduce_gradients`, then `optimizer.apply`; returns the global
  finite flag (False: the step was skipped by loss scaling, or the weights
  are now NaN without it).

  Inside strategy.run. The optimizer's global_clipnorm then clips the global
  gradient. Raises ValueError unless `disable_keras_aggregation(optimizer)`
  was called (the gradients would be summed twice).
  """
  if not aggregation_disabled(optimizer):
    raise ValueError('apply_gradients: call disable_keras_aggregation('
                     'optimizer) first, or Keras sums the gradients again')
  grads, finite = all_reduce_gradients(grads)
  optimizer.apply(grads, list(variables))
  return finite

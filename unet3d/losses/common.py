"""What every loss shares: probabilities, targets and masks, reductions,
and the check that a call names only the options its loss declares.

Shapes: logits [B, *spatial, C]; labels are class indices [B, *spatial] or
one-hot / multi-hot [B, *spatial, C]. Everything is computed in float32.
"""

from __future__ import annotations

import functools
import inspect
from typing import Callable, Optional

import tensorflow as tf

from unet3d import labels as labels_lib
from unet3d.errors import unknown_name

EPSILON = 1e-7
# The arguments of every loss that are not options.
INPUTS = ('labels', 'logits')


def options_of(fn: Callable) -> tuple[str, ...]:
  """The options a loss declares: its parameters after (labels, logits)."""
  params = inspect.signature(fn).parameters
  return tuple(name for name in params if name not in INPUTS)


def declares_options(fn: Callable) -> Callable:
  """Makes a loss refuse keyword options it does not declare, in one line
  naming the loss and the option with the closest declared one
  ("dice: unknown option 'smoth'; did you mean 'smooth'? ...")."""
  known = options_of(fn)

  @functools.wraps(fn)
  def checked(labels, logits, *args, **options):
    for name in options:
      if name not in known:
        raise unknown_name(fn.__name__, name, known, 'option')
    return fn(labels, logits, *args, **options)

  return checked


def spatial_axes(logits) -> list[int]:
  return list(range(1, logits.shape.rank - 1))


def prepare(labels, logits, output_activation: str = 'softmax',
            ignore_label: Optional[int] = None):
  """Returns (probabilities, one-hot targets, voxel mask [B, *spatial, 1]).

  All float32. The mask is 0 where the label is `ignore_label`.
  """
  logits = tf.cast(logits, tf.float32)
  targets, mask = labels_lib.targets_and_mask(labels, logits.shape.rank,
                                   logits.shape[-1], ignore_label)
  if output_activation == 'sigmoid':
    probs = tf.sigmoid(logits)
  else:
    probs = tf.nn.softmax(logits)
  return probs, targets, mask


def class_mean(scores, include_background: bool, weights=None):
  """Mean over the class axis of [B, C] (or [C]) scores."""
  if not include_background:
    scores = scores[..., 1:]
    if weights is not None:
      weights = weights[1:]
  if weights is None:
    return tf.reduce_mean(scores, axis=-1)
  weights = tf.constant(weights, tf.float32)
  return tf.reduce_sum(scores * weights, axis=-1) / tf.reduce_sum(weights)


def per_example(value, logits):
  """Broadcasts a batch-level scalar loss to [B] (mean gives it back)."""
  return tf.fill(tf.shape(logits)[:1], value)


def voxel_mean(per_voxel, mask, logits):
  """Mean over the voxels that are not ignored, per example: [B]."""
  axes = spatial_axes(logits)
  mask = mask[..., 0]
  return tf.reduce_sum(per_voxel * mask, axis=axes) / tf.maximum(
      tf.reduce_sum(mask, axis=axes), 1.0)

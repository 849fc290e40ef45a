"""Voxel-wise losses: softmax cross-entropy (fixed or per-batch class
weights), per-channel binary cross-entropy and focal loss.

Shapes: logits [B, *spatial, C]; labels [B, *spatial] indices or
[B, *spatial, C] one-hot / multi-hot. Each loss returns float32 [B], the
mean over the voxels that are not ignored.
"""

from __future__ import annotations

import tensorflow as tf

from unet3d.errors import ConfigError
from unet3d.losses.common import (EPSILON, declares_options, per_example,
                                  prepare, voxel_mean)


def softmax_ce(targets, log_p, mask, logits, class_weights):
  """Cross-entropy of log-softmax `log_p`, each voxel's term scaled by its
  true class's weight when given; mean over unmasked voxels: [B]."""
  per_voxel = -tf.reduce_sum(targets * log_p, axis=-1)
  if class_weights is not None:
    per_voxel *= tf.reduce_sum(
        targets * tf.constant(class_weights, tf.float32), axis=-1)
  return voxel_mean(per_voxel, mask, logits)


@declares_options
def cross_entropy(labels, logits, output_activation='softmax',
                  ignore_label=None, class_weights=None):
  """Softmax cross-entropy averaged over voxels: [B].

  Works with index and one-hot labels. With `class_weights`, each voxel's
  term is scaled by its true class's weight (weighted_cross_entropy).
  """
  if output_activation == 'sigmoid':
    return bce(labels, logits, ignore_label=ignore_label)
  logits = tf.cast(logits, tf.float32)
  _, targets, mask = prepare(labels, logits, 'softmax', ignore_label)
  return softmax_ce(targets, tf.nn.log_softmax(logits), mask, logits,
                    class_weights)


@declares_options
def weighted_cross_entropy(labels, logits, output_activation='softmax',
                           ignore_label=None, class_weights=None):
  """Cross-entropy with per-class weights (loss_options.class_weights)."""
  if class_weights is None:
    raise ConfigError('loss_options.class_weights: required by '
                      'weighted_cross_entropy')
  return cross_entropy(labels, logits, output_activation=output_activation,
                       ignore_label=ignore_label, class_weights=class_weights)


@declares_options
def bce(labels, logits, ignore_label=None, class_weights=None):
  """Binary cross-entropy per channel (multi-label), mean over voxels and
  channels: [B]."""
  logits = tf.cast(logits, tf.float32)
  _, targets, mask = prepare(labels, logits, 'sigmoid', ignore_label)
  per_channel = tf.nn.sigmoid_cross_entropy_with_logits(targets, logits)
  if class_weights is not None:
    per_channel *= tf.constant(class_weights, tf.float32)
  return voxel_mean(tf.reduce_mean(per_channel, axis=-1), mask, logits)


@declares_options
def focal(labels, logits, output_activation='softmax', ignore_label=None,
          focal_alpha=0.25, focal_gamma=2.0):
  """Focal loss (Lin et al. 2017), mean over voxels: [B].

  softmax: -alpha (1 - p_t)^gamma log p_t over the true class, with alpha
  applied to foreground classes and (1 - alpha) to background.
  sigmoid: the binary form per channel, alpha for positives.
  """
  logits = tf.cast(logits, tf.float32)
  probs, targets, mask = prepare(labels, logits, output_activation,
                                 ignore_label)
  if output_activation == 'sigmoid':
    ce = tf.nn.sigmoid_cross_entropy_with_logits(targets, logits)
    p_t = targets * probs + (1 - targets) * (1 - probs)
    alpha = targets * focal_alpha + (1 - targets) * (1 - focal_alpha)
    per_voxel = tf.reduce_mean(alpha * (1 - p_t)**focal_gamma * ce, axis=-1)
  else:
    log_p = tf.nn.log_softmax(logits)
    p_t = tf.reduce_sum(targets * probs, axis=-1)
    log_p_t = tf.reduce_sum(targets * log_p, axis=-1)
    alpha = tf.where(targets[..., 0] > 0.5, 1.0 - focal_alpha, focal_alpha)
    per_voxel = -alpha * (1.0 - p_t)**focal_gamma * log_p_t
  return voxel_mean(per_voxel, mask, logits)


@declares_options
def batch_weighted_cross_entropy(labels, logits, ignore_label=None,
                                 class_weights=None):
  """pytorch-3dunet's WeightedCrossEntropyLoss (Sudre et al. 2017).

  Class weights come from each batch's own softmax and carry no gradient:
  w_c = sum(1 - p_c) / sum(p_c) over every (not ignored) voxel of the
  batch. The loss is the weighted mean sum_v w_y(v) CE(v) / sum_v w_y(v),
  as torch's weighted cross_entropy; `class_weights` (optional) multiply
  w_c. It is a batch-level loss: the value is returned for every example
  so that the mean restores it.
  """
  logits = tf.cast(logits, tf.float32)
  probs, targets, mask = prepare(labels, logits, 'softmax', ignore_label)
  axes = list(range(logits.shape.rank - 1))
  weights = tf.stop_gradient(
      tf.reduce_sum((1.0 - probs) * mask, axis=axes) /
      tf.maximum(tf.reduce_sum(probs * mask, axis=axes), EPSILON))
  if class_weights is not None:
    weights *= tf.constant(class_weights, tf.float32)
  voxel_weights = tf.reduce_sum(targets * weights, axis=-1) * mask[..., 0]
  per_voxel = -tf.reduce_sum(targets * tf.nn.log_softmax(logits), axis=-1)
  loss = tf.reduce_sum(voxel_weights * per_voxel) / tf.maximum(
      tf.reduce_sum(voxel_weights), EPSILON)
  return per_example(loss, logits)

"""Overlap losses: the dice family (dice, jaccard, tversky, generalized and
adaptive dice), each 1 - a soft overlap score from probabilities.

Shapes: logits [B, *spatial, C]; labels [B, *spatial] indices or
[B, *spatial, C] one-hot / multi-hot. Each loss returns float32 [B].
"""

from __future__ import annotations

import math

import tensorflow as tf

from unet3d.losses.common import (EPSILON, class_mean, declares_options,
                                  per_example, prepare, spatial_axes)


@declares_options
def adaptive_dice32(labels, logits, output_activation='softmax',
                    ignore_label=None):
  """The TF Model Garden's adaptive dice, computed over the whole batch.

  d_c = (2 I_c + eps) / (U_c + eps); w_c = exp(-d_c);
  L = 1 - sum_c w_c d_c / (C e^-1).
  The Model Garden wrote 2 (I_c + eps) / (U_c + eps), which scores a class
  absent from both label and prediction as 2; with eps outside the factor it
  scores 1, the dice of a perfect empty prediction. It is a batch-level loss:
  the value is returned for every example so that the mean restores it.
  """
  probs, targets, mask = prepare(labels, logits, output_activation,
                                 ignore_label)
  axes = list(range(logits.shape.rank - 1))
  intersection = tf.reduce_sum(probs * targets * mask, axis=axes)
  union = tf.reduce_sum((probs + targets) * mask, axis=axes)
  scores = (2.0 * intersection + EPSILON) / (union + EPSILON)
  weights = tf.exp(-scores)
  num_classes = float(logits.shape[-1])
  loss = 1.0 - tf.reduce_sum(weights * scores) / (num_classes * math.exp(-1.0))
  return per_example(loss, logits)


def _overlap_sums(labels, logits, output_activation, ignore_label,
                  batch_dice: bool):
  """Soft true positives, false positives and false negatives per class.

  Returns three [B, C] tensors (or [1, C] summed over the batch when
  batch_dice).
  """
  probs, targets, mask = prepare(labels, logits, output_activation,
                                 ignore_label)
  axes = spatial_axes(logits)
  tp = tf.reduce_sum(probs * targets * mask, axis=axes)
  fp = tf.reduce_sum(probs * (1.0 - targets) * mask, axis=axes)
  fn = tf.reduce_sum((1.0 - probs) * targets * mask, axis=axes)
  return over_batch(tp, fp, fn, batch_dice)


def over_batch(tp, fp, fn, batch_dice: bool):
  """[B, C] sums, or [1, C] summed over the batch when batch_dice."""
  if batch_dice:
    tp, fp, fn = (tf.reduce_sum(t, axis=0, keepdims=True) for t in (tp, fp, fn))
  return tp, fp, fn


def dice_from_sums(tp, fp, fn, logits, smooth, include_background,
                   class_weights, batch_dice):
  """1 - dice of [B, C] (or [1, C]) TP/FP/FN sums: [B]."""
  scores = (2.0 * tp + smooth) / (2.0 * tp + fp + fn + smooth)
  return _finish(scores, logits, include_background, class_weights, batch_dice)


def _finish(scores, logits, include_background, class_weights, batch_dice):
  loss = 1.0 - class_mean(scores, include_background, class_weights)
  if batch_dice:  # [1] -> broadcast to [B]
    return per_example(loss[0], logits)
  return loss


@declares_options
def dice(labels, logits, output_activation='softmax', ignore_label=None,
         smooth=1e-5, include_background=True, batch_dice=False,
         class_weights=None):
  """1 - soft dice, (2 TP + s) / (2 TP + FP + FN + s), mean over classes.

  batch_dice sums TP/FP/FN over the batch before the ratio (nnU-Net's
  option); the loss is then the same for every example.
  """
  tp, fp, fn = _overlap_sums(labels, logits, output_activation, ignore_label,
                             batch_dice)
  return dice_from_sums(tp, fp, fn, logits, smooth, include_background,
                        class_weights, batch_dice)


@declares_options
def jaccard(labels, logits, output_activation='softmax', ignore_label=None,
            smooth=1e-5, include_background=True, batch_dice=False,
            class_weights=None):
  """1 - soft IoU, (TP + s) / (TP + FP + FN + s), mean over classes."""
  tp, fp, fn = _overlap_sums(labels, logits, output_activation, ignore_label,
                             batch_dice)
  scores = (tp + smooth) / (tp + fp + fn + smooth)
  return _finish(scores, logits, include_background, class_weights, batch_dice)


@declares_options
def tversky(labels, logits, output_activation='softmax', ignore_label=None,
            smooth=1e-5, include_background=True, batch_dice=False,
            tversky_alpha=0.3, tversky_beta=0.7, class_weights=None):
  """1 - Tversky index TP / (TP + alpha FP + beta FN), mean over classes.

  alpha weighs false positives and beta false negatives (Salehi et al. 2017);
  alpha = beta = 0.5 is dice.
  """
  tp, fp, fn = _overlap_sums(labels, logits, output_activation, ignore_label,
                             batch_dice)
  scores = (tp + smooth) / (tp + tversky_alpha * fp + tversky_beta * fn +
                            smooth)
  return _finish(scores, logits, include_background, class_weights, batch_dice)


@declares_options
def generalized_dice(labels, logits, output_activation='softmax',
                     ignore_label=None, smooth=1e-5, include_background=True):
  """Sudre et al. 2017: 1 - 2 sum_c w_c TP_c / sum_c w_c (2TP+FP+FN)_c,
  with w_c = 1 / (sum of the class's label volume)^2 per example.

  A class absent from an example's label gets weight 0 there (its infinite
  weight would otherwise dominate), as MONAI's `w_type='square'` does.
  """
  probs, targets, mask = prepare(labels, logits, output_activation,
                                 ignore_label)
  if not include_background:
    probs, targets = probs[..., 1:], targets[..., 1:]
  axes = spatial_axes(logits)
  volume = tf.reduce_sum(targets * mask, axis=axes)
  weights = tf.where(volume > 0, 1.0 / tf.maximum(volume, 1.0)**2, 0.0)
  tp = tf.reduce_sum(probs * targets * mask, axis=axes)
  total = tf.reduce_sum((probs + targets) * mask, axis=axes)
  numerator = 2.0 * tf.reduce_sum(weights * tp, axis=-1)
  denominator = tf.reduce_sum(weights * total, axis=-1)
  return 1.0 - (numerator + smooth) / (denominator + smooth)

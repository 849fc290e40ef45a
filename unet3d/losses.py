"""Segmentation losses: pure functions of (labels, logits) -> per-example loss.

Shapes: logits [B, *spatial, C]; labels either class indices [B, *spatial]
or one-hot [B, *spatial, C]. Every loss computes in float32 and returns
[B], so the training loop's `tf.nn.compute_average_loss` scales it by the
global batch under any tf.distribute strategy.
"""

from __future__ import annotations

import math

import tensorflow as tf

from unet3d.config import Config, ConfigError


def _one_hot(labels, logits):
  num_classes = logits.shape[-1]
  if labels.shape.rank == logits.shape.rank:
    return tf.cast(labels, tf.float32)
  return tf.one_hot(tf.cast(labels, tf.int32), num_classes, dtype=tf.float32)


def _spatial_axes(logits):
  return list(range(1, logits.shape.rank - 1))


def cross_entropy(labels, logits, **unused):
  """Softmax cross-entropy, mean over voxels: [B]."""
  logits = tf.cast(logits, tf.float32)
  per_voxel = tf.nn.softmax_cross_entropy_with_logits(
      _one_hot(labels, logits), logits)
  return tf.reduce_mean(per_voxel, axis=_spatial_axes(logits))


def dice(labels, logits, smooth=1e-5, include_background=True, **unused):
  """1 - mean soft dice over classes, per example: [B]."""
  logits = tf.cast(logits, tf.float32)
  probs = tf.nn.softmax(logits)
  onehot = _one_hot(labels, logits)
  axes = _spatial_axes(logits)
  intersection = tf.reduce_sum(probs * onehot, axis=axes)
  denominator = tf.reduce_sum(probs + onehot, axis=axes)
  scores = (2.0 * intersection + smooth) / (denominator + smooth)
  if not include_background:
    scores = scores[:, 1:]
  return 1.0 - tf.reduce_mean(scores, axis=-1)


def dice_ce(labels, logits, ce_weight=1.0, dice_weight=1.0, **options):
  """nnU-Net's CE + dice: [B]."""
  return (ce_weight * cross_entropy(labels, logits) +
          dice_weight * dice(labels, logits, **options))


def adaptive_dice32(labels, logits, **unused):
  """The Model Garden's adaptive dice over the whole batch, broadcast to [B].

  d_c = (2 I_c + eps) / (U_c + eps), so a class absent from both label and
  prediction scores 1 rather than the Model Garden's 2.
  """
  logits = tf.cast(logits, tf.float32)
  probs = tf.nn.softmax(logits)
  onehot = _one_hot(labels, logits)
  axes = list(range(logits.shape.rank - 1))
  eps = 1e-7
  intersection = tf.reduce_sum(probs * onehot, axis=axes)
  union = tf.reduce_sum(probs + onehot, axis=axes)
  scores = (2.0 * intersection + eps) / (union + eps)
  weights = tf.exp(-scores)
  num_classes = float(logits.shape[-1])
  loss = 1.0 - tf.reduce_sum(weights * scores) / (num_classes * math.exp(-1.0))
  return tf.fill(tf.shape(logits)[:1], loss)


_LOSSES = {
    'adaptive_dice32': adaptive_dice32,
    'cross_entropy': cross_entropy,
    'dice': dice,
    'dice_ce': dice_ce,
}
LOSS_NAMES = tuple(_LOSSES)


def build_loss_fn(cfg: Config):
  """Returns fn(labels, outputs) -> [B] for the configured loss."""
  if cfg.loss not in _LOSSES:
    raise ConfigError(f'loss: unknown loss {cfg.loss!r}')
  base = _LOSSES[cfg.loss]
  options = {'smooth': cfg.loss_options.smooth,
             'include_background': cfg.loss_options.include_background,
             'ce_weight': cfg.loss_options.ce_weight,
             'dice_weight': cfg.loss_options.dice_weight}

  def loss_fn(labels, outputs):
    logits = outputs['logits'] if isinstance(outputs, dict) else outputs
    return base(labels, logits, **options)

  return loss_fn

"""Label encodings shared by the losses and the metrics.

Labels are class indices [B, *spatial] or one-hot / multi-hot masks
[B, *spatial, C]; the rank relative to the logits tells which.
"""

from __future__ import annotations

from typing import Optional

import tensorflow as tf


def targets_and_mask(labels, logits_rank: int, num_classes: int,
                     ignore_label: Optional[int] = None):
  """float32 one-hot (or multi-label) targets and a voxel mask [..., 1].

  Labels of the logits' rank are taken as one-hot/binary masks already;
  index labels are one-hot encoded, with `ignore_label` voxels masked out.
  """
  labels = tf.convert_to_tensor(labels)
  if labels.shape.rank == logits_rank:
    targets = tf.cast(labels, tf.float32)
    return targets, tf.ones_like(targets[..., :1])
  labels = tf.cast(labels, tf.int32)
  mask = tf.ones_like(labels, tf.float32)
  if ignore_label is not None:
    mask = tf.cast(tf.not_equal(labels, ignore_label), tf.float32)
    labels = tf.where(labels == ignore_label, tf.zeros_like(labels), labels)
  return tf.one_hot(labels, num_classes, dtype=tf.float32), mask[..., None]


def target_masks(labels, logits_rank: int, num_classes: int,
                 ignore_label: Optional[int] = None):
  """Boolean targets [..., C] and kept voxels [..., 1], for exact counting.

  Labels of the logits' rank are one-hot / multi-hot masks (> 0.5 is on);
  index labels are compared with the class ids, and `ignore_label` voxels
  are not kept.
  """
  labels = tf.convert_to_tensor(labels)
  if labels.shape.rank == logits_rank:
    targets = tf.cast(labels, tf.float32) > 0.5
    return targets, tf.ones_like(targets[..., :1])
  labels = tf.cast(labels, tf.int32)[..., None]
  keep = tf.ones_like(labels, tf.bool)
  if ignore_label is not None:
    keep = tf.not_equal(labels, ignore_label)
  return tf.equal(labels, tf.range(num_classes, dtype=tf.int32)), keep

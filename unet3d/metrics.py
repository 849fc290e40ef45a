"""Per-class segmentation metrics from in-graph confusion counts."""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import tensorflow as tf


def confusion_counts(labels, logits, num_classes: int,
                     output_activation: str = 'softmax',
                     ignore_label: Optional[int] = None):
  """Per-example, per-class (tp, fp, fn): float32 [B, C, 3].

  labels: class indices [B, *spatial] (or one-hot [B, *spatial, C]).
  """
  del output_activation
  if labels.shape.rank == logits.shape.rank:
    labels = tf.argmax(labels, axis=-1, output_type=tf.int32)
  labels = tf.cast(labels, tf.int32)
  pred = tf.one_hot(tf.argmax(logits, axis=-1), num_classes)
  true = tf.one_hot(labels, num_classes)
  if ignore_label is not None:
    keep = tf.cast(tf.not_equal(labels, ignore_label), tf.float32)[..., None]
    pred, true = pred * keep, true * keep
  axes = list(range(1, logits.shape.rank - 1))
  tp = tf.reduce_sum(pred * true, axis=axes)
  fp = tf.reduce_sum(pred * (1 - true), axis=axes)
  fn = tf.reduce_sum((1 - pred) * true, axis=axes)
  return tf.stack([tp, fp, fn], axis=-1)


def scores_from_counts(counts: np.ndarray, empty_class: str = 'one'):
  """Per-case, per-class dice [N, C]; NaN where excluded."""
  tp, fp, fn = counts[..., 0], counts[..., 1], counts[..., 2]
  denominator = 2 * tp + fp + fn
  empty = denominator == 0
  with np.errstate(invalid='ignore', divide='ignore'):
    dice = np.where(empty, 1.0 if empty_class == 'one' else np.nan,
                    2 * tp / np.where(empty, 1, denominator))
  return {'dice': dice}


def summarize(counts: np.ndarray, class_names: Optional[Sequence[str]] = None,
              empty_class: str = 'one') -> dict:
  """JSON-ready means over cases of per-class dice."""
  counts = np.asarray(counts, np.float64)
  num_classes = counts.shape[1]
  names = list(class_names) if class_names else [
      f'class_{c}' for c in range(num_classes)]
  dice = scores_from_counts(counts, empty_class)['dice']
  per_class = {names[c]: {'dice': float(np.nanmean(dice[:, c]))}
               for c in range(num_classes)}
  return {
      'per_class': per_class,
      'mean_foreground_dice': float(np.nanmean(
          [per_class[n]['dice'] for n in names[1:]])),
      'empty_class': empty_class,
  }

"""Per-class segmentation metrics from in-graph confusion counts.

`confusion_counts` runs inside the eval step on each replica and returns
per-example integer counts; the host concatenates them across replicas and
batches (`strategy.gather`) and keeps them as int64, so every count is exact
under any strategy and at any volume size. Scores are
computed per case and then averaged over cases, as nnU-Net reports them.

A class absent from both the label and the prediction of a case has no
defined dice. `empty_class='one'` scores it 1 (nnU-Net's convention);
`'exclude'` leaves it out of that class's mean. Every report states which.
"""

from __future__ import annotations

import math
from typing import Optional, Sequence

import numpy as np
import tensorflow as tf

from unet3d import labels as labels_lib

# Index of each count in the last axis of confusion_counts.
TP, FP, FN, TN = 0, 1, 2, 3

# BraTS regions over labels remapped {0,1,2,4} -> {0,1,2,3}:
# whole tumour = 1,2,3 (orig 1,2,4); tumour core = 1,3 (orig 1,4);
# enhancing tumour = 3 (orig 4).
BRATS_REGIONS = {
    'whole_tumor': (1, 2, 3),
    'tumor_core': (1, 3),
    'enhancing_tumor': (3,),
}


def count_dtype(spatial_shape) -> tf.DType:
  """int32 counts (exact to 2**31 - 1 voxels per case and class, and native
  on TPU), int64 when a case of `spatial_shape` could hold more."""
  sizes = [int(d) if d is not None else None for d in spatial_shape]
  if None not in sizes and math.prod(sizes) > np.iinfo(np.int32).max:
    return tf.int64
  return tf.int32


def predictions(logits, output_activation: str = 'softmax'):
  """Hard predictions as bool [B, *spatial, C]: the argmax one-hot
  (softmax) or logits > 0, i.e. p > 0.5, per channel (sigmoid)."""
  logits = tf.convert_to_tensor(logits)
  if output_activation == 'sigmoid':
    return logits > 0
  num_classes = logits.shape[-1]
  return tf.equal(tf.argmax(logits, axis=-1, output_type=tf.int32)[..., None],
                  tf.range(num_classes, dtype=tf.int32))


def label_map_predictions(predicted, num_classes: int,
                          output_activation: str = 'softmax'):
  """Hard label maps as bool one-hot / multi-hot [B, *spatial, C]: softmax
  models' class indices [B, *spatial] are one-hot encoded, sigmoid models'
  masks [B, *spatial, C] are taken as they are (nonzero is on)."""
  predicted = tf.convert_to_tensor(predicted)
  if output_activation == 'sigmoid':
    return tf.not_equal(predicted, 0)
  return tf.equal(tf.cast(predicted, tf.int32)[..., None],
                  tf.range(num_classes, dtype=tf.int32))


def _count(masks, keep, axes, dtype):
  return tf.math.count_nonzero(tf.logical_and(masks, keep), axis=axes,
                               dtype=dtype)


def _confusion(pred, true, keep, axes, dtype):
  """(tp, fp, fn, tn) of boolean masks, stacked on a new last axis."""
  not_pred, not_true = tf.logical_not(pred), tf.logical_not(true)
  return tf.stack([_count(tf.logical_and(pred, true), keep, axes, dtype),
                   _count(tf.logical_and(pred, not_true), keep, axes, dtype),
                   _count(tf.logical_and(not_pred, true), keep, axes, dtype),
                   _count(tf.logical_and(not_pred, not_true), keep, axes,
                          dtype)], axis=-1)


def counts_from_predictions(labels, predicted, num_classes: int,
                            ignore_label: Optional[int] = None):
  """Per-example, per-class (tp, fp, fn, tn) voxel counts [B, C, 4] of hard
  one-hot / multi-hot predictions [B, *spatial, C] (bool, or nonzero = on).

  labels: class indices [B, *spatial], or one-hot / multi-hot
  [B, *spatial, C]. Voxels labelled `ignore_label` are not counted. Counts
  are integers (`count_dtype`), exact at any volume size; a float32 sum
  would stop counting single voxels past 2**24 (one 256^3 crop).
  """
  pred = tf.convert_to_tensor(predicted)
  if pred.dtype != tf.bool:
    pred = tf.not_equal(pred, 0)
  rank = pred.shape.rank
  true, keep = labels_lib.target_masks(labels, rank, num_classes,
                                       ignore_label)
  return _confusion(pred, true, keep, list(range(1, rank - 1)),
                    count_dtype(pred.shape[1:-1]))


def confusion_counts(labels, logits, num_classes: int,
                     output_activation: str = 'softmax',
                     ignore_label: Optional[int] = None):
  """Per-example, per-class (tp, fp, fn, tn) voxel counts: integer [B, C, 4].

  Predictions are the argmax (softmax) or logits > 0, i.e. p > 0.5
  (sigmoid); see `counts_from_predictions`.
  """
  return counts_from_predictions(
      labels, predictions(logits, output_activation), num_classes,
      ignore_label)


def region_counts_from_classes(labels, predicted_classes,
                               regions=BRATS_REGIONS):
  """Integer (tp, fp, fn, tn) per example for unions of classes: [B, R, 4].

  labels, predicted_classes: class indices [B, *spatial]. A region is
  predicted where the predicted class falls in its classes.
  """
  labels = tf.cast(tf.convert_to_tensor(labels), tf.int32)
  pred = tf.cast(tf.convert_to_tensor(predicted_classes), tf.int32)
  axes = list(range(1, labels.shape.rank))
  dtype = count_dtype(labels.shape[1:])
  keep = tf.ones_like(labels, tf.bool)
  out = []
  for classes in regions.values():
    t = tf.reduce_any(tf.stack([labels == c for c in classes]), axis=0)
    p = tf.reduce_any(tf.stack([pred == c for c in classes]), axis=0)
    out.append(_confusion(p, t, keep, axes, dtype))
  return tf.stack(out, axis=1)


def region_counts(labels, logits, regions=BRATS_REGIONS):
  """`region_counts_from_classes` of the softmax argmax of `logits`."""
  return region_counts_from_classes(
      labels, tf.argmax(tf.convert_to_tensor(logits), axis=-1), regions)


def scores_from_counts(counts: np.ndarray, empty_class: str = 'one'
                      ) -> dict[str, np.ndarray]:
  """Per-case, per-class scores from counts [N, C, 3 or 4].

  Returns dice, iou, precision and recall, each [N, C]. Where a score's
  denominator is 0 (nothing predicted and nothing labelled for dice and IoU;
  nothing predicted for precision; nothing labelled for recall) the score is
  1 with empty_class='one' and NaN with 'exclude'.
  """
  if empty_class not in ('one', 'exclude'):
    raise ValueError(f"empty_class: expected 'one' or 'exclude', got "
                     f'{empty_class!r}')
  counts = np.asarray(counts, np.float64)
  tp, fp, fn = counts[..., TP], counts[..., FP], counts[..., FN]
  fill = 1.0 if empty_class == 'one' else np.nan

  def ratio(numerator, denominator):
    safe = np.where(denominator > 0, denominator, 1.0)
    return np.where(denominator > 0, numerator / safe, fill)

  return {
      'dice': ratio(2 * tp, 2 * tp + fp + fn),
      'iou': ratio(tp, tp + fp + fn),
      'precision': ratio(tp, tp + fp),
      'recall': ratio(tp, tp + fn),
  }


def _mean(values: np.ndarray) -> Optional[float]:
  values = values[~np.isnan(values)]
  return float(values.mean()) if values.size else None


def summarize(counts: np.ndarray, class_names: Optional[Sequence[str]] = None,
              empty_class: str = 'one', include_background: bool = False,
              region_counts_array: Optional[np.ndarray] = None,
              region_names: Optional[Sequence[str]] = None) -> dict:
  """A JSON-ready report: per-class means over cases of dice, IoU,
  precision and recall; the mean foreground dice; voxel accuracy.

  counts: [N, C, 4] from confusion_counts. `mean_foreground_dice` averages
  classes 1.. (or all classes when include_background). A class whose score
  is excluded in every case reports None.
  """
  counts = np.asarray(counts, np.float64)
  if counts.ndim != 3:
    raise ValueError(f'counts: expected [cases, classes, 4], got shape '
                     f'{counts.shape}')
  num_classes = counts.shape[1]
  names = list(class_names) if class_names else [
      f'class_{c}' for c in range(num_classes)]
  if len(names) != num_classes:
    raise ValueError(f'class_names: expected {num_classes} names, got '
                     f'{len(names)}')
  scores = scores_from_counts(counts, empty_class)
  per_class = {
      names[c]: {metric: _mean(values[:, c])
                 for metric, values in scores.items()}
      for c in range(num_classes)
  }
  first = 0 if include_background or num_classes == 1 else 1
  fg = [per_class[n]['dice'] for n in names[first:]
        if per_class[n]['dice'] is not None]
  report = {
      'per_class': per_class,
      'mean_foreground_dice': float(np.mean(fg)) if fg else None,
      'empty_class': empty_class,
      'num_cases': int(counts.shape[0]),
  }
  if counts.shape[-1] > TN:
    # Reported for exclusive (softmax) classes: every voxel is a TP or TN of
    # each class, so every voxel is a TP or TN of each class, so
    # accuracy = sum of TP over classes / voxels.
    voxels = counts[:, 0, :].sum()
    report['voxel_accuracy'] = float(counts[..., TP].sum() / max(voxels, 1.0))
  if region_counts_array is not None:
    region_scores = scores_from_counts(region_counts_array, empty_class)
    names_r = list(region_names or BRATS_REGIONS)
    report['regions'] = {
        names_r[r]: {m: _mean(v[:, r]) for m, v in region_scores.items()}
        for r in range(len(names_r))}
  return report

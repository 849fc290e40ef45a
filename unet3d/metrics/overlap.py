"""Per-class segmentation metrics from in-graph confusion counts.

`confusion_counts` runs inside the eval step on each replica and returns
per-example counts; the host concatenates them across replicas and batches
(`strategy.gather`), so every score is exact under any strategy. Scores are
computed per case and then averaged over cases, as nnU-Net reports them.

A class absent from both the label and the prediction of a case has no
defined dice. `empty_class='one'` scores it 1 (nnU-Net's convention);
`'exclude'` leaves it out of that class's mean. Every report states which.
"""

from __future__ import annotations

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


def predictions(logits, output_activation: str = 'softmax'):
  """Hard predictions as float32 [B, *spatial, C] one-hot / multi-hot."""
  logits = tf.cast(logits, tf.float32)
  if output_activation == 'sigmoid':
    return tf.cast(logits > 0.0, tf.float32)
  return tf.one_hot(tf.argmax(logits, axis=-1), logits.shape[-1],
                    dtype=tf.float32)


def label_map_predictions(predicted, num_classes: int,
                          output_activation: str = 'softmax'):
  """Hard label maps as float32 one-hot / multi-hot [B, *spatial, C]:
  softmax models' class indices [B, *spatial] are one-hot encoded, sigmoid
  models' masks [B, *spatial, C] are cast."""
  predicted = tf.convert_to_tensor(predicted)
  if output_activation == 'sigmoid':
    return tf.cast(predicted, tf.float32)
  return tf.one_hot(tf.cast(predicted, tf.int32), num_classes,
                    dtype=tf.float32)


def counts_from_predictions(labels, predicted, num_classes: int,
                            ignore_label: Optional[int] = None):
  """Per-example, per-class (tp, fp, fn, tn) voxel counts [B, C, 4] of hard
  one-hot / multi-hot predictions [B, *spatial, C].

  labels: class indices [B, *spatial], or one-hot / multi-hot
  [B, *spatial, C]. Voxels labelled `ignore_label` are not counted.
  """
  pred = tf.cast(predicted, tf.float32)
  rank = pred.shape.rank
  true, keep = labels_lib.targets_and_mask(labels, rank, num_classes,
                                           ignore_label)
  axes = list(range(1, rank - 1))
  tp = tf.reduce_sum(pred * true * keep, axis=axes)
  fp = tf.reduce_sum(pred * (1 - true) * keep, axis=axes)
  fn = tf.reduce_sum((1 - pred) * true * keep, axis=axes)
  tn = tf.reduce_sum((1 - pred) * (1 - true) * keep, axis=axes)
  return tf.stack([tp, fp, fn, tn], axis=-1)


def confusion_counts(labels, logits, num_classes: int,
                     output_activation: str = 'softmax',
                     ignore_label: Optional[int] = None):
  """Per-example, per-class (tp, fp, fn, tn) voxel counts: float32 [B, C, 4].

  Predictions are the argmax (softmax) or logits > 0, i.e. p > 0.5
  (sigmoid); see `counts_from_predictions`.
  """
  return counts_from_predictions(
      labels, predictions(tf.convert_to_tensor(logits), output_activation),
      num_classes, ignore_label)


def region_counts_from_classes(labels, predicted_classes,
                               regions=BRATS_REGIONS):
  """(tp, fp, fn, tn) per example for unions of classes: [B, R, 4].

  labels, predicted_classes: class indices [B, *spatial]. A region is
  predicted where the predicted class falls in its classes.
  """
  labels = tf.cast(tf.convert_to_tensor(labels), tf.int32)
  pred = tf.cast(tf.convert_to_tensor(predicted_classes), tf.int32)
  axes = list(range(1, labels.shape.rank))
  out = []
  for classes in regions.values():
    t = tf.reduce_any(tf.stack([labels == c for c in classes]), axis=0)
    p = tf.reduce_any(tf.stack([pred == c for c in classes]), axis=0)
    t, p = tf.cast(t, tf.float32), tf.cast(p, tf.float32)
    out.append(tf.stack([tf.reduce_sum(p * t, axes),
                         tf.reduce_sum(p * (1 - t), axes),
                         tf.reduce_sum((1 - p) * t, axes),
                         tf.reduce_sum((1 - p) * (1 - t), axes)], axis=-1))
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

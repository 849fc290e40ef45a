"""Tests for unet3d/overlap.py against numpy counts."""

import numpy as np
import pytest
import tensorflow as tf

from unet3d.evaluation import report as report_lib
from unet3d.metrics import overlap

RNG = np.random.default_rng(3)


def np_counts(pred, true, num_classes):
  out = []
  for p, t in zip(pred, true):
    row = []
    for c in range(num_classes):
      pc, tc = p == c, t == c
      row.append([(pc & tc).sum(), (pc & ~tc).sum(), (~pc & tc).sum(),
                  (~pc & ~tc).sum()])
    out.append(row)
  return np.array(out, np.float64)


def test_confusion_counts_match_numpy():
  logits = RNG.normal(size=(3, 5, 6, 4, 4)).astype(np.float32)
  labels = RNG.integers(0, 4, size=(3, 5, 6, 4))
  got = overlap.confusion_counts(tf.constant(labels), tf.constant(logits),
                                 4).numpy()
  np.testing.assert_array_equal(got, np_counts(logits.argmax(-1), labels, 4))


def test_ignore_label_is_not_counted():
  logits = RNG.normal(size=(2, 4, 4, 4, 3)).astype(np.float32)
  labels = RNG.integers(0, 3, size=(2, 4, 4, 4))
  labels[:, 0] = 255
  got = overlap.confusion_counts(tf.constant(labels), tf.constant(logits), 3,
                                 ignore_label=255).numpy()
  expected = np_counts(logits[:, 1:].argmax(-1), labels[:, 1:], 3)
  np.testing.assert_array_equal(got, expected)


def test_sigmoid_counts_threshold_each_channel():
  logits = RNG.normal(size=(2, 4, 4, 4, 3)).astype(np.float32)
  targets = (RNG.random((2, 4, 4, 4, 3)) > 0.5).astype(np.float32)
  got = overlap.confusion_counts(tf.constant(targets), tf.constant(logits), 3,
                                 output_activation='sigmoid').numpy()
  p, t = logits > 0, targets > 0.5
  axes = (1, 2, 3)
  expected = np.stack([(p & t).sum(axes), (p & ~t).sum(axes),
                       (~p & t).sum(axes), (~p & ~t).sum(axes)], -1)
  np.testing.assert_array_equal(got, expected)


def test_scores_hand_computed_and_empty_conventions():
  # case 0, class 1: tp 3, fp 1, fn 2 -> dice 6/9, iou 3/6, prec 3/4, rec 3/5
  # case 0, class 2: empty in label and prediction
  counts = np.array([[[50, 2, 1, 10], [3, 1, 2, 60], [0, 0, 0, 66]]],
                    np.float64)
  one = overlap.scores_from_counts(counts, 'one')
  assert one['dice'][0, 1] == pytest.approx(6 / 9)
  assert one['iou'][0, 1] == pytest.approx(0.5)
  assert one['precision'][0, 1] == pytest.approx(0.75)
  assert one['recall'][0, 1] == pytest.approx(0.6)
  assert one['dice'][0, 2] == 1.0
  excluded = overlap.scores_from_counts(counts, 'exclude')
  assert np.isnan(excluded['dice'][0, 2])


def test_summarize_means_over_cases_and_states_the_convention():
  counts = np.array([
      [[10, 0, 0, 0], [4, 0, 0, 0], [0, 0, 0, 4]],   # class 2 empty
      [[10, 0, 0, 0], [1, 1, 0, 0], [2, 0, 2, 0]],
  ], np.float64)
  one = overlap.summarize(counts, ['bg', 'a', 'b'], empty_class='one')
  assert one['per_class']['a']['dice'] == pytest.approx((1 + 2 / 3) / 2)
  assert one['per_class']['b']['dice'] == pytest.approx((1 + 4 / 6) / 2)
  assert one['mean_foreground_dice'] == pytest.approx(
      ((1 + 2 / 3) / 2 + (1 + 4 / 6) / 2) / 2)
  assert one['empty_class'] == 'one' and one['num_cases'] == 2
  excl = overlap.summarize(counts, ['bg', 'a', 'b'], empty_class='exclude')
  assert excl['per_class']['b']['dice'] == pytest.approx(4 / 6)
  assert excl['empty_class'] == 'exclude'
  text = report_lib.format_report(excl)
  assert 'counts as: exclude' in text and '0.6667' in text


def test_voxel_accuracy():
  logits = RNG.normal(size=(2, 4, 4, 4, 3)).astype(np.float32)
  labels = RNG.integers(0, 3, size=(2, 4, 4, 4))
  counts = overlap.confusion_counts(tf.constant(labels), tf.constant(logits),
                                    3).numpy()
  report = overlap.summarize(counts)
  assert report['voxel_accuracy'] == pytest.approx(
      (logits.argmax(-1) == labels).mean())


def test_brats_regions():
  labels = np.array([[0, 1, 2, 3, 3, 0]])[:, :, None, None]
  pred = np.array([[0, 1, 1, 3, 0, 2]])[:, :, None, None]
  logits = np.eye(4)[pred].astype(np.float32) * 5
  got = overlap.region_counts(tf.constant(labels), tf.constant(logits)).numpy()
  # whole tumour {1,2,3}: true at 1..4, predicted at 1,2,3,5
  np.testing.assert_array_equal(got[0, 0], [3, 1, 1, 1])
  # tumour core {1,3}: true at 1,3,4; predicted at 1,2,3
  np.testing.assert_array_equal(got[0, 1], [2, 1, 1, 2])
  # enhancing {3}: true at 3,4; predicted at 3
  np.testing.assert_array_equal(got[0, 2], [1, 0, 1, 4])
  report = overlap.summarize(
      overlap.confusion_counts(tf.constant(labels), tf.constant(logits),
                               4).numpy(), region_counts_array=got)
  assert report['regions']['whole_tumor']['dice'] == pytest.approx(6 / 8)
  assert report['regions']['enhancing_tumor']['dice'] == pytest.approx(2 / 3)


def test_bad_counts_shape_is_a_clear_error():
  with pytest.raises(ValueError, match=r'counts: expected \[cases, classes'):
    overlap.summarize(np.zeros((3, 4)))


def test_counts_stay_exact_past_2_to_the_24_voxels():
  """97 x 257 x 673 = 2**24 + 1 voxels, all labelled and predicted
  foreground: a float32 sum gives 2**24, integer counts the true number
  (one whole CT easily exceeds 2**24 voxels)."""
  n = 97 * 257 * 673
  assert n == 2**24 + 1 and int(np.float32(n)) != n
  shape = (1, 97, 257, 673)
  labels = tf.ones(shape, tf.uint8)
  logits = tf.ones(shape + (1,))
  counts = overlap.confusion_counts(labels[..., None], logits, 1,
                                    output_activation='sigmoid')
  assert counts.dtype.is_integer
  assert counts.numpy().tolist() == [[[n, 0, 0, 0]]]
  predicted = overlap.label_map_predictions(labels, 2)
  counts = overlap.counts_from_predictions(labels, predicted, 2).numpy()
  assert counts.tolist() == [[[0, 0, 0, n], [n, 0, 0, 0]]]
  regions = overlap.region_counts_from_classes(labels * 3, labels * 3).numpy()
  assert regions[0, :, 0].tolist() == [n, n, n]


def test_count_dtype_widens_only_past_int32():
  assert overlap.count_dtype([512, 512, 300]) == tf.int32
  assert overlap.count_dtype([2048, 1024, 1024]) == tf.int64
  assert overlap.count_dtype([None, 512, 512]) == tf.int32

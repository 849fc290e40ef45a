"""Tests for unet3d/inference/slab_aggregation.py: slab-by-slab labels against
the whole-volume sliding window on volumes spanning several slabs (smooth
random predict_fn, Gaussian and constant weights, overlaps 0.5 and 0.25,
mirroring), softmax and sigmoid, padding, and the memory bound's
arithmetic."""

import numpy as np
import pytest
import tensorflow as tf

from unet3d.inference import slab_aggregation as sa
from unet3d.inference import sliding_window as sw

PATCH = (8, 8, 8)
CLASSES = 3
_W = np.array([[3.0, 0.0, -2.0], [0.0, 3.0, -2.0]], np.float32)


def smooth_logits(x):
  """Smooth in space (a 3x3x3 blur) and dependent on the window (cumulative
  sums along two axes): neighbouring windows disagree, flips change it."""
  channels = x.shape[-1]
  kernel = (np.ones([3, 3, 3, 1, 1]) / 27.0 * np.eye(channels)).astype(
      np.float32)
  blurred = tf.nn.conv3d(x, kernel, [1] * 5, 'SAME')
  context = (tf.math.cumsum(blurred[..., :1], axis=1) * 0.1 -
             tf.math.cumsum(blurred[..., -1:], axis=3) * 0.05)
  # On the first class only: softmax ignores a shift of every class.
  shift = tf.concat([context, tf.zeros_like(context),
                     tf.zeros_like(context)], -1)
  return tf.einsum('...c,ck->...k', blurred, _W) + shift


@tf.function
def softmax_fn(x):
  return tf.nn.softmax(smooth_logits(x))


@tf.function
def sigmoid_fn(x):
  return tf.sigmoid(smooth_logits(x))


def smooth_image(shape, seed=0):
  """A random field blurred in numpy: smooth like an image, not noise."""
  noise = np.random.default_rng(seed).normal(size=tuple(shape) + (2,))
  for axis in range(3):
    noise = (np.roll(noise, 1, axis) + noise + np.roll(noise, -1, axis)) / 3
  return (noise * 3).astype(np.float32)


def whole_volume(predict_fn, image, options):
  return sw.sliding_window_inference(predict_fn, image, options).numpy()


@pytest.mark.parametrize('weighting', ['gaussian', 'constant'])
@pytest.mark.parametrize('overlap', [0.5, 0.25])
@pytest.mark.parametrize('mirror_axes', [(), (0, 1, 2)])
def test_softmax_labels_equal_whole_volume(weighting, overlap, mirror_axes):
  # Axis 0 is the longest: 5-7 rows of windows, several slabs.
  image = smooth_image((37, 20, 13))
  options = sw.WindowOptions(PATCH, overlap=overlap, batch_size=3,
                             weighting=weighting, mirror_axes=mirror_axes)
  expected = whole_volume(softmax_fn, image, options)
  got = sa.SlabSegmenter(softmax_fn, options, 2, 'softmax')(
      image, with_probabilities=True)
  assert got.labels.dtype == np.uint8 and got.labels.shape == image.shape[:3]
  # Slab axis 0: the same additions in the same order, bitwise.
  np.testing.assert_array_equal(got.labels, np.argmax(expected, -1))
  np.testing.assert_array_equal(got.probabilities,
                                expected.astype(np.float16))
  assert len(set(got.labels.reshape(-1))) == CLASSES  # not trivial


@pytest.mark.parametrize('overlap', [0.5, 0.25])
def test_other_slab_axis_matches_to_rounding(overlap):
  # Axis 1 is the longest: additions into a voxel come in another order.
  image = smooth_image((13, 37, 20), seed=1)
  options = sw.WindowOptions(PATCH, overlap=overlap, batch_size=2,
                             mirror_axes=(1,))
  assert sa.slab_axis(image.shape[:3]) == 1
  expected = whole_volume(softmax_fn, image, options)
  got = sa.SlabSegmenter(softmax_fn, options, 2, 'softmax')(
      image, with_probabilities=True)
  np.testing.assert_array_equal(got.labels, np.argmax(expected, -1))
  np.testing.assert_allclose(got.probabilities.astype(np.float32), expected,
                             atol=1e-3)


def test_sigmoid_masks_and_padding():
  # Axis 2 shorter than the patch: padded with pad_value and cropped back.
  image = smooth_image((29, 11, 5), seed=2)
  options = sw.WindowOptions(PATCH, overlap=0.5, batch_size=4,
                             pad_value=-1.0)
  expected = whole_volume(sigmoid_fn, image, options)
  got = sa.SlabSegmenter(sigmoid_fn, options, 2, 'sigmoid')(image)
  assert got.probabilities is None
  assert got.labels.shape == image.shape[:3] + (CLASSES,)
  np.testing.assert_array_equal(got.labels, (expected > 0.5).astype(np.uint8))


def test_host_predict_fn():
  """A numpy predict_fn takes the host path, as in the whole volume."""
  image = smooth_image((20, 9, 9), seed=4)
  options = sw.WindowOptions(PATCH, overlap=0.5, batch_size=2)

  def numpy_fn(batch):
    return softmax_fn(tf.constant(batch)).numpy()

  expected = whole_volume(numpy_fn, image, options)
  got = sa.SlabSegmenter(numpy_fn, options, 2, 'softmax')(image)
  np.testing.assert_array_equal(got.labels, np.argmax(expected, -1))


def test_slab_bytes_is_a_fraction_of_the_volume():
  options = sw.WindowOptions((64, 64, 64), overlap=0.5)
  slab = sa.slab_bytes((512, 512, 300), options, 14)
  whole = 512 * 512 * 300 * 15 * 4
  assert slab == 4 * 15 * 512 * 300 * (64 + 32)
  assert slab < whole / 5


def test_bad_activation():
  with pytest.raises(ValueError, match='activation'):
    sa.SlabSegmenter(softmax_fn, sw.WindowOptions(PATCH), 2, 'relu')

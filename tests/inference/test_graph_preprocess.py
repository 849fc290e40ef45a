"""Tests for unet3d/inference/graph_preprocess.py against the converter's
numpy functions."""

import numpy as np
import pytest
import tensorflow as tf

from unet3d.inference import graph_preprocess
from unet3d.preprocess import preprocessing as pp


def _volume(shape=(14, 11, 9), channels=2, seed=0):
  rng = np.random.default_rng(seed)
  image = rng.normal(200, 80, size=shape + (channels,)).astype(np.float32)
  image[:3] = 0          # a zero slab
  image[5:7, 2:4, 1:3, 0] = 0  # zero in one channel only: still nonzero
  image[10:, 8:, :, :] = 0
  return image


def test_nonzero_box_matches_numpy():
  for image in [_volume(), np.zeros((5, 6, 7, 1), np.float32),
                np.ones((4, 3, 2, 2), np.float32)]:
    start, stop = graph_preprocess.nonzero_box(tf.constant(image))
    want_start, want_stop = pp.nonzero_bbox(image)
    np.testing.assert_array_equal(start.numpy(), want_start)
    np.testing.assert_array_equal(stop.numpy(), want_stop)
  image = np.zeros((9, 9, 9, 1), np.float32)
  image[2, 7, 4] = 1
  start, stop = graph_preprocess.nonzero_box(tf.constant(image))
  assert start.numpy().tolist() == [2, 7, 4]
  assert stop.numpy().tolist() == [3, 8, 5]


@pytest.mark.parametrize('norms', [
    (pp.ChannelNorm('ct', clip_low=100.0, clip_high=300.0, mean=180.0,
                    std=55.0), pp.ChannelNorm('none')),
    (pp.ChannelNorm('zscore', nonzero_mask=True),
     pp.ChannelNorm('zscore', nonzero_mask=False)),
    (pp.ChannelNorm('zscore', nonzero_mask=True),
     pp.ChannelNorm('ct', clip_low=0.0, clip_high=250.0, mean=100.0,
                    std=1e-12)),
])
def test_normalize_matches_the_converter(norms):
  image = _volume()
  mask = np.any(image != 0, axis=-1)
  want, _, _ = pp.normalize(image, norms, mask)
  got = graph_preprocess.normalize(tf.constant(image), norms).numpy()
  assert got.dtype == np.float32
  np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
  # Traced with unknown sizes, as in the SavedModel.
  traced = tf.function(lambda x: graph_preprocess.normalize(x, norms),
                       input_signature=[tf.TensorSpec([None] * 3 + [2])])
  np.testing.assert_allclose(traced(image).numpy(), want, rtol=1e-6,
                             atol=1e-6)


def test_zscore_of_an_empty_mask_uses_every_voxel():
  image = np.zeros((4, 4, 4, 1), np.float32)
  got = graph_preprocess.normalize(
      tf.constant(image), [pp.ChannelNorm('zscore', nonzero_mask=True)])
  want, _, _ = pp.normalize(image, [pp.ChannelNorm('zscore',
                                                   nonzero_mask=True)],
                            np.zeros((4, 4, 4), bool))
  np.testing.assert_array_equal(got.numpy(), want)


def test_channel_count_must_match():
  with pytest.raises(ValueError, match='1 channel normalisations for 2'):
    graph_preprocess.normalize(tf.zeros([4, 4, 4, 2]),
                               [pp.ChannelNorm('none')])

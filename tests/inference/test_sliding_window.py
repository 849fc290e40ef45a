"""Tests for unet3d/inference/sliding_window.py."""

import numpy as np
import pytest

from unet3d.inference import sliding_window as sw


def test_window_starts_cover_the_axis_with_the_overlap():
  assert sw.window_starts(10, 16, 0.5) == [0]
  assert sw.window_starts(16, 16, 0.5) == [0]
  assert sw.window_starts(32, 16, 0.5) == [0, 8, 16]
  starts = sw.window_starts(37, 16, 0.5)
  assert starts[0] == 0 and starts[-1] == 37 - 16
  assert all(b - a <= 8 for a, b in zip(starts, starts[1:]))
  with pytest.raises(ValueError, match='overlap: must be in'):
    sw.window_starts(32, 16, 1.0)


def test_gaussian_map_matches_the_formula():
  weights = sw.gaussian_importance_map((9, 5), sigma_scale=0.25)
  z = np.arange(9) - 4.0
  y = np.arange(5) - 2.0
  expected = np.exp(-0.5 * ((z[:, None] / 2.25)**2 + (y[None, :] / 1.25)**2))
  np.testing.assert_allclose(weights, expected / expected.max(), rtol=1e-5)
  assert weights.min() > 0


@pytest.mark.parametrize('weighting', ['gaussian', 'constant'])
@pytest.mark.parametrize('shape', [(20, 24, 18), (12, 40, 16)])
def test_a_voxelwise_function_is_reproduced_exactly(weighting, shape):
  # A voxel-wise predict_fn has the same output in every window, so any
  # weighted average of the windows must equal it everywhere.
  rng = np.random.default_rng(0)
  image = rng.normal(size=shape + (2,)).astype(np.float32)

  def predict(batch):
    return np.concatenate([batch.sum(-1, keepdims=True),
                           np.tanh(batch[..., :1])], axis=-1)

  out = sw.sliding_window_inference(predict, image, (16, 16, 16), overlap=0.5,
                                    batch_size=3, weighting=weighting)
  assert out.shape == shape + (2,)
  np.testing.assert_allclose(out, predict(image[None])[0], rtol=1e-5,
                             atol=1e-5)


def test_constant_weighting_averages_overlapping_windows():
  # predict_fn returns the window's own mean; with constant weights the
  # result at a voxel is the mean over the windows that cover it.
  image = np.arange(8, dtype=np.float32).reshape(8, 1)

  def predict(batch):
    return np.broadcast_to(batch.mean(axis=(1, 2), keepdims=True), batch.shape)

  out = sw.sliding_window_inference(predict, image, (4,), overlap=0.5,
                                    weighting='constant')
  # windows start at 0, 2, 4 with means 1.5, 3.5, 5.5
  expected = [1.5, 1.5, 2.5, 2.5, 4.5, 4.5, 5.5, 5.5]
  np.testing.assert_allclose(out[:, 0], expected)


def test_volume_smaller_than_the_window_is_padded_and_cropped_back():
  image = np.ones((5, 6, 7, 1), np.float32)
  seen = []

  def predict(batch):
    seen.append(batch.shape)
    return batch * 2

  out = sw.sliding_window_inference(predict, image, (8, 8, 8))
  assert seen == [(1, 8, 8, 8, 1)]
  assert out.shape == (5, 6, 7, 1)
  np.testing.assert_allclose(out, 2.0)


def test_bad_arguments_name_the_argument():
  image = np.zeros((8, 8, 8, 1), np.float32)
  with pytest.raises(ValueError, match='patch_size: expected 3 sizes'):
    sw.sliding_window_inference(lambda b: b, image, (8, 8))
  with pytest.raises(ValueError, match='weighting: expected'):
    sw.sliding_window_inference(lambda b: b, image, (8, 8, 8), weighting='x')

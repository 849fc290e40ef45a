"""unet3d/ms_ssim.py against `tf.image.ssim_multiscale` on 2D images.

Both use an 11-tap Gaussian window of sigma 1.5, k1 = 0.01, k2 = 0.03,
valid filtering, 2x average pooling between five scales, contrast-structure
at the first four scales and SSIM at the last. Ours renormalises the scale
weights to sum to 1 (the paper's five sum to 1.0001), so TF gets those
weights; TF averages over channels, ours returns [B, C]. Sizes are even at
every scale (TF pads odd sizes symmetrically before pooling; ours drops the
last row).
"""

import numpy as np
import pytest
import tensorflow as tf

from unet3d import ms_ssim


def _pair(seed, shape, noise):
  rng = np.random.default_rng(seed)
  x = rng.uniform(size=shape).astype(np.float32)
  x = tf.nn.avg_pool2d(x, 5, 1, 'SAME').numpy()  # some structure
  y = np.clip(x + noise * rng.normal(size=shape), 0, 1).astype(np.float32)
  return x, y


def _reference(x, y):
  weights = np.asarray(ms_ssim.MS_SSIM_WEIGHTS, np.float64)
  return tf.image.ssim_multiscale(
      x, y, max_val=1.0, power_factors=tuple(weights / weights.sum()),
      filter_size=11, filter_sigma=1.5, k1=0.01, k2=0.03).numpy()


@pytest.mark.parametrize('shape,noise', [((2, 176, 192, 1), 0.05),
                                         ((1, 192, 176, 1), 0.2),
                                         ((2, 176, 176, 3), 0.1)])
def test_ms_ssim_matches_tf_image_ssim_multiscale(shape, noise):
  x, y = _pair(0, shape, noise)
  ours = ms_ssim.ms_ssim(x, y).numpy()
  assert ours.shape == (shape[0], shape[-1])
  np.testing.assert_allclose(ours.mean(axis=-1), _reference(x, y),
                             rtol=0, atol=3e-5)


def test_identical_images_score_one_in_both():
  x, _ = _pair(1, (1, 176, 176, 1), 0.0)
  np.testing.assert_allclose(ms_ssim.ms_ssim(x, x).numpy()[:, 0], 1.0,
                             atol=1e-5)
  np.testing.assert_allclose(_reference(x, x), 1.0, atol=1e-5)

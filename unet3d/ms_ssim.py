"""Multi-scale structural similarity (Wang et al. 2003) in 2D or 3D, in TF ops.

The structural term of UNet 3+'s hybrid loss, computed on probabilities and
one-hot targets per class channel.
"""

from __future__ import annotations


from typing import Sequence

import numpy as np
import tensorflow as tf

MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)


def _gaussian_kernel(size: int, sigma: float, rank: int) -> np.ndarray:
  coords = np.arange(size, dtype=np.float64) - (size - 1) / 2.0
  g = np.exp(-0.5 * (coords / sigma)**2)
  g /= g.sum()
  kernel = g
  for _ in range(rank - 1):
    kernel = np.multiply.outer(kernel, g)
  return kernel.astype(np.float32)


def _filter(x, kernel):
  """Valid Gaussian filtering of [B, *spatial, C], channel by channel."""
  rank = x.shape.rank - 2
  channels = x.shape[-1]
  # Move channels into the batch axis so one single-channel conv serves all.
  perm = [0, rank + 1] + list(range(1, rank + 1))
  moved = tf.transpose(x, perm)
  shape = tf.shape(moved)
  flat = tf.reshape(moved, tf.concat([[-1], shape[2:], [1]], 0))
  k = tf.constant(kernel[..., None, None])
  conv = tf.nn.conv3d if rank == 3 else tf.nn.conv2d
  strides = [1] * (rank + 2)
  out = conv(flat, k, strides, 'VALID')
  out_shape = tf.shape(out)
  out = tf.reshape(out, tf.concat([[shape[0], channels], out_shape[1:-1]], 0))
  inverse = [0] + list(range(2, rank + 2)) + [1]
  return tf.transpose(out, inverse)


def _ssim_terms(x, y, kernel, data_range=1.0):
  """Mean luminance term and contrast-structure term per [B, C]."""
  c1, c2 = (0.01 * data_range)**2, (0.03 * data_range)**2
  mu_x, mu_y = _filter(x, kernel), _filter(y, kernel)
  sigma_x = _filter(x * x, kernel) - mu_x**2
  sigma_y = _filter(y * y, kernel) - mu_y**2
  sigma_xy = _filter(x * y, kernel) - mu_x * mu_y
  luminance = (2 * mu_x * mu_y + c1) / (mu_x**2 + mu_y**2 + c1)
  cs = (2 * sigma_xy + c2) / (sigma_x + sigma_y + c2)
  axes = list(range(1, x.shape.rank - 1))
  return (tf.reduce_mean(luminance * cs, axis=axes),
          tf.reduce_mean(cs, axis=axes))


def ms_ssim(x, y, window_size: int = 11, sigma: float = 1.5,
            weights: Sequence[float] = MS_SSIM_WEIGHTS):
  """Multi-scale SSIM (Wang et al. 2003) of [B, *spatial, C] images in [0, 1].

  A Gaussian window (shrunk to the smallest side when that is smaller), the
  five scale weights of the paper, 2x average pooling between scales; when
  the input is too small for five scales, the coarsest scales are dropped
  and the remaining weights renormalised. Returns [B, C].
  """
  x = tf.cast(x, tf.float32)
  y = tf.cast(y, tf.float32)
  rank = x.shape.rank - 2
  smallest = min(int(s) for s in x.shape[1:-1])
  size = min(window_size, smallest)
  scales = 1
  while (scales < len(weights) and
         smallest // 2**scales >= min(window_size, smallest)):
    scales += 1
  used = np.asarray(weights[:scales], np.float64)
  used = used / used.sum()
  kernel = _gaussian_kernel(size, sigma * size / window_size, rank)
  pool = tf.nn.avg_pool3d if rank == 3 else tf.nn.avg_pool2d
  result = None
  for scale in range(scales):
    ssim, cs = _ssim_terms(x, y, kernel)
    # Negative contrast-structure values have no real power; clamp as the
    # usual implementations do.
    term = tf.maximum(ssim if scale == scales - 1 else cs, 1e-6)**float(
        used[scale])
    result = term if result is None else result * term
    if scale < scales - 1:
      x = pool(x, 2, 2, 'VALID')
      y = pool(y, 2, 2, 'VALID')
  return result



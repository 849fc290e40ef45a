"""Where the windows of a sliding window go and how they are weighted: the
importance map, nnU-Net's window placement per axis (static and for a
dynamic size), and the flips of test-time mirroring. Pure functions of the
window settings; `unet3d.inference.sliding_window` runs the loop.
"""

from __future__ import annotations

import itertools
import math
from typing import Sequence

import numpy as np
import tensorflow as tf

WEIGHTINGS = ('gaussian', 'constant')




def gaussian_importance_map(patch_size: Sequence[int],
                            sigma_scale: float = 0.125) -> np.ndarray:
  """A Gaussian centred on the patch, sigma = sigma_scale * size per axis.

  Returns float32 [*patch_size], maximum 1, strictly positive everywhere (so
  every voxel of a covered volume gets weight); nnU-Net's `compute_gaussian`
  up to its value scaling.
  """
  axes = []
  for size in patch_size:
    sigma = max(sigma_scale * size, 1e-6)
    coords = np.arange(size, dtype=np.float64) - (size - 1) / 2.0
    axes.append(np.exp(-0.5 * (coords / sigma)**2))
  weights = axes[0]
  for a in axes[1:]:
    weights = np.multiply.outer(weights, a)
  weights = weights / weights.max()
  # Far corners underflow towards 0; a floor keeps the division safe.
  floor = weights[weights > 0].min()
  return np.maximum(weights, floor).astype(np.float32)


def importance_map(patch_size: Sequence[int], weighting: str = 'gaussian',
                   sigma_scale: float = 0.125) -> np.ndarray:
  """float32 [*patch_size]: the Gaussian map, or ones for 'constant'."""
  if weighting not in WEIGHTINGS:
    raise ValueError(f"weighting: expected 'gaussian' or 'constant', got "
                     f'{weighting!r}')
  if weighting == 'constant':
    return np.ones(tuple(patch_size), np.float32)
  return gaussian_importance_map(patch_size, sigma_scale)


def step_size(patch: int, overlap: float) -> int:
  """The largest spacing (voxels) between window starts that keeps
  `overlap`."""
  if not 0.0 <= overlap < 1.0:
    raise ValueError(f'overlap: must be in [0, 1), got {overlap}')
  return max(1, int(patch * (1.0 - overlap)))


def window_starts(size: int, patch: int, overlap: float) -> list[int]:
  """Start offsets along one axis of a volume of `size` voxels.

  nnU-Net placement: ceil((size - patch) / step) + 1 windows spread evenly,
  the first at 0 and the last ending at `size` (start i is
  round(i * (size - patch) / (count - 1))). Sizes up to `patch` give [0]
  (the volume is padded to the patch). `window_starts_tensor` is the same
  for a dynamic size.
  """
  step = step_size(patch, overlap)
  if size <= patch:
    return [0]
  count = math.ceil((size - patch) / step) + 1
  return [int(round(i * (size - patch) / (count - 1))) for i in range(count)]


def window_starts_tensor(size, patch: int, overlap: float) -> tf.Tensor:
  """int32 [count]: `window_starts` for a size that may be a tensor.

  Exact integer arithmetic, rounding halves to even like Python's round.
  """
  step = step_size(patch, overlap)
  size = tf.maximum(tf.cast(size, tf.int64), patch)
  span = size - patch
  count = (span + step - 1) // step + 1
  denominator = tf.maximum(count - 1, 1)
  numerator = tf.range(count, dtype=tf.int64) * span
  quotient = numerator // denominator
  twice_rest = 2 * (numerator - quotient * denominator)
  round_up = (twice_rest > denominator) | (
      (twice_rest == denominator) & (quotient % 2 == 1))
  return tf.cast(quotient + tf.cast(round_up, tf.int64), tf.int32)


def window_corners(spatial_shape, patch_size: Sequence[int],
                   overlap: float) -> tf.Tensor:
  """int32 [N, n]: every window's first voxel, the last axis fastest."""
  spatial_shape = tf.unstack(tf.cast(spatial_shape, tf.int32),
                             num=len(patch_size))
  starts = [window_starts_tensor(s, p, overlap)
            for s, p in zip(spatial_shape, patch_size)]
  grids = tf.meshgrid(*starts, indexing='ij')
  return tf.reshape(tf.stack(grids, axis=-1), [-1, len(patch_size)])


def mirror_flips(mirror_axes: Sequence[int], ndim: int
                ) -> list[tuple[int, ...]]:
  """Every subset of mirror_axes (spatial axes, 0-based), identity first."""
  axes = sorted({int(a) for a in mirror_axes})
  if any(not 0 <= a < ndim for a in axes) or len(axes) != len(mirror_axes):
    raise ValueError(f'mirror_axes: expected distinct spatial axes in '
                     f'[0, {ndim}), got {tuple(mirror_axes)}')
  return [c for r in range(len(axes) + 1)
          for c in itertools.combinations(axes, r)]

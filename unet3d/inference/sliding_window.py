"""Sliding-window inference over whole volumes, with Gaussian importance weights.

One function that eval (whole_volume mode) and predict share. Patches
are placed nnU-Net style: evenly spaced so that the first starts at 0 and the
last ends at the volume's edge, with at least the requested overlap.
"""

from __future__ import annotations

import itertools
import math
from typing import Callable, Sequence

import numpy as np


def gaussian_importance_map(patch_size: Sequence[int],
                            sigma_scale: float = 0.125) -> np.ndarray:
  """A Gaussian centred on the patch, sigma = sigma_scale * size per axis.

  Returns float32 [*patch_size], maximum 1, strictly positive everywhere (so
  every voxel of a covered volume gets weight).
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


def window_starts(size: int, patch: int, overlap: float) -> list[int]:
  """Start offsets along one axis; the last window ends at `size`."""
  if not 0.0 <= overlap < 1.0:
    raise ValueError(f'overlap: must be in [0, 1), got {overlap}')
  if size <= patch:
    return [0]
  step = max(1, int(patch * (1.0 - overlap)))
  count = math.ceil((size - patch) / step) + 1
  return [int(round(i * (size - patch) / (count - 1))) for i in range(count)]


def sliding_window_inference(
    predict_fn: Callable[[np.ndarray], np.ndarray],
    image: np.ndarray,
    patch_size: Sequence[int],
    overlap: float = 0.5,
    batch_size: int = 1,
    weighting: str = 'gaussian',
    pad_value: float = 0.0,
) -> np.ndarray:
  """Averages a patch model's outputs over a whole volume.

  Args:
    predict_fn: maps a batch [b, *patch_size, C] to per-voxel outputs
      [b, *patch_size, K] (probabilities, usually).
    image: [*spatial, C] float array, any spatial size.
    patch_size: the window, one size per spatial axis.
    overlap: fraction of a window shared with its neighbour, in [0, 1).
    batch_size: windows per predict_fn call.
    weighting: 'gaussian' (nnU-Net/MONAI importance map) or 'constant'.
    pad_value: image value used where the volume is smaller than the window.

  Returns:
    float32 [*spatial, K]: the weighted mean of every window's output.
  """
  image = np.asarray(image)
  spatial = image.shape[:-1]
  patch_size = tuple(int(p) for p in patch_size)
  if len(patch_size) != len(spatial):
    raise ValueError(f'patch_size: expected {len(spatial)} sizes for an image '
                     f'of shape {image.shape}, got {patch_size}')
  if weighting not in ('gaussian', 'constant'):
    raise ValueError(f"weighting: expected 'gaussian' or 'constant', got "
                     f'{weighting!r}')
  if batch_size < 1:
    raise ValueError(f'batch_size: must be >= 1, got {batch_size}')

  # Pad (at the end of each axis) where the volume is smaller than the window.
  padded_shape = tuple(max(s, p) for s, p in zip(spatial, patch_size))
  if padded_shape != spatial:
    pad = [(0, p - s) for s, p in zip(spatial, padded_shape)] + [(0, 0)]
    image = np.pad(image, pad, constant_values=pad_value)

  weights = (gaussian_importance_map(patch_size) if weighting == 'gaussian'
             else np.ones(patch_size, np.float32))
  starts = [window_starts(s, p, overlap)
            for s, p in zip(padded_shape, patch_size)]
  corners = list(itertools.product(*starts))

  accumulated = None
  weight_sum = np.zeros(padded_shape, np.float32)
  for first in range(0, len(corners), batch_size):
    batch_corners = corners[first:first + batch_size]
    windows = [tuple(slice(c, c + p) for c, p in zip(corner, patch_size))
               for corner in batch_corners]
    batch = np.stack([image[w] for w in windows]).astype(np.float32)
    outputs = np.asarray(predict_fn(batch), np.float32)
    if accumulated is None:
      accumulated = np.zeros(padded_shape + (outputs.shape[-1],), np.float32)
    for window, output in zip(windows, outputs):
      accumulated[window] += output * weights[..., None]
      weight_sum[window] += weights
  result = accumulated / weight_sum[..., None]
  return result[tuple(slice(0, s) for s in spatial)]

"""Resampling onto a new axis-aligned grid (voxel size in millimetres).

Images take cubic B-splines (three 1-D passes); labels take nearest
neighbour, or per-class linear interpolation that never invents a class.
`resampled_affine` gives the affine of the result.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np
from scipy import ndimage

from unet3d.preprocess import label_maps

@dataclass(frozen=True)
class Grid:
  """A new sampling grid in the voxel coordinates of the old one.

  New voxel i lies at old coordinate `i * scale + offset` along each axis,
  so the new spacing is `old spacing * scale`. The grids share their centre.
  """
  shape: tuple[int, int, int]
  scale: tuple[float, float, float]
  offset: tuple[float, float, float]

  def is_identity(self) -> bool:
    return (np.allclose(self.scale, 1.0, rtol=0, atol=1e-6) and
            np.allclose(self.offset, 0.0, rtol=0, atol=1e-6))


def resample_grid(shape: Sequence[int], spacing: Sequence[float],
                  target_spacing: Optional[Sequence[float]] = None,
                  target_shape: Optional[Sequence[int]] = None) -> Grid:
  """The grid of voxel size `target_spacing` (or `target_shape` voxels).

  With a target spacing the new spacing is exactly that, and the number of
  voxels is rounded (the field of view changes by less than a voxel). With a
  target shape the field of view is kept and the spacing follows.
  """
  shape = np.asarray(shape[:3], np.float64)
  spacing = np.asarray(spacing, np.float64)
  if target_shape is not None:
    new_shape = np.asarray(target_shape, np.float64)
    scale = shape / new_shape
  elif target_spacing is not None:
    scale = np.asarray(target_spacing, np.float64) / spacing
    new_shape = np.maximum(1, np.round(shape / scale))
  else:
    raise ValueError('resample_grid: pass target_spacing or target_shape')
  offset = ((shape - 1) - (new_shape - 1) * scale) / 2
  return Grid(tuple(int(s) for s in new_shape), tuple(float(s) for s in scale),
              tuple(float(o) for o in offset))


def resampled_affine(affine: np.ndarray, grid: Grid) -> np.ndarray:
  """The affine of an array resampled onto `grid`."""
  step = np.eye(4)
  step[:3, :3] = np.diag(grid.scale)
  step[:3, 3] = grid.offset
  return np.asarray(affine, np.float64) @ step


def _mirror(index: np.ndarray, n: int) -> np.ndarray:
  """Indices reflected at the edges without repeating them: 2 1 | 0 1 2."""
  if n == 1:
    return np.zeros_like(index)
  period = 2 * (n - 1)
  index = np.mod(index, period)
  return np.where(index > n - 1, period - index, index)


def _cubic_bspline(u: np.ndarray) -> np.ndarray:
  u = np.abs(u)
  return np.where(u < 1, 2 / 3 - u**2 + u**3 / 2,
                  np.where(u < 2, (2 - u)**3 / 6, 0.0))


def _resample_axis(volume: np.ndarray, axis: int, size: int, scale: float,
                   offset: float, order: int) -> np.ndarray:
  """1-D interpolation of `volume` along `axis` at i * scale + offset."""
  n = volume.shape[axis]
  t = np.arange(size) * scale + offset
  shape = [1] * volume.ndim
  shape[axis] = size
  if order == 0:
    index = np.clip(np.floor(t + 0.5), 0, n - 1).astype(np.intp)
    return np.take(volume, index, axis=axis)
  if order == 1:
    t = np.clip(t, 0, n - 1)
    low = np.floor(t).astype(np.intp)
    high = np.minimum(low + 1, n - 1)
    w = (t - low).astype(np.float32).reshape(shape)
    return (np.take(volume, low, axis=axis) * (1 - w) +
            np.take(volume, high, axis=axis) * w)
  # Cubic B-spline: prefilter to interpolating coefficients, then sum four
  # weighted neighbours; 'mirror' at both steps keeps them consistent.
  coeffs = ndimage.spline_filter1d(volume, 3, axis=axis, mode='mirror',
                                   output=np.float32)
  base = np.floor(t).astype(np.intp)
  out = None
  for k in (-1, 0, 1, 2):
    w = _cubic_bspline(t - (base + k)).astype(np.float32).reshape(shape)
    term = np.take(coeffs, _mirror(base + k, n), axis=axis) * w
    out = term if out is None else out + term
  return out


def _resample_3d(volume: np.ndarray, grid: Grid, order: int) -> np.ndarray:
  """Resamples [X, Y, Z] onto grid. The grid is axis-aligned, so the 3-D
  tensor-product interpolation is done as three 1-D passes (4 taps per
  pass for cubic instead of 64 per voxel); other orders use scipy."""
  volume = volume.astype(np.float32, copy=False)
  if order not in (0, 1, 3):
    return ndimage.affine_transform(
        volume, np.asarray(grid.scale), offset=np.asarray(grid.offset),
        output_shape=grid.shape, order=order, mode='mirror',
        output=np.float32)
  for axis in range(3):
    if (grid.shape[axis] != volume.shape[axis] or grid.scale[axis] != 1.0 or
        grid.offset[axis] != 0.0):
      volume = _resample_axis(volume, axis, grid.shape[axis],
                              grid.scale[axis], grid.offset[axis], order)
  return np.ascontiguousarray(volume, np.float32)


def resample_image(image: np.ndarray, grid: Grid, order: int = 3
                  ) -> np.ndarray:
  """Spline interpolation (order 3 by default) of [X, Y, Z(, C)] to grid."""
  if image.ndim == 3:
    return _resample_3d(image, grid, order)
  return np.stack([_resample_3d(image[..., c], grid, order)
                   for c in range(image.shape[-1])], axis=-1)


def resample_label(label: np.ndarray, grid: Grid, method: str = 'linear'
                  ) -> np.ndarray:
  """Resamples labels without inventing classes.

  Args:
    label: [X, Y, Z] class indices or [X, Y, Z, K] binary masks.
    grid: the new grid.
    method: 'nearest', or 'linear': each class's one-hot mask is linearly
      interpolated and the largest wins (masks: kept where >= 0.5), which
      gives smoother boundaries than nearest neighbour.

  Returns uint8 labels on the new grid.
  """
  if method not in ('nearest', 'linear'):
    raise ValueError(f'label interpolation {method!r}: expected nearest or '
                     'linear')
  order = 0 if method == 'nearest' else 1
  if label.ndim == 4:
    return np.stack([
        (_resample_3d(label[..., k], grid, order) >= 0.5).astype(np.uint8)
        for k in range(label.shape[-1])], axis=-1)
  if order == 0:
    return np.rint(_resample_3d(label, grid, 0)).astype(np.uint8)
  best = np.full(grid.shape, -1.0, np.float32)
  out = np.zeros(grid.shape, np.uint8)
  for value in label_maps.distinct_values(label):
    score = _resample_3d(label == value, grid, 1)
    better = score > best
    out[better] = value
    best[better] = score[better]
  return out

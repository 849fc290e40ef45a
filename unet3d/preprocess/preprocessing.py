"""Numpy preprocessing: orientation, cropping, resampling, intensities, labels.

Arrays are [X, Y, Z] or [X, Y, Z, C] in nibabel's voxel order, and `affine`
maps a voxel index (i, j, k, 1) to world (RAS+) millimetres. Every geometric
step also returns the affine of the array it produces, so a stored array
always knows where it lies in the world, and `restore_original` can put a
prediction back onto the original grid.

Longer than most modules on purpose: the converter and predict both replay
these steps, and keeping each step next to its inverse (`restore_original`)
in one file is what keeps them in agreement.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Mapping, Optional, Sequence

import nibabel as nib
import numpy as np
from scipy import ndimage

from unet3d.preprocess import io

CANONICAL = 'RAS'


# ----------------------------------------------------------------------------
# Orientation and cropping
# ----------------------------------------------------------------------------


def axcodes(affine: np.ndarray) -> str:
  """The orientation of the array axes, e.g. 'LPS' or 'RAS'."""
  return ''.join(nib.aff2axcodes(np.asarray(affine, np.float64)))


def orientation_transform(affine: np.ndarray, target: str = CANONICAL
                         ) -> np.ndarray:
  """nibabel orientation transform [3, 2] from the affine's axes to target."""
  current = nib.orientations.io_orientation(np.asarray(affine, np.float64))
  return nib.orientations.ornt_transform(
      current, nib.orientations.axcodes2ornt(tuple(target)))


def oriented_spacing(affine: np.ndarray, target: str = CANONICAL
                    ) -> np.ndarray:
  """Voxel size in mm along each axis after reorienting to `target`."""
  transform = orientation_transform(affine, target)
  spacing = io.spacing_of(affine)
  out = np.empty(3)
  for axis, (new_axis, _) in enumerate(transform):
    out[int(new_axis)] = spacing[axis]
  return out


def reorient(array: np.ndarray, affine: np.ndarray, target: str = CANONICAL
            ) -> tuple[np.ndarray, np.ndarray]:
  """Permutes and flips the first three axes so they point along `target`.

  Args:
    array: [X, Y, Z, ...]; trailing axes (channels) are carried along.
    affine: 4x4 voxel-to-world matrix of `array`.
    target: axis codes, 'RAS' by default.

  Returns:
    (reoriented array, its affine). World positions are unchanged: voxel v of
    the output and the voxel of the input it came from map to one point.
  """
  affine = np.asarray(affine, np.float64)
  transform = orientation_transform(affine, target)
  out = nib.orientations.apply_orientation(array, transform)
  new_affine = affine @ nib.orientations.inv_ornt_aff(transform,
                                                      array.shape[:3])
  return np.ascontiguousarray(out), new_affine


def nonzero_bbox(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """(start, stop) of the smallest box holding every nonzero voxel.

  Args:
    image: [X, Y, Z, C]; a voxel counts when any channel is nonzero.

  Returns the whole extent when the image is all zero.
  """
  mask = np.any(image != 0, axis=-1) if image.ndim == 4 else image != 0
  shape = np.array(mask.shape[:3])
  if not mask.any():
    return np.zeros(3, int), shape
  start, stop = [], []
  for axis in range(3):
    others = tuple(a for a in range(3) if a != axis)
    hits = np.flatnonzero(mask.any(axis=others))
    start.append(hits[0])
    stop.append(hits[-1] + 1)
  return np.array(start), np.array(stop)


def crop(array: np.ndarray, start: Sequence[int], stop: Sequence[int]
        ) -> np.ndarray:
  """array[start:stop] along the first three axes."""
  return array[tuple(slice(int(a), int(b)) for a, b in zip(start, stop))]


def crop_affine(affine: np.ndarray, start: Sequence[int]) -> np.ndarray:
  """The affine of `crop(array, start, ...)`: the origin moves to `start`."""
  out = np.array(affine, np.float64)
  out[:3, 3] = affine[:3, :3] @ np.asarray(start, np.float64) + affine[:3, 3]
  return out


def box_around(centre_start: Sequence[int], centre_stop: Sequence[int],
               min_size: Sequence[int], shape: Sequence[int]
              ) -> tuple[np.ndarray, np.ndarray]:
  """Grows [start, stop) symmetrically to at least `min_size`, inside shape."""
  start = np.array(centre_start, int)
  stop = np.array(centre_stop, int)
  shape = np.array(shape, int)
  size = np.minimum(np.maximum(stop - start, min_size), shape)
  grow = size - (stop - start)
  start = start - grow // 2
  start = np.clip(start, 0, shape - size)
  return start, start + size


# ----------------------------------------------------------------------------
# Resampling
# ----------------------------------------------------------------------------


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
  for value in distinct_values(label):
    score = _resample_3d(label == value, grid, 1)
    better = score > best
    out[better] = value
    best[better] = score[better]
  return out


# ----------------------------------------------------------------------------
# Intensities
# ----------------------------------------------------------------------------


def is_ct_modality(name: str) -> bool:
  """A channel whose modality name says CT ('CT', 'ct', 'non-contrast CT',
  'CT_venous'; not 'CTA'): it gets the CT scheme, not a z-score."""
  return re.search(r'(^|[^a-z])ct([^a-z]|$)', name.lower()) is not None


@dataclass(frozen=True)
class ChannelNorm:
  """How one channel is normalised.

  scheme: 'ct' (clip to [clip_low, clip_high], then (x - mean) / std with
    dataset-wide values), 'zscore' (per image, optionally within the
    nonzero mask) or 'none'.
  """
  scheme: str = 'zscore'
  nonzero_mask: bool = False
  # ct: a fixed window (e.g. HU -200..250), or None for the dataset's
  # foreground percentiles.
  window: Optional[tuple[float, float]] = None
  percentiles: tuple[float, float] = (0.5, 99.5)
  # ct: resolved from the dataset before conversion.
  clip_low: Optional[float] = None
  clip_high: Optional[float] = None
  mean: Optional[float] = None
  std: Optional[float] = None


def sample_rows(values: np.ndarray, max_samples: int,
                rng: np.random.Generator) -> np.ndarray:
  """Up to `max_samples` rows of voxel values [N, C], drawn without
  replacement."""
  if len(values) > max_samples:
    values = values[rng.choice(len(values), max_samples, replace=False)]
  return values


def ct_parameters(samples: np.ndarray, window: Optional[Sequence[float]] = None,
                  percentiles: Sequence[float] = (0.5, 99.5)
                 ) -> tuple[float, float, float, float]:
  """(clip_low, clip_high, mean, std) for CT normalisation (nnU-Net style).

  Args:
    samples: foreground intensities of the whole dataset, [N].
    window: a fixed clip range (e.g. HU -200, 250); None: the samples'
      `percentiles`.
    percentiles: the clip range when there is no window.

  The mean and std are those of the clipped samples.
  """
  samples = np.asarray(samples, np.float64).reshape(-1)
  if samples.size == 0:
    raise ValueError('CT normalisation: no foreground voxels to measure')
  if window is not None:
    low, high = float(window[0]), float(window[1])
  else:
    low, high = (float(v) for v in np.percentile(samples, percentiles))
  clipped = np.clip(samples, low, high)
  return low, high, float(clipped.mean()), float(clipped.std())


def normalize_ct(channel: np.ndarray, clip_low: float, clip_high: float,
                 mean: float, std: float) -> np.ndarray:
  """(clip(x, low, high) - mean) / std as float32."""
  out = np.clip(channel.astype(np.float32), clip_low, clip_high)
  return ((out - mean) / max(std, 1e-8)).astype(np.float32)


def normalize_zscore(channel: np.ndarray, mask: Optional[np.ndarray] = None
                    ) -> tuple[np.ndarray, float, float]:
  """Per-image z-score; with a mask the statistics come from inside it and
  voxels outside are set to 0. Returns (float32 image, mean, std)."""
  channel = channel.astype(np.float32)
  inside = channel[mask] if mask is not None else channel
  if inside.size == 0:
    inside = channel
  mean = float(inside.mean(dtype=np.float64))
  std = float(inside.std(dtype=np.float64))
  out = (channel - mean) / max(std, 1e-8)
  if mask is not None:
    out[~mask] = 0
  return out.astype(np.float32), mean, std


def normalize(image: np.ndarray, norms: Sequence[ChannelNorm],
              mask: Optional[np.ndarray] = None
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Normalises each channel of [X, Y, Z, C] by its `ChannelNorm`.

  Returns (float32 image, per-channel mean, per-channel std): the values the
  channel was shifted and divided by.
  """
  if len(norms) != image.shape[-1]:
    raise ValueError(f'{len(norms)} channel normalisations for '
                     f'{image.shape[-1]} channels')
  out = np.empty(image.shape, np.float32)
  means, stds = [], []
  for c, norm in enumerate(norms):
    if norm.scheme == 'ct':
      if norm.mean is None:
        raise ValueError('CT normalisation: parameters not resolved')
      out[..., c] = normalize_ct(image[..., c], norm.clip_low, norm.clip_high,
                                 norm.mean, norm.std)
      means.append(norm.mean)
      stds.append(norm.std)
    elif norm.scheme == 'zscore':
      out[..., c], mean, std = normalize_zscore(
          image[..., c], mask if norm.nonzero_mask else None)
      means.append(mean)
      stds.append(std)
    elif norm.scheme == 'none':
      out[..., c] = image[..., c]
      means.append(0.0)
      stds.append(1.0)
    else:
      raise ValueError(f'normalisation scheme {norm.scheme!r}: expected ct, '
                       'zscore or none')
  return out, np.array(means), np.array(stds)


# ----------------------------------------------------------------------------
# Labels
# ----------------------------------------------------------------------------


def distinct_values(label: np.ndarray) -> np.ndarray:
  """Sorted distinct values; for a few integer values, a scan is several
  times faster than np.unique on a large volume."""
  if label.size and label.dtype.kind in 'iub':
    low, high = int(label.min()), int(label.max())
    if high - low <= 64:
      return np.array([v for v in range(low, high + 1) if (label == v).any()],
                      label.dtype)
  return np.unique(label)


def as_label(array: np.ndarray, path: str) -> np.ndarray:
  """Integer labels from any numeric dtype; non-integers are an error."""
  if array.dtype.kind in 'iu':
    return array
  if array.dtype.kind == 'b':
    return array.astype(np.uint8)
  rounded = np.rint(array)
  if not np.array_equal(rounded, array):
    bad = array[rounded != array].reshape(-1)[0]
    raise ValueError(f'{path}: label values must be integers, found {bad}')
  return rounded.astype(np.int64)


def check_label_values(label: np.ndarray, allowed: Sequence[int],
                       path: str) -> None:
  """Raises a one-line ValueError naming `path` for values not in allowed."""
  unknown = np.setdiff1d(distinct_values(label), np.asarray(list(allowed)))
  if unknown.size:
    raise ValueError(f'{path}: unknown label values {unknown.tolist()} '
                     f'(expected {sorted(int(a) for a in allowed)})')


def remap_labels(label: np.ndarray, mapping: Mapping[int, int], path: str
                ) -> np.ndarray:
  """uint8 labels with each key of `mapping` replaced by its value."""
  label = as_label(label, path)
  check_label_values(label, list(mapping), path)
  lut = np.zeros(int(max(mapping)) + 1, np.uint8)
  for source, target in mapping.items():
    lut[int(source)] = target
  return lut[label]


def class_voxel_counts(label: np.ndarray, num_classes: int) -> list[int]:
  """Voxels of each class ([X, Y, Z]) or each mask channel ([X, Y, Z, K])."""
  if label.ndim == 4:
    return [int(label[..., k].sum()) for k in range(label.shape[-1])]
  return np.bincount(label.reshape(-1), minlength=num_classes).tolist()


def class_mask(label: np.ndarray, k: int) -> np.ndarray:
  """bool [X, Y, Z]: voxels of class k ([X, Y, Z]) or mask channel k
  ([X, Y, Z, K])."""
  return label[..., k] > 0 if label.ndim == 4 else label == k


def connected_components(mask: np.ndarray, max_sizes: int = 10
                        ) -> dict[str, Any]:
  """Face-connected components of a bool [X, Y, Z] mask.

  Returns {'count': number of components, 'largest_voxels': the sizes in
  voxels of the largest `max_sizes` of them, largest first}.
  """
  components, count = ndimage.label(mask)
  sizes = np.bincount(components.reshape(-1), minlength=count + 1)[1:]
  largest = np.sort(sizes)[::-1][:max_sizes]
  return {'count': int(count), 'largest_voxels': [int(s) for s in largest]}


def centroid_voxel(mask: np.ndarray) -> list[float]:
  """Mean voxel index per array axis of a non-empty bool [X, Y, Z] mask."""
  centroid = []
  for axis in range(3):
    # A profile per axis, rather than np.argwhere: no [N, 3] index array
    # for a large structure.
    profile = mask.sum(axis=tuple(a for a in range(3) if a != axis))
    centroid.append(float(np.arange(len(profile)) @ profile / profile.sum()))
  return centroid


# ----------------------------------------------------------------------------
# Back to the original grid
# ----------------------------------------------------------------------------


def restore_original(array: np.ndarray, case_record: Mapping,
                     order: int = 0) -> np.ndarray:
  """Maps an array on the stored grid back onto the case's original grid.

  Undoes reorientation, cropping and resampling in one step: each original
  voxel takes the stored array's value at the same world point (outside the
  stored box: 0). Reorientation and cropping alone are undone exactly.

  Args:
    array: [D, H, W] or [D, H, W, C] on the stored grid (e.g. a predicted
      label map or probabilities).
    case_record: the case's entry of dataset.json `cases`, with
      `original.shape`, `original.affine` and `stored.affine`.
    order: spline order; 0 (nearest) for labels, 1 for probabilities.

  Returns the array on the original grid, shape original.shape[:3] (+ C).
  """
  original = case_record['original']
  shape = tuple(int(s) for s in original['shape'][:3])
  to_stored = (np.linalg.inv(np.asarray(case_record['stored']['affine'],
                                        np.float64)) @
               np.asarray(original['affine'], np.float64))
  # Reorientation and cropping give an integer matrix up to rounding error;
  # snapping it keeps nearest-neighbour lookups exact.
  near = np.abs(to_stored - np.rint(to_stored)) < 1e-6
  to_stored[near] = np.rint(to_stored[near])

  def one(volume):
    return ndimage.affine_transform(volume, to_stored, output_shape=shape,
                                    order=order, mode='constant', cval=0)

  if array.ndim == 3:
    return one(array)
  return np.stack([one(array[..., c]) for c in range(array.shape[-1])],
                  axis=-1)

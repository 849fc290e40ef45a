"""Where an array lies in space: orientation, cropping, and the way back.

Arrays are [X, Y, Z] or [X, Y, Z, C] in nibabel's voxel order, and `affine`
maps a voxel index (i, j, k, 1) to world (RAS+) millimetres. Every step
here also returns (or computes) the affine of the array it produces, so a
stored array always knows where it lies, and `restore_original` can put a
prediction back onto the original grid. Resampling is in `resample`.
"""

from __future__ import annotations

from typing import Mapping, Sequence

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


def box_fraction(start: Sequence[int], stop: Sequence[int],
                 shape: Sequence[int]) -> float:
  """Voxels of the box [start, stop) / voxels of shape[:3]."""
  return float(np.prod(np.subtract(stop, start)) / np.prod(shape[:3]))


def nonzero_fraction(image: np.ndarray) -> float:
  """dataset.json's `nonzero_fraction` of an image [X, Y, Z, C]: the share
  of its voxels inside the nonzero bounding box (1.0 when all zero)."""
  return box_fraction(*nonzero_bbox(image), image.shape)


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
    # ndimage has no float16 (slab-wise predict's probabilities): one
    # channel at a time in float32.
    if volume.dtype == np.float16:
      volume = volume.astype(np.float32)
    return ndimage.affine_transform(volume, to_stored, output_shape=shape,
                                    order=order, mode='constant', cval=0)

  if array.ndim == 3:
    return one(array)
  return np.stack([one(array[..., c]) for c in range(array.shape[-1])],
                  axis=-1)

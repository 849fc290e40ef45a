"""Label maps: integer values, remapping, and the per-class statistics
dataset.json records (voxel counts, connected components, centroids).

Labels are [X, Y, Z] class indices or [X, Y, Z, K] binary masks.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
from scipy import ndimage

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

"""Lesion-wise dice and HD95 of one structure (BraTS 2023 definition).

A lesion is a 26-connected component (8 in 2D) of the ground truth; lesions
whose dilations by `dilation_mm` touch count as one lesion, as in the BraTS
2023 scorer. The dilation is spacing-aware: every voxel within
`dilation_mm` (Euclidean, mm) of the lesion; BraTS dilates by iterations of
the 18-connected cross on 1 mm voxels (3 iterations for gliomas, 1 for
metastases), which reaches 3 voxels along the axes and slightly less far
diagonally than a 3 mm ball.

A predicted component (26-connected) matches every lesion whose dilation
it overlaps. Per lesion, dice and HD95 compare the lesion with the union of
the components matching it; a lesion with no match (false negative) scores
dice 0 and HD95 = the penalty. Each component matching no lesion is a false
positive with dice 0 and HD95 = the penalty. Lesion-wise dice is
sum(lesion dice) / (lesions + false positives); HD95 likewise.

Lesions of at most `min_volume_mm3` are left out of the scores and counts,
as BraTS does (50 mm³ for gliomas, 2 for metastases); the components they
match are still not false positives. Predicted components of at most
`min_pred_volume_mm3` are removed before matching (0 keeps them all, as
BraTS 2023 does).

With no lesion and no false positive (both masks empty, or only small
lesions), lesion-wise dice is 1, HD95 0 and F1 1.
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
from scipy import ndimage

from unet3d.metrics import binary
from unet3d.metrics import surface
from unet3d.metrics.conventions import Conventions


def components(mask: np.ndarray) -> tuple[np.ndarray, int]:
  """Fully connected components (26 in 3D, 8 in 2D) of a boolean mask:
  (int32 labels [*spatial], 0 background, count)."""
  mask = np.asarray(mask, bool)
  structure = np.ones((3,) * mask.ndim, bool)
  labels, count = ndimage.label(mask, structure)
  return labels, int(count)


def dilate_mm(mask: np.ndarray, spacing: Sequence[float],
              distance_mm: float) -> np.ndarray:
  """Voxels within `distance_mm` (Euclidean, mm) of a non-empty mask."""
  if distance_mm <= 0:
    return np.asarray(mask, bool).copy()
  distance = ndimage.distance_transform_edt(~np.asarray(mask, bool),
                                            sampling=spacing)
  return distance <= distance_mm


def lesion_wise(pred, label, spacing: Sequence[float],
                dilation_mm: float = 3.0, min_volume_mm3: float = 50.0,
                min_pred_volume_mm3: float = 0.0,
                conventions: Optional[Conventions] = None) -> dict:
  """Lesion-wise scores of one structure; pred, label: boolean [*spatial].

  Per-lesion HD95 follows `conventions` (default: larger directed 95th
  percentile of area-weighted surfaces, BraTS's); the penalty for missed and
  false-positive lesions is `conventions.hd95_penalty_mm` (BraTS 2023 uses
  374 mm; the default is 373.13 mm). Returns dice, hd95 (mm), tp, fn, fp,
  f1 (detection, 2TP / (2TP + FP + FN)) and `lesions`: per scored lesion its
  volume_mm3, number of matched components, dice and hd95.
  """
  conventions = conventions or Conventions()
  pred, label = np.asarray(pred, bool), np.asarray(label, bool)
  if pred.shape != label.shape:
    raise ValueError(f'pred shape {pred.shape} does not match label shape '
                     f'{label.shape}')
  voxel_mm3 = float(np.prod(spacing))
  pred_labels, num_pred = components(pred)
  if min_pred_volume_mm3 > 0 and num_pred:
    sizes = np.bincount(pred_labels.ravel(), minlength=num_pred + 1)
    small = np.flatnonzero(sizes * voxel_mm3 <= min_pred_volume_mm3)
    pred_labels[np.isin(pred_labels, small[small > 0])] = 0

  lesions = []
  matched_any = np.zeros(num_pred + 1, bool)
  if label.any():
    # A lesion (merged by dilation) and its dilation are one component of
    # the dilated ground truth.
    regions, num_regions = components(dilate_mm(label, spacing, dilation_mm))
    gt_labels = np.where(label, regions, 0)
    for region_slice, k in zip(ndimage.find_objects(regions),
                               range(1, num_regions + 1)):
      in_region = regions[region_slice] == k
      lesion = gt_labels[region_slice] == k
      matched = np.unique(pred_labels[region_slice][in_region])
      matched = matched[matched > 0]
      matched_any[matched] = True
      volume = float(lesion.sum()) * voxel_mm3
      if volume <= min_volume_mm3:
        continue
      if not matched.size:  # a missed lesion, whatever conventions.empty
        lesions.append({'volume_mm3': volume, 'matched_components': 0,
                        'dice': 0.0, 'hd95': conventions.hd95_penalty_mm})
        continue
      # Matched components may reach outside the lesion's region: score on
      # the whole volume (surface_scores crops to the masks' box).
      lesion_full = np.zeros(label.shape, bool)
      lesion_full[region_slice] = lesion
      pred_full = np.isin(pred_labels, matched)
      lesions.append({
          'volume_mm3': volume, 'matched_components': int(matched.size),
          'dice': binary.dice(pred_full, lesion_full, conventions),
          'hd95': surface.surface_scores(pred_full, lesion_full, spacing,
                                         conventions)['hd95']})

  present = np.zeros(num_pred + 1, bool)
  present[np.unique(pred_labels)] = True
  fp = int((present & ~matched_any)[1:].sum())
  tp = sum(1 for les in lesions if les['matched_components'])
  fn = len(lesions) - tp
  denominator = len(lesions) + fp
  if denominator == 0:
    dice, hd95 = 1.0, 0.0
  else:
    dice = sum(les['dice'] for les in lesions) / denominator
    hd95 = (sum(les['hd95'] for les in lesions) +
            fp * conventions.hd95_penalty_mm) / denominator
  f1 = 1.0 if tp + fp + fn == 0 else 2 * tp / (2 * tp + fp + fn)
  return {'dice': float(dice), 'hd95': float(hd95), 'tp': tp, 'fn': fn,
          'fp': fp, 'f1': float(f1), 'lesions': lesions}

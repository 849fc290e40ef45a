"""Host-side per-case surface metrics on full volumes, in millimetres.

Surfaces are the mask voxels with a background face-neighbour (the mask minus
its erosion). Distances come from scipy's Euclidean distance transform with
`sampling=spacing`, so anisotropic voxels are measured in physical units.

Empty masks, stated in every report:
- label and prediction both empty: HD95 = 0, ASSD = 0, NSD = 1 (a perfect
  empty prediction);
- exactly one empty: HD95 and ASSD are inf (no surface to measure to) and
  NSD = 0. Means over cases then ignore inf values and count them separately.
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
from scipy import ndimage

EMPTY_CONVENTION = ('both empty: hd95=0, assd=0, nsd=1; one empty: hd95=inf, '
                    'assd=inf, nsd=0')


def surface(mask: np.ndarray) -> np.ndarray:
  """Boundary voxels of a boolean mask (face connectivity)."""
  mask = np.asarray(mask, bool)
  if not mask.any():
    return mask
  structure = ndimage.generate_binary_structure(mask.ndim, 1)
  eroded = ndimage.binary_erosion(mask, structure, border_value=0)
  return mask & ~eroded


def _distances_to(surface_mask: np.ndarray, spacing) -> np.ndarray:
  """Distance (mm) of every voxel to the nearest voxel of surface_mask."""
  return ndimage.distance_transform_edt(~surface_mask, sampling=spacing)


def _union_box(pred: np.ndarray, label: np.ndarray) -> tuple[slice, ...]:
  """The bounding box of both masks grown by one voxel (clipped to the
  volume).

  Surfaces and distances inside it equal those of the whole volume: every
  surface voxel is inside, so is the nearest surface voxel of the other mask,
  and the one-voxel margin keeps the erosion's background where the volume
  has it. On a CT the box is often a small part of the volume.
  """
  union = pred | label
  box = []
  for axis in range(union.ndim):
    others = tuple(a for a in range(union.ndim) if a != axis)
    present = np.flatnonzero(union.any(axis=others))
    box.append(slice(max(int(present[0]) - 1, 0),
                     min(int(present[-1]) + 2, union.shape[axis])))
  return tuple(box)


def surface_distances(pred: np.ndarray, label: np.ndarray,
                      spacing: Sequence[float]):
  """Distances (mm) from each surface voxel of one mask to the other's
  surface: (pred -> label, label -> pred). Both masks must be non-empty."""
  spacing = [float(s) for s in spacing]
  pred, label = np.asarray(pred, bool), np.asarray(label, bool)
  box = _union_box(pred, label)
  pred, label = pred[box], label[box]
  pred_surface, label_surface = surface(pred), surface(label)
  pred_to_label = _distances_to(label_surface, spacing)[pred_surface]
  label_to_pred = _distances_to(pred_surface, spacing)[label_surface]
  return pred_to_label, label_to_pred


def _empty_case_distance(pred, label) -> Optional[float]:
  """0 when both masks are empty, inf when one is; None otherwise."""
  if not pred.any() and not label.any():
    return 0.0
  if not pred.any() or not label.any():
    return float('inf')
  return None


def _hd95(a, b) -> float:
  return float(np.percentile(np.concatenate([a, b]), 95))


def _assd(a, b) -> float:
  return float((a.sum() + b.sum()) / (a.size + b.size))


def _nsd(a, b, tolerance_mm: float) -> float:
  return float(((a <= tolerance_mm).sum() + (b <= tolerance_mm).sum()) /
               (a.size + b.size))


def hd95(pred, label, spacing) -> float:
  """95th percentile of the symmetric surface distances (mm)."""
  pred, label = np.asarray(pred, bool), np.asarray(label, bool)
  empty = _empty_case_distance(pred, label)
  if empty is not None:
    return empty
  return _hd95(*surface_distances(pred, label, spacing))


def assd(pred, label, spacing) -> float:
  """Average symmetric surface distance (mm)."""
  pred, label = np.asarray(pred, bool), np.asarray(label, bool)
  empty = _empty_case_distance(pred, label)
  if empty is not None:
    return empty
  return _assd(*surface_distances(pred, label, spacing))


def normalized_surface_dice(pred, label, spacing, tolerance_mm: float) -> float:
  """Share of both surfaces within `tolerance_mm` of the other surface
  (Nikolov et al. 2021), counted in surface voxels."""
  pred, label = np.asarray(pred, bool), np.asarray(label, bool)
  empty = _empty_case_distance(pred, label)
  if empty is not None:
    return 1.0 if empty == 0.0 else 0.0
  return _nsd(*surface_distances(pred, label, spacing), tolerance_mm)


def _class_scores(pred, label, spacing, tolerance_mm: float) -> dict:
  """hd95, assd and nsd of one class from one pair of distance transforms."""
  empty = _empty_case_distance(pred, label)
  if empty is not None:
    return {'hd95': empty, 'assd': empty,
            'nsd': 1.0 if empty == 0.0 else 0.0}
  a, b = surface_distances(pred, label, spacing)
  return {'hd95': _hd95(a, b), 'assd': _assd(a, b),
          'nsd': _nsd(a, b, tolerance_mm)}


def per_case_report(prediction: np.ndarray, label: np.ndarray,
                    spacing: Sequence[float], num_classes: int,
                    tolerance_mm: float = 1.0,
                    class_names: Optional[Sequence[str]] = None) -> dict:
  """HD95, ASSD and NSD per foreground class of one case.

  prediction, label: class indices [*spatial] (or multi-hot [*spatial, C],
  one channel per class); spacing: mm per spatial axis.
  """
  prediction, label = np.asarray(prediction), np.asarray(label)
  if prediction.shape != label.shape:
    raise ValueError(f'prediction shape {prediction.shape} does not match '
                     f'label shape {label.shape}')
  multi_label = prediction.ndim == len(spacing) + 1
  names = list(class_names) if class_names else [
      f'class_{c}' for c in range(num_classes)]
  report = {'empty_convention': EMPTY_CONVENTION,
            'tolerance_mm': tolerance_mm, 'per_class': {}}
  first = 0 if multi_label else 1
  for c in range(first, num_classes):
    if multi_label:
      p, t = prediction[..., c] > 0, label[..., c] > 0
    else:
      p, t = prediction == c, label == c
    report['per_class'][names[c]] = _class_scores(p, t, spacing,
                                                   tolerance_mm)
  return report


def summarize_surface(reports: Sequence[dict]) -> dict:
  """Means over cases per class; inf values are counted, not averaged."""
  summary = {}
  for report in reports:
    for name, scores in report['per_class'].items():
      entry = summary.setdefault(name, {k: [] for k in scores})
      for key, value in scores.items():
        entry[key].append(value)
  out = {}
  for name, values in summary.items():
    out[name] = {}
    for key, vals in values.items():
      vals = np.asarray(vals, np.float64)
      finite = vals[np.isfinite(vals)]
      out[name][key] = float(finite.mean()) if finite.size else None
      out[name][f'{key}_num_infinite'] = int((~np.isfinite(vals)).sum())
  return out

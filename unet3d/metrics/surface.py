"""Host-side per-case surface metrics on full volumes, in millimetres.

Two surface representations, chosen by `Conventions.surface_weighting`:
- 'voxel': the mask voxels with a background face-neighbour (the mask minus
  its erosion), each counted once (medpy, MONAI);
- 'area': surface elements on the 2x2x2 (2x2 in 2D) neighbourhoods of the
  voxel-corner lattice, each weighed by the area (mm²; contour length in mm
  in 2D) of the marching-cubes piece its neighbourhood code cuts, as in
  DeepMind's `surface-distance` (Nikolov et al. 2021).
Distances come from scipy's Euclidean distance transform with
`sampling=spacing`, so anisotropic voxels are measured in physical units,
inside the bounding box of both masks.

HD95 is the larger of the two directed 95th percentiles ('max_directed') or
the percentile of both sets pooled ('pooled'). Percentiles of voxel-counted
distances interpolate linearly (`np.percentile`, as medpy and MONAI);
area-weighted ones take the first distance whose cumulative area share
reaches 95 % (as DeepMind's `compute_robust_hausdorff`).

Empty masks follow `Conventions.empty` (see `unet3d.metrics.conventions`).
`per_case_report` without conventions keeps the evaluator's numbers of
before (`Conventions.legacy()`, described by EMPTY_CONVENTION); the
single-metric functions default to `Conventions()`.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
from typing import NamedTuple, Optional, Sequence

import numpy as np
from scipy import ndimage

from unet3d.metrics.conventions import Conventions, empty_score

# The empty-mask rule of Conventions.legacy(), which per_case_report uses
# when the caller passes no conventions.
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


class SurfaceDistances(NamedTuple):
  """Distances (mm) from each surface element of one mask to the other's
  surface, and the element weights: mm² (3D) or mm (2D) under 'area' weighting,
  1 under 'voxel'."""
  pred_to_label: np.ndarray
  label_to_pred: np.ndarray
  pred_weights: np.ndarray
  label_weights: np.ndarray


def _tight_box(mask: np.ndarray) -> tuple[slice, ...]:
  """The bounding box of a non-empty mask."""
  box = []
  for axis in range(mask.ndim):
    others = tuple(a for a in range(mask.ndim) if a != axis)
    present = np.flatnonzero(mask.any(axis=others))
    box.append(slice(int(present[0]), int(present[-1]) + 1))
  return tuple(box)


def neighbourhood_codes(mask: np.ndarray) -> np.ndarray:
  """The code of every 2x2x2 (2x2) neighbourhood of a boolean mask [*n]:
  shape [*(n + 1)], entry i covers voxels i - 1 and i on each axis (outside
  the array is background). Bit 2**ndim - 1 - k is set when corner k of
  `itertools.product((0, 1), repeat=ndim)` is inside."""
  mask = np.asarray(mask, bool)
  padded = np.pad(mask, 1).view(np.uint8)
  codes = np.zeros([s + 1 for s in mask.shape], np.uint8)
  corners = itertools.product((0, 1), repeat=mask.ndim)
  for k, corner in enumerate(corners):
    window = tuple(slice(c, c + s + 1) for c, s in zip(corner, mask.shape))
    codes |= padded[window] << np.uint8(2**mask.ndim - 1 - k)
  return codes


def _cut_segments(inside: dict, face: Sequence[tuple]) -> list:
  """Segments between the midpoints of a square face's edges that separate
  inside from outside corners; `face` lists the 4 corners in cyclic order. A
  face with diagonal inside corners cuts each inside corner off alone."""
  def midpoint(a, b):
    return tuple((x + y) / 2 for x, y in zip(a, b))
  crossing = [midpoint(face[i], face[(i + 1) % 4]) for i in range(4)
              if inside[face[i]] != inside[face[(i + 1) % 4]]]
  if len(crossing) == 2:
    return [tuple(crossing)]
  if len(crossing) == 4:
    return [(midpoint(face[i - 1], face[i]), midpoint(face[i],
                                                      face[(i + 1) % 4]))
            for i in range(4) if inside[face[i]]]
  return []


def _square_faces(ndim: int) -> list:
  """The square faces of the unit cube (the square itself in 2D), corners in
  cyclic order."""
  cycle = ((0, 0), (0, 1), (1, 1), (1, 0))
  if ndim == 2:
    return [list(cycle)]
  faces = []
  for axis in range(3):
    others = [a for a in range(3) if a != axis]
    for side in (0, 1):
      face = []
      for u, v in cycle:
        corner = [0, 0, 0]
        corner[axis], corner[others[0]], corner[others[1]] = side, u, v
        face.append(tuple(corner))
      faces.append(face)
  return faces


def _loops(segments: list) -> list:
  """Chain segments into closed polygons (lists of vertices)."""
  neighbours = {}
  for a, b in segments:
    neighbours.setdefault(a, []).append(b)
    neighbours.setdefault(b, []).append(a)
  loops, seen = [], set()
  for start in neighbours:
    if start in seen:
      continue
    loop, previous, current = [start], None, start
    seen.add(start)
    while True:
      step = [n for n in neighbours[current] if n != previous and n not in seen]
      if not step:
        break
      previous, current = current, step[0]
      loop.append(current)
      seen.add(current)
    loops.append(np.asarray(loop, np.float64))
  return loops


def _triangulations(indices: tuple):
  """Every triangulation of the polygon with vertex `indices` (in order),
  as lists of index triples."""
  if len(indices) < 3:
    yield []
    return
  first, last = indices[0], indices[-1]
  for k in range(1, len(indices) - 1):
    for left in _triangulations(indices[:k + 1]):
      for right in _triangulations(indices[k:]):
        yield left + right + [(first, indices[k], last)]


def _triangle_areas(vertices: np.ndarray, triangles: list) -> np.ndarray:
  """Area of each triangle (index triples into vertices [N, 3])."""
  t = vertices[np.asarray(triangles)]
  return np.linalg.norm(np.cross(t[:, 1] - t[:, 0], t[:, 2] - t[:, 0]),
                        axis=1) / 2


def _polygon_area(loop: np.ndarray, scale: np.ndarray) -> float:
  """Area (mm²) of a marching-cubes polygon given in voxel units, scaled by
  the spacing. A non-planar polygon has no single area: it takes the
  triangulation of the largest area at unit spacing, the choice the classic
  marching-cubes table (and so DeepMind's) makes."""
  candidates = list(_triangulations(tuple(range(len(loop)))))
  unit = [_triangle_areas(loop, t).sum() for t in candidates]
  return float(_triangle_areas(loop * scale,
                               candidates[int(np.argmax(unit))]).sum())


@functools.lru_cache(maxsize=64)
def _area_table_cached(spacing: tuple) -> np.ndarray:
  ndim = len(spacing)
  scale = np.asarray(spacing, np.float64)
  corners = list(itertools.product((0, 1), repeat=ndim))
  table = np.zeros(2**(2**ndim))
  full = table.size - 1
  for code in range(1, full):
    # A piece's area must not depend on which side is the mask: cut the code
    # or its complement, whichever has fewer inside corners (the smaller
    # code on a tie), so faces with diagonal corners resolve alike.
    ones = bin(code).count('1')
    cut = min(code, full - code) if 2 * ones == 2**ndim else (
        code if 2 * ones < 2**ndim else full - code)
    inside = {c: bool(cut >> (2**ndim - 1 - k) & 1)
              for k, c in enumerate(corners)}
    segments = [s for face in _square_faces(ndim)
                for s in _cut_segments(inside, face)]
    if ndim == 2:
      table[code] = sum(np.linalg.norm((np.subtract(a, b)) * scale)
                        for a, b in segments)
    else:
      table[code] = sum(_polygon_area(loop, scale)
                        for loop in _loops(segments))
  table.flags.writeable = False
  return table


def area_table(spacing: Sequence[float]) -> np.ndarray:
  """Surface area (mm², 3D) or contour length (mm, 2D) of the marching-cubes
  piece inside each neighbourhood code of `neighbourhood_codes`, for voxels
  of `spacing` mm; [2**(2**ndim)], 0 for the empty and the full code.

  Vertices sit at edge midpoints; on a face with diagonal corners the
  minority side's corners are cut off alone; a non-planar polygon takes its
  triangulation of largest area at unit spacing. Built from these rules, the
  table equals DeepMind's `create_table_neighbour_code_to_surface_area` (and
  `..._contour_length` in 2D) for any spacing; tests check it.
  """
  spacing = tuple(float(s) for s in spacing)
  if len(spacing) not in (2, 3):
    raise ValueError(f'spacing: expected 2 or 3 values, got {spacing}')
  return _area_table_cached(spacing)


def _area_distances(pred, label, spacing) -> SurfaceDistances:
  box = _tight_box(pred | label)
  table = area_table(spacing)
  full = 2**(2**pred.ndim) - 1
  codes = [neighbourhood_codes(m[box]) for m in (pred, label)]
  borders = [(c != 0) & (c != full) for c in codes]
  pred_to_label = _distances_to(borders[1], spacing)[borders[0]]
  label_to_pred = _distances_to(borders[0], spacing)[borders[1]]
  return SurfaceDistances(pred_to_label, label_to_pred,
                          table[codes[0][borders[0]]],
                          table[codes[1][borders[1]]])


def weighted_surface_distances(pred, label, spacing: Sequence[float],
                               weighting: str = 'area') -> SurfaceDistances:
  """Surface distances and element weights of two non-empty boolean masks
  [*spatial] (2D or 3D), `weighting` 'area' or 'voxel'."""
  pred, label = np.asarray(pred, bool), np.asarray(label, bool)
  if weighting == 'voxel':
    a, b = surface_distances(pred, label, spacing)
    return SurfaceDistances(a, b, np.ones_like(a), np.ones_like(b))
  if weighting != 'area':
    raise ValueError(f"weighting: expected 'area' or 'voxel', got "
                     f'{weighting!r}')
  return _area_distances(pred, label, [float(s) for s in spacing])


def _percentile(distances, weights, weighting: str, q: float = 95) -> float:
  if weighting == 'voxel':
    return float(np.percentile(distances, q))
  order = np.lexsort((weights, distances))
  cumulative = np.cumsum(weights[order])
  index = np.searchsorted(cumulative / cumulative[-1], q / 100)
  return float(distances[order][min(index, distances.size - 1)])


def scores_from_distances(d: SurfaceDistances,
                          conventions: Conventions) -> dict:
  """hd95 (mm), assd (mm) and nsd of two non-empty masks' distances."""
  weighting = conventions.surface_weighting
  if conventions.hd95 == 'pooled':
    hd95 = _percentile(np.concatenate([d.pred_to_label, d.label_to_pred]),
                       np.concatenate([d.pred_weights, d.label_weights]),
                       weighting)
  else:
    hd95 = max(_percentile(d.pred_to_label, d.pred_weights, weighting),
               _percentile(d.label_to_pred, d.label_weights, weighting))
  total = d.pred_weights.sum() + d.label_weights.sum()
  assd = ((d.pred_to_label * d.pred_weights).sum() +
          (d.label_to_pred * d.label_weights).sum()) / total
  tolerance = conventions.nsd_tolerance_mm
  nsd = (d.pred_weights[d.pred_to_label <= tolerance].sum() +
         d.label_weights[d.label_to_pred <= tolerance].sum()) / total
  return {'hd95': hd95, 'assd': float(assd), 'nsd': float(nsd)}


def surface_scores(pred, label, spacing: Sequence[float],
                   conventions: Optional[Conventions] = None) -> dict:
  """hd95 and assd (mm) and nsd of two boolean masks [*spatial] from one
  pair of distance transforms, empty masks per `conventions`."""
  conventions = conventions or Conventions()
  pred, label = np.asarray(pred, bool), np.asarray(label, bool)
  if pred.shape != label.shape:
    raise ValueError(f'pred shape {pred.shape} does not match label shape '
                     f'{label.shape}')
  pred_empty, label_empty = not pred.any(), not label.any()
  if pred_empty or label_empty:
    return {m: empty_score(m, pred_empty, label_empty, conventions)
            for m in ('hd95', 'assd', 'nsd')}
  distances = weighted_surface_distances(pred, label, spacing,
                                         conventions.surface_weighting)
  return scores_from_distances(distances, conventions)


def hd95(pred, label, spacing,
         conventions: Optional[Conventions] = None) -> float:
  """95th-percentile Hausdorff distance (mm); by default the larger directed
  percentile over area-weighted surfaces (DeepMind `compute_robust_hausdorff`
  and the BraTS scorers). `Conventions(surface_weighting='voxel')` gives
  MONAI's, `Conventions.legacy()` medpy's pooled `hd95`."""
  return surface_scores(pred, label, spacing, conventions)['hd95']


def assd(pred, label, spacing,
         conventions: Optional[Conventions] = None) -> float:
  """Average symmetric surface distance (mm): the weighted mean of both
  directed distance sets together (area-weighted by default)."""
  return surface_scores(pred, label, spacing, conventions)['assd']


def normalized_surface_dice(pred, label, spacing,
                            tolerance_mm: Optional[float] = None,
                            conventions: Optional[Conventions] = None
                            ) -> float:
  """Share of both surfaces within `tolerance_mm` (default the conventions'
  tolerance) of the other surface (Nikolov et al. 2021); area-weighted by
  default, as DeepMind's `compute_surface_dice_at_tolerance`."""
  conventions = conventions or Conventions()
  if tolerance_mm is not None:
    conventions = dataclasses.replace(conventions,
                                      nsd_tolerance_mm=float(tolerance_mm))
  return surface_scores(pred, label, spacing, conventions)['nsd']


def per_case_report(prediction: np.ndarray, label: np.ndarray,
                    spacing: Sequence[float], num_classes: int,
                    tolerance_mm: Optional[float] = None,
                    class_names: Optional[Sequence[str]] = None,
                    conventions: Optional[Conventions] = None) -> dict:
  """HD95, ASSD and NSD per foreground class of one case.

  prediction, label: class indices [*spatial] (or multi-hot [*spatial, C],
  one channel per class); spacing: mm per spatial axis. conventions: None
  keeps `Conventions.legacy()` (the evaluator's numbers so far);
  tolerance_mm, when given, overrides the conventions' NSD tolerance. The
  report records its conventions.
  """
  conventions = conventions or Conventions.legacy()
  if tolerance_mm is not None:
    conventions = dataclasses.replace(conventions,
                                      nsd_tolerance_mm=float(tolerance_mm))
  prediction, label = np.asarray(prediction), np.asarray(label)
  if prediction.shape != label.shape:
    raise ValueError(f'prediction shape {prediction.shape} does not match '
                     f'label shape {label.shape}')
  multi_label = prediction.ndim == len(spacing) + 1
  names = list(class_names) if class_names else [
      f'class_{c}' for c in range(num_classes)]
  report = {'empty_convention': (EMPTY_CONVENTION
                                 if conventions == Conventions.legacy(
                                     conventions.nsd_tolerance_mm)
                                 else conventions.empty_text()),
            'tolerance_mm': conventions.nsd_tolerance_mm,
            'conventions': conventions.describe(), 'per_class': {}}
  first = 0 if multi_label else 1
  for c in range(first, num_classes):
    if multi_label:
      p, t = prediction[..., c] > 0, label[..., c] > 0
    else:
      p, t = prediction == c, label == c
    report['per_class'][names[c]] = surface_scores(p, t, spacing,
                                                   conventions)
  return report


def summarize_surface(reports: Sequence[dict]) -> dict:
  """Means over cases per class; inf and NaN values are counted
  (`<metric>_num_infinite`, `<metric>_num_nan`), not averaged."""
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
      out[name][f'{key}_num_infinite'] = int(np.isinf(vals).sum())
      out[name][f'{key}_num_nan'] = int(np.isnan(vals).sum())
  return out

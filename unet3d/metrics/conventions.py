"""Which definition of each per-case metric a report uses, as one value.

Surface metrics have several published definitions that differ by more than
rounding; a report that names its conventions can be compared with the
reference it follows:

- HD95 `'max_directed'`: the larger of the two directed 95th percentiles
  (MONAI `compute_hausdorff_distance(percentile=95)`, DeepMind
  `compute_robust_hausdorff(..., 95)`, the BraTS scorers; the default).
  `'pooled'`: the 95th percentile of both directed distance sets pooled
  together (medpy `hd95`).
- surface weighting `'area'`: each surface element weighs its area (mm²; its
  contour length in mm for 2D masks), as DeepMind's `surface-distance`
  computes NSD, ASSD and HD95 (the Medical Segmentation Decathlon and Metrics
  Reloaded NSD; the default). `'voxel'`: every boundary voxel counts once
  (medpy, MONAI).
- empty masks, per metric:

  | empty=    | both empty              | exactly one empty               |
  |-----------|-------------------------|---------------------------------|
  | `'fixed'` | dice, IoU, NSD 1;       | dice, IoU, NSD 0;               |
  |           | HD95, ASSD 0            | HD95, ASSD `hd95_penalty_mm`    |
  | `'nan'`   | every metric NaN        | dice, IoU, NSD 0; HD95, ASSD NaN|

  `'nan'` is nnU-Net's dice (NaN only when both are empty, so the case drops
  out of that class's mean) and MONAI's distances (NaN when either is empty).
  The default is `'fixed'` with the BraTS penalty of 373.13 mm (the diagonal
  of BraTS's 240x240x155 1 mm volume): a missed or hallucinated structure
  then weighs in every mean, where inf or NaN would drop it and flatter the
  mean. Set the penalty to your volumes' diagonal, or to inf for the
  behaviour before conventions existed (`Conventions.legacy()`).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Optional

HD95_CONVENTIONS = ('max_directed', 'pooled')
SURFACE_WEIGHTINGS = ('area', 'voxel')
EMPTY_POLICIES = ('fixed', 'nan')
BRATS_HD95_PENALTY_MM = 373.13

# Metrics where 1 is perfect (the rest are distances in mm, 0 is perfect).
_SIMILARITIES = ('dice', 'iou', 'nsd')
_DISTANCES = ('hd95', 'assd')


@dataclasses.dataclass(frozen=True)
class Conventions:
  """The definitions behind dice, IoU, HD95, ASSD and NSD of one report.

  hd95: 'max_directed' or 'pooled'. surface_weighting: 'area' or 'voxel'
  (applies to HD95, ASSD and NSD alike). empty: 'fixed' or 'nan'.
  hd95_penalty_mm: HD95 and ASSD when exactly one mask is empty under
  'fixed' (inf allowed). nsd_tolerance_mm: the NSD tolerance.
  """
  hd95: str = 'max_directed'
  surface_weighting: str = 'area'
  empty: str = 'fixed'
  hd95_penalty_mm: float = BRATS_HD95_PENALTY_MM
  nsd_tolerance_mm: float = 1.0

  def __post_init__(self):
    for name, allowed in (('hd95', HD95_CONVENTIONS),
                          ('surface_weighting', SURFACE_WEIGHTINGS),
                          ('empty', EMPTY_POLICIES)):
      if getattr(self, name) not in allowed:
        raise ValueError(f'Conventions.{name}: expected one of {allowed}, '
                         f'got {getattr(self, name)!r}')
    if not self.hd95_penalty_mm >= 0:  # also rejects NaN
      raise ValueError('Conventions.hd95_penalty_mm: must be >= 0 (inf '
                       f'allowed), got {self.hd95_penalty_mm}')
    if not (self.nsd_tolerance_mm >= 0 and math.isfinite(
        self.nsd_tolerance_mm)):
      raise ValueError('Conventions.nsd_tolerance_mm: must be finite and '
                       f'>= 0, got {self.nsd_tolerance_mm}')

  @classmethod
  def legacy(cls, nsd_tolerance_mm: float = 1.0) -> 'Conventions':
    """The surface metrics unet3d reported before conventions were
    selectable: pooled HD95 (medpy), voxel-counted surfaces, inf when one
    mask is empty."""
    return cls(hd95='pooled', surface_weighting='voxel', empty='fixed',
               hd95_penalty_mm=math.inf, nsd_tolerance_mm=nsd_tolerance_mm)

  def empty_text(self) -> str:
    """The empty-mask rule in one line."""
    if self.empty == 'nan':
      return ('both empty: every metric NaN; one empty: dice=iou=nsd=0, '
              'hd95=assd=NaN; NaN is left out of means')
    return ('both empty: dice=iou=nsd=1, hd95=assd=0; one empty: '
            f'dice=iou=nsd=0, hd95=assd={self.hd95_penalty_mm:g} mm')

  def describe(self) -> dict:
    """What every report records: the fields, the empty rule and the
    reference each choice matches."""
    hd95_ref = {'max_directed': 'MONAI / DeepMind surface-distance',
                'pooled': 'medpy'}[self.hd95]
    weight_ref = {'area': 'DeepMind surface-distance (MSD, Metrics '
                          'Reloaded)',
                  'voxel': 'medpy / MONAI'}[self.surface_weighting]
    return {**dataclasses.asdict(self),
            'empty_rule': self.empty_text(),
            'references': {'hd95': hd95_ref, 'surface_weighting': weight_ref}}


def empty_score(metric: str, pred_empty: bool, label_empty: bool,
                conventions: Conventions) -> Optional[float]:
  """The score of `metric` ('dice', 'iou', 'nsd', 'hd95', 'assd') when a
  mask is empty, per `conventions.empty`; None when neither is empty."""
  if metric not in _SIMILARITIES + _DISTANCES:
    raise ValueError(f'metric: expected one of {_SIMILARITIES + _DISTANCES}'
                     f', got {metric!r}')
  if not pred_empty and not label_empty:
    return None
  both = pred_empty and label_empty
  if metric in _SIMILARITIES:
    if both:
      return math.nan if conventions.empty == 'nan' else 1.0
    return 0.0
  if conventions.empty == 'nan':
    return math.nan
  return 0.0 if both else float(conventions.hd95_penalty_mm)

"""The per-case scoring that `--mode=eval` and `--mode=evaluate_folder`
share: one case's label and segmentation in, its table rows out.

```
label, prediction [*spatial] (class indices; masks [*spatial, K] for a
multi-label model), spacing (mm)
──▶ confusion counts ──▶ dice, IoU, precision, recall (empty rule)
──▶ HD95, ASSD, NSD per class (`Conventions`)
──▶ lesion-wise dice, HD95, TP/FP/FN, F1 per class (BraTS 2023), optional
──▶ volumes (ml) from voxel counts × voxel volume
──▶ rows: one per foreground class, then per BraTS region
```
Every metric follows one `Conventions` (`conventions_from_config`), and
each report records `conventions.describe()`.
"""

from __future__ import annotations

import dataclasses
from typing import Optional, Sequence

import numpy as np

from unet3d.config import Config
from unet3d.config.validation import empty_policy
from unet3d.evaluation import tables
from unet3d.metrics import lesions
from unet3d.metrics import overlap
from unet3d.metrics import surface
from unet3d.metrics.conventions import Conventions

# The lesion-wise columns, from `lesions.lesion_wise`'s keys.
LESION_KEYS = ('dice', 'hd95', 'tp', 'fp', 'fn', 'f1')


def conventions_from_config(cfg: Config) -> Conventions:
  """The `Conventions` of `cfg.metrics` (hd95, surface_weighting, the one
  empty-mask policy, hd95_penalty_mm, surface_tolerance_mm)."""
  m = cfg.metrics
  return Conventions(hd95=m.hd95, surface_weighting=m.surface_weighting,
                     empty=empty_policy(m),
                     hd95_penalty_mm=float(m.hd95_penalty_mm),
                     nsd_tolerance_mm=float(m.surface_tolerance_mm))


def empty_class_of(conventions: Conventions) -> str:
  """The overlap scores' name of the empty policy: 'one' for fixed,
  'exclude' for nan (`overlap.scores_from_counts`)."""
  return 'exclude' if conventions.empty == 'nan' else 'one'


@dataclasses.dataclass(frozen=True)
class ScoringOptions:
  """What `score_case` computes.

  class_names: num_classes names (index 0 the background of index labels);
  first_class: 1 leaves out the background, 0 for multi-label masks;
  ignore_label: label value left out of the counts (None: none).
  """
  class_names: tuple
  conventions: Conventions
  multi_label: bool = False
  first_class: int = 1
  ignore_label: Optional[int] = None
  surface_metrics: bool = True
  brats_regions: bool = False
  lesion_wise: bool = False
  lesion_dilation_mm: float = 3.0
  lesion_min_volume_mm3: float = 50.0

  @property
  def num_classes(self) -> int:
    return len(self.class_names)

  @classmethod
  def from_config(cls, cfg: Config, class_names: Sequence[str],
                  first_class: int) -> 'ScoringOptions':
    m = cfg.metrics
    return cls(tuple(class_names), conventions_from_config(cfg),
               multi_label=cfg.model.output_activation == 'sigmoid',
               first_class=first_class,
               ignore_label=cfg.loss_options.ignore_label,
               surface_metrics=m.surface_metrics,
               brats_regions=m.brats_regions, lesion_wise=m.lesion_wise,
               lesion_dilation_mm=float(m.lesion_dilation_mm),
               lesion_min_volume_mm3=float(m.lesion_min_volume_mm3))


@dataclasses.dataclass
class CaseScores:
  """One case's counts [C, 4], BraTS region counts [R, 4] (or None), its
  surface report (`surface.per_case_report`, or None) and table rows."""
  counts: np.ndarray
  regions: Optional[np.ndarray]
  surface: Optional[dict]
  rows: list


def _class_mask(array: np.ndarray, c: int, multi_label: bool) -> np.ndarray:
  return array[..., c] > 0 if multi_label else array == c


def _region_mask(array: np.ndarray, classes: Sequence[int]) -> np.ndarray:
  return np.isin(array, list(classes))


def lesion_columns(pred: np.ndarray, label: np.ndarray, spacing,
                   options: ScoringOptions) -> dict:
  """lesion_dice, lesion_hd95 (mm), lesion_tp, lesion_fp, lesion_fn and
  lesion_f1 of one structure (boolean masks [*spatial]). Under
  empty='nan', a structure empty in both has no lesion scores (None), as
  every other metric of it."""
  scores = lesions.lesion_wise(
      pred, label, spacing, dilation_mm=options.lesion_dilation_mm,
      min_volume_mm3=options.lesion_min_volume_mm3,
      conventions=options.conventions)
  row = {f'lesion_{k}': scores[k] for k in LESION_KEYS}
  if options.conventions.empty == 'nan' and not pred.any() \
      and not label.any():
    for k in ('dice', 'hd95', 'f1'):
      row[f'lesion_{k}'] = None
  return row


def score_case(case_id: str, label: np.ndarray, prediction: np.ndarray,
               spacing: Sequence[float], options: ScoringOptions
               ) -> CaseScores:
  """Scores one case: the rows of `tables.case_rows` (dice, IoU, precision,
  recall, HD95, ASSD, NSD, voxel counts), plus volume_label_ml and
  volume_pred_ml, and the lesion-wise columns when asked.

  label, prediction: class indices [*spatial] (or masks [*spatial, K] when
  options.multi_label), on one grid; spacing: mm per spatial axis.
  """
  label, prediction = np.asarray(label), np.asarray(prediction)
  if label.shape != prediction.shape:
    raise ValueError(f'case {case_id}: prediction shape {prediction.shape} '
                     f'does not match label shape {label.shape}')
  conventions = options.conventions
  activation = 'sigmoid' if options.multi_label else 'softmax'
  predicted = overlap.label_map_predictions(prediction[None],
                                            options.num_classes, activation)
  counts = overlap.counts_from_predictions(
      label[None], predicted, options.num_classes,
      ignore_label=options.ignore_label).numpy()[0]
  regions = None
  if options.brats_regions:
    regions = overlap.region_counts_from_classes(
        label[None], prediction[None]).numpy()[0]
  case_surface = None
  if options.surface_metrics:
    case_surface = surface.per_case_report(
        prediction, label, spacing, options.num_classes,
        class_names=list(options.class_names), conventions=conventions)
    case_surface['case_id'] = case_id
  names = list(options.class_names)
  region_names = list(overlap.BRATS_REGIONS)
  rows = tables.case_rows(case_id, counts, names, options.first_class,
                          empty_class_of(conventions), case_surface, regions,
                          region_names)
  voxel_ml = float(np.prod([float(s) for s in spacing])) / 1000.0
  masks = [(lambda a, c=c: _class_mask(a, c, options.multi_label))
           for c in range(options.first_class, options.num_classes)]
  if regions is not None:
    masks += [(lambda a, k=k: _region_mask(a, k))
              for k in overlap.BRATS_REGIONS.values()]
  for row, mask_of in zip(rows, masks):
    row['volume_label_ml'] = row['label_voxels'] * voxel_ml
    row['volume_pred_ml'] = row['predicted_voxels'] * voxel_ml
    if options.lesion_wise:
      row.update(lesion_columns(mask_of(prediction), mask_of(label), spacing,
                                options))
  return CaseScores(counts, regions, case_surface, rows)


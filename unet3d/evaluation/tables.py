"""Per-case and summary tables of an evaluation, as CSV and JSON.

  cases.csv / cases.json      one row per case and class: dice, IoU,
                              precision, recall, HD95, ASSD and NSD (mm),
                              label and predicted voxel counts and volumes
                              (ml); lesion_* columns with metrics.lesion_wise
  summary.csv / summary.json  one row per class (and BraTS region), then
                              `mean_foreground`: mean and sample standard
                              deviation over cases of each metric
  conventions.json            the metric conventions of the tables, for CSV
                              readers (summary.json holds them too)

Conventions (`unet3d.metrics.conventions`, docs/evaluation.md), stated in
summary.json and conventions.json:
- every metric of a structure empty in label or prediction follows the one
  empty-mask policy (metrics.empty_masks): 'fixed' scores it (1 / 0 / the
  HD95 penalty), 'nan' leaves it empty in the CSV and out of the means;
- an infinite HD95/ASSD (hd95_penalty_mm .inf) is 'inf' in CSV and null in
  JSON; means and deviations skip it and `<metric>_infinite` counts it;
- surface columns are empty when `metrics.surface_metrics` is off;
- `mean_foreground` is, per case, the mean over foreground classes (not
  regions) of the defined values, then mean ± std over cases;
- std is the sample standard deviation (ddof=1); empty for one case.
"""

from __future__ import annotations

import csv
import io
import math
from typing import Any, Optional, Sequence

import numpy as np

from unet3d import fileio
from unet3d.metrics import overlap

OVERLAP_METRICS = ('dice', 'iou', 'precision', 'recall')
SURFACE_METRICS = ('hd95', 'assd', 'nsd')
# Surface distances that are infinite when exactly one mask is empty.
DISTANCE_METRICS = ('hd95', 'assd')
METRICS = OVERLAP_METRICS + SURFACE_METRICS
VOLUME_COLUMNS = ('label_voxels', 'predicted_voxels', 'volume_label_ml',
                  'volume_pred_ml')
LESION_METRICS = ('lesion_dice', 'lesion_hd95', 'lesion_tp', 'lesion_fp',
                  'lesion_fn', 'lesion_f1')
CASE_COLUMNS = ('case_id', 'class') + METRICS + VOLUME_COLUMNS
SUMMARY_COLUMNS = (('class', 'cases') +
                   tuple(f'{m}_{s}' for m in METRICS for s in ('mean', 'std'))
                   + tuple(f'{m}_infinite' for m in DISTANCE_METRICS))
MEAN_FOREGROUND = 'mean_foreground'
CASES_CSV, CASES_JSON = 'cases.csv', 'cases.json'
SUMMARY_CSV, SUMMARY_JSON = 'summary.csv', 'summary.json'
CONVENTIONS_JSON = 'conventions.json'


def case_rows(case_id: str, counts: np.ndarray, class_names: Sequence[str],
              first_class: int, empty_class: str,
              surface_report: Optional[dict] = None,
              region_counts: Optional[np.ndarray] = None,
              region_names: Sequence[str] = ()) -> list[dict[str, Any]]:
  """The rows of one case.

  Args:
    case_id: the case's name.
    counts: [C, 4] (tp, fp, fn, tn) voxel counts per class.
    class_names: C names.
    first_class: 1 to leave out background (softmax), 0 for multi-label.
    empty_class: 'one' or 'exclude' (see `overlap.scores_from_counts`).
    surface_report: `surface.per_case_report` of the case, keyed by the
      same class names, or None.
    region_counts, region_names: BraTS region counts [R, 4], or None.
  """
  counts = np.asarray(counts, np.float64)
  surface_classes = (surface_report or {}).get('per_class', {})

  def rows_of(block, names, surfaces):
    scores = overlap.scores_from_counts(block[None], empty_class)
    rows = []
    for c, name in enumerate(names):
      row = {'case_id': case_id, 'class': name}
      for metric in OVERLAP_METRICS:
        row[metric] = _number(scores[metric][0, c])
      for metric in SURFACE_METRICS:
        row[metric] = (_number(surfaces[name][metric]) if name in surfaces
                       else None)
      tp, fp, fn = block[c, overlap.TP], block[c, overlap.FP], block[
          c, overlap.FN]
      row['label_voxels'] = int(tp + fn)
      row['predicted_voxels'] = int(tp + fp)
      rows.append(row)
    return rows

  rows = rows_of(counts[first_class:], list(class_names)[first_class:],
                 surface_classes)
  if region_counts is not None:
    rows += rows_of(np.asarray(region_counts, np.float64), list(region_names),
                    {})
  return rows


def _number(value) -> Optional[float]:
  """float, or None for NaN (an excluded score)."""
  value = float(value)
  return None if math.isnan(value) else value


def _mean_std(values: list[Optional[float]]) -> tuple[Optional[float],
                                                      Optional[float], int]:
  """(mean, sample std, number of infinite values) of the finite values."""
  present = np.array([v for v in values if v is not None], np.float64)
  finite = present[np.isfinite(present)]
  mean = float(finite.mean()) if finite.size else None
  std = float(finite.std(ddof=1)) if finite.size > 1 else None
  return mean, std, int((~np.isfinite(present)).sum())


def summary_rows(rows: Sequence[dict[str, Any]],
                 foreground: Sequence[str]) -> list[dict[str, Any]]:
  """One row per class or region (in order of appearance), then
  `mean_foreground` over the `foreground` class names."""
  by_class: dict[str, list[dict]] = {}
  for row in rows:
    by_class.setdefault(row['class'], []).append(row)
  # Per case: the mean over foreground classes of each metric's finite
  # values (inf stays inf when every class is infinite).
  per_case: dict[str, dict[str, list]] = {}
  for row in rows:
    if row['class'] in foreground:
      case = per_case.setdefault(row['case_id'], {m: [] for m in METRICS})
      for metric in METRICS:
        if row[metric] is not None:
          case[metric].append(row[metric])
  mean_rows = []
  for case_id, values in per_case.items():
    row = {'case_id': case_id, 'class': MEAN_FOREGROUND}
    for metric, vals in values.items():
      finite = [v for v in vals if math.isfinite(v)]
      row[metric] = (float(np.mean(finite)) if finite else
                     (math.inf if vals else None))
    mean_rows.append(row)
  out = []
  groups = list(by_class.items())
  if mean_rows:
    groups.append((MEAN_FOREGROUND, mean_rows))
  lesion = tuple(m for m in LESION_METRICS if any(m in r for r in rows))
  for name, group in groups:
    summary = {'class': name, 'cases': len(group)}
    for metric in METRICS + lesion:
      if metric in lesion and metric not in group[0]:
        continue  # mean_foreground: lesion scores are per class
      mean, std, infinite = _mean_std([r.get(metric) for r in group])
      summary[f'{metric}_mean'], summary[f'{metric}_std'] = mean, std
      if metric in DISTANCE_METRICS:
        summary[f'{metric}_infinite'] = infinite
    out.append(summary)
  return out


def _csv_value(value) -> str:
  if value is None:
    return ''
  if isinstance(value, float):
    return f'{value:.6g}'  # 'inf' for infinity
  return str(value)


def to_csv(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> str:
  """CSV text with a header; None is empty, infinity 'inf'."""
  buffer = io.StringIO()
  writer = csv.writer(buffer, lineterminator='\n')
  writer.writerow(columns)
  for row in rows:
    writer.writerow([_csv_value(row.get(c)) for c in columns])
  return buffer.getvalue()


def _json_safe(value):
  """Infinity becomes None (JSON has no infinity; see the module doc)."""
  if isinstance(value, float) and math.isinf(value):
    return None
  if isinstance(value, dict):
    return {k: _json_safe(v) for k, v in value.items()}
  if isinstance(value, list):
    return [_json_safe(v) for v in value]
  return value


def summary_columns(summary: Sequence[dict[str, Any]]) -> tuple[str, ...]:
  """SUMMARY_COLUMNS, then the lesion-wise means and deviations when the
  summary has them."""
  lesion = tuple(f'{m}_{s}' for m in LESION_METRICS for s in ('mean', 'std')
                 if any(f'{m}_mean' in row for row in summary))
  return SUMMARY_COLUMNS + lesion


def case_columns(rows: Sequence[dict[str, Any]]) -> tuple[str, ...]:
  """CASE_COLUMNS, then the lesion-wise columns when the rows have them."""
  return CASE_COLUMNS + tuple(m for m in LESION_METRICS
                              if any(m in row for row in rows))


def write_tables(report_dir: str, rows: Sequence[dict[str, Any]],
                 summary: Sequence[dict[str, Any]],
                 meta: dict[str, Any]) -> dict[str, str]:
  """Writes the five files (atomically) into report_dir; returns their
  paths by name. `meta` (step, `conventions`, ...) heads summary.json;
  its `conventions` is conventions.json."""
  paths = {name: fileio.join(report_dir, name) for name in
           (CASES_CSV, SUMMARY_CSV, CASES_JSON, SUMMARY_JSON,
            CONVENTIONS_JSON)}
  fileio.write_text(paths[CASES_CSV], to_csv(rows, case_columns(rows)))
  fileio.write_text(paths[SUMMARY_CSV],
                    to_csv(summary, summary_columns(summary)))
  fileio.write_json(paths[CONVENTIONS_JSON],
                    _json_safe(meta.get('conventions')))
  fileio.write_json(paths[CASES_JSON], _json_safe(list(rows)))
  fileio.write_json(paths[SUMMARY_JSON],
                    _json_safe({**meta, 'classes': list(summary)}))
  return paths

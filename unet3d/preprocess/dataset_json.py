"""The `dataset.json` a converter writes next to its TFRecord shards.

Top-level keys:

  name, format            the input path; the record schema
  fingerprint_version     which per-case fingerprint keys (below) a planner
                          can rely on (dataset_info.FINGERPRINT_VERSION)
  labels                  {"0": "background", "1": ...} (training reads it
                          for class names); mask channels when multi-label
  label_type              "index" ([D, H, W]) or "multi_label" ([D, H, W, K])
  modalities, num_channels  {"0": "CT"}, channel count
  class_voxel_counts      {"0": n, ...} over the stored label arrays
  num_cases, num_train, num_val, num_records {"train", "val"}
  shards                  {"train": [file names], "val": [...]}
  compressed              GZIP or not
  splits_file, num_folds, fold, seed   splits.json and the fold written
  spacing                 {"median", "min", "max"} of the input spacing (mm,
                          per canonical axis when reoriented)
  intensity               per channel: foreground mean/std/min/max and
                          0.5/50/99.5 percentiles before normalisation
  preprocessing           orientation, crop_to_nonzero, resample
                          (target_spacing + where it came from, or
                          target_shape), interpolation, per-channel
                          normalization (scheme, clip, mean, std,
                          within_nonzero_mask as resolved, ...), plus
                          dataset-specific steps
  cases                   one entry per stored case (below)
  skipped                 [{"case_id", "stage", "error"}] with on_error=skip
  seconds                 conversion wall time

Each case: case_id, split, shard, image_files, label_file, original
{shape, affine, spacing, orientation} of the input, stored {...} of the
record's array, nonzero_crop {start, stop} (voxels of the reoriented input),
intensity (this case's foreground statistics before normalisation: per
channel count/mean/std/min/max/percentile_00_5/median/percentile_99_5),
channel_mean/channel_std (what normalisation subtracted and divided by),
class_voxel_counts, label_type and num_records (> 1 with augmented crops).
The dataset fingerprint a planner reads (as nnU-Net's), per case:

  cropped                 {"shape": [3 voxels], "spacing": [3 mm]} after
                          reorienting and cropping to nonzero, before
                          resampling
  nonzero_fraction        voxels of the nonzero bounding box / original
                          voxels, whether or not the plan crops to it
                          (`spatial.nonzero_fraction`)
  components              {"<class>": {"count", "largest_voxels"}}: the
                          face-connected components of each foreground class
                          (mask channel when multi-label) present in the
                          stored label, and the sizes of the 10 largest
                          (stored-grid voxels, largest first)
  foreground_box          {"start", "stop"}: the stored-grid voxels of the
                          box holding every labelled voxel (cases with a
                          foreground only)
  centroid_voxel          {"<class>": [3 floats]}: the mean voxel index per
                          array axis of each such class on the stored grid

`preprocessing.restore_original(array, case)` maps a stored-grid array back
onto the original grid, and `plan_from_dataset_info` reads the
`preprocessing` section back (predict replays it on new volumes).
"""

from __future__ import annotations

import math
import re
from typing import Any, Mapping, Optional

import numpy as np

from unet3d.input import dataset_info
from unet3d.input import splits
from unet3d.preprocess import cases
from unet3d.preprocess import intensity
from unet3d.preprocess import spatial

# dataset.json `preprocessing` keys that `plan_from_dataset_info` reads back;
# the rest are dataset-specific steps that need the label.
REPLAYED_PREPROCESSING = ('orientation', 'crop_to_nonzero', 'resample',
                          'image_interpolation', 'label_interpolation',
                          'normalization')


def _label_names(source: cases.Source, counts: np.ndarray,
                 multi_label: bool) -> dict[str, str]:
  if source.labels is not None:
    return dict(source.labels)
  prefix = 'channel' if multi_label else 'class'
  return {str(k): ('background' if k == 0 and not multi_label else
                   f'{prefix}_{k}') for k in range(len(counts))}


def class_count_totals(infos: list[dict[str, Any]],
                       labels: Mapping[str, str]) -> dict[str, int]:
  """dataset.json's `class_voxel_counts`: the cases' counts summed, per
  label (0 for a label no case holds; a case without counts adds none)."""
  return _per_label(_sum_counts(infos), labels)


def _per_label(counts: np.ndarray, labels: Mapping[str, str]
              ) -> dict[str, int]:
  return {k: int(counts[int(k)]) if int(k) < len(counts) else 0
          for k in labels}


def _sum_counts(infos: list[dict[str, Any]]) -> np.ndarray:
  per_case = [i.get('class_voxel_counts') or [] for i in infos]
  total = np.zeros(max([len(c) for c in per_case] + [0]), np.int64)
  for counts in per_case:
    total[:len(counts)] += counts
  return total


def _intensity(infos: list[dict[str, Any]],
               samples: list[np.ndarray]) -> list[dict[str, float]]:
  """Per-channel foreground statistics before normalisation, over all
  stored cases (exact mean/std/min/max; percentiles from samples)."""
  out = []
  pooled = np.concatenate(samples) if samples else None
  for c in range(len(infos[0]['intensity']['mean'])):
    n = np.array([i['intensity']['count'][c] for i in infos], np.float64)
    mean = np.array([i['intensity']['mean'][c] for i in infos])
    std = np.array([i['intensity']['std'][c] for i in infos])
    total_mean = float((n * mean).sum() / n.sum())
    total_var = float((n * (std**2 + (mean - total_mean)**2)).sum() / n.sum())
    entry = {'mean': total_mean, 'std': float(np.sqrt(total_var)),
             'min': float(min(i['intensity']['min'][c] for i in infos)),
             'max': float(max(i['intensity']['max'][c] for i in infos))}
    if pooled is not None and len(pooled):
      p = np.percentile(pooled[:, c], [0.5, 50, 99.5])
      entry.update({'percentile_00_5': float(p[0]), 'median': float(p[1]),
                    'percentile_99_5': float(p[2])})
    out.append(entry)
  return out


def _preprocessing(source: cases.Source, plan: cases.Plan,
                   spacing_from: str) -> dict[str, Any]:
  norms = []
  for norm in plan.norms:
    entry = {'scheme': norm.scheme}
    if norm.scheme == 'ct':
      entry.update({'window': None if norm.window is None else
                               list(norm.window),
                    'percentiles': (None if norm.window is not None else
                                    list(norm.percentiles)),
                    'clip': [norm.clip_low, norm.clip_high],
                    'mean': norm.mean, 'std': norm.std})
    elif norm.scheme == 'zscore':
      entry['within_nonzero_mask'] = norm.nonzero_mask
    norms.append(entry)
  resample: Optional[dict[str, Any]] = None
  if plan.target_shape is not None:
    resample = {'target_shape': list(plan.target_shape)}
  elif plan.target_spacing is not None:
    resample = {'target_spacing': list(plan.target_spacing),
                'target_spacing_from': spacing_from}
  return {
      'orientation': spatial.CANONICAL if plan.reorient else 'unchanged',
      'crop_to_nonzero': plan.crop_nonzero,
      'resample': resample,
      'image_interpolation': f'spline order {plan.image_order}',
      'label_interpolation': ('one-hot linear' if
                              plan.label_interpolation == 'linear' else
                              'nearest'),
      'normalization': norms,
      **(source.description or {}),
  }


def _spacing(survey: dict[str, dict[str, Any]]) -> dict[str, Any]:
  spacing = np.array([s['spacing'] for s in survey.values()])
  return {'median': np.median(spacing, axis=0).tolist(),
          'min': spacing.min(axis=0).tolist(),
          'max': spacing.max(axis=0).tolist()}


def dataset_summary(source: cases.Source, plan: cases.Plan, *,
                    survey: dict[str, dict[str, Any]], num_folds: int,
                    infos: list[dict[str, Any]], samples: list[np.ndarray],
                    shards: dict[str, list[str]],
                    skipped: list[dict[str, str]], spacing_from: str,
                    compressed: bool, fold: int, seed: int,
                    schema_version: int
                   ) -> dict[str, Any]:
  """dataset.json's content from the converter's per-case infos."""
  counts = _sum_counts(infos)
  multi_label = any(i['label_type'] == 'multi_label' for i in infos)
  labels = _label_names(source, counts, multi_label)
  return {
      'name': source.name,
      'format': (f'unet3d TFRecord schema {schema_version} '
                 '(unet3d/input/schema.py)'),
      'fingerprint_version': dataset_info.FINGERPRINT_VERSION,
      'labels': labels,
      'label_type': 'multi_label' if multi_label else 'index',
      'modalities': dict(source.modalities),
      'num_channels': len(source.modalities),
      'class_voxel_counts': _per_label(counts, labels),
      'num_cases': len(infos),
      'num_train': sum(i['split'] == 'train' for i in infos),
      'num_val': sum(i['split'] == 'val' for i in infos),
      'num_records': {split: sum(i['num_records'] for i in infos
                                 if i['split'] == split)
                      for split in splits.SPLIT_NAMES},
      'shards': shards,
      'compressed': compressed,
      'splits_file': splits.SPLITS_JSON,
      'num_folds': num_folds,
      'fold': fold,
      'seed': seed,
      'spacing': _spacing(survey),
      'intensity': _intensity(infos, samples),
      'preprocessing': _preprocessing(source, plan, spacing_from),
      'cases': sorted(infos, key=lambda i: i['case_id']),
      'skipped': skipped,
  }


def _channel_norm(entry: Mapping[str, Any], where: str
                 ) -> intensity.ChannelNorm:
  """One `normalization` entry of dataset.json as a resolved ChannelNorm."""
  scheme = entry.get('scheme')
  try:
    if scheme == 'ct':
      low, high = entry['clip']
      return intensity.ChannelNorm('ct', clip_low=float(low),
                                   clip_high=float(high),
                                   mean=float(entry['mean']),
                                   std=float(entry['std']))
    if scheme == 'zscore':
      return intensity.ChannelNorm(
          'zscore', nonzero_mask=bool(entry['within_nonzero_mask']))
  except KeyError as e:
    raise ValueError(f'{where} has no key {e}') from None
  if scheme == 'none':
    return intensity.ChannelNorm('none')
  raise ValueError(f'{where}.scheme: expected ct, zscore or none, got '
                   f'{scheme!r}')


def _is_number(value: Any) -> bool:
  return (isinstance(value, (int, float)) and not isinstance(value, bool)
          and math.isfinite(value))


def _per_axis(value: Any, key: str, ok, expected: str) -> tuple:
  """Three per-axis values that each pass `ok`; a ValueError naming `key`."""
  if (not isinstance(value, (list, tuple)) or len(value) != 3 or
      not all(ok(v) for v in value)):
    shown = repr(value)
    shown = shown if len(shown) <= 60 else shown[:57] + '...'
    raise ValueError(f'{key}: expected 3 {expected}, got {shown}')
  return tuple(value)


def checked_spacing(value: Any, key: str) -> tuple[float, float, float]:
  """Three finite spacings > 0 (mm)."""
  return tuple(float(v) for v in _per_axis(
      value, key, lambda v: _is_number(v) and v > 0,
      'finite spacings > 0 (mm)'))


def checked_shape(value: Any, key: str) -> tuple[int, int, int]:
  """Three positive integer sizes (voxels)."""
  return tuple(int(v) for v in _per_axis(
      value, key, lambda v: isinstance(v, int) and not isinstance(v, bool)
      and v > 0, 'positive integers (voxels)'))


def plan_from_dataset_info(dataset_info: Mapping[str, Any],
                           source: str = 'dataset.json') -> cases.Plan:
  """The converter's `cases.Plan`, read back from its dataset.json.

  Args:
    dataset_info: the parsed dataset.json (its `preprocessing` section is
      used).
    source: names the file in error messages.

  Raises a one-line ValueError naming `source` and the key when the
  section is missing or not understood.
  """
  section = dataset_info.get('preprocessing') if isinstance(
      dataset_info, Mapping) else None
  if not isinstance(section, Mapping):
    raise ValueError(f'{source}: no preprocessing section (expected the '
                     'dataset.json a data_preprocess converter writes)')
  where = 'preprocessing'
  try:
    orientation = section['orientation']
    if orientation not in (spatial.CANONICAL, 'unchanged'):
      raise ValueError(f'{where}.orientation: expected {spatial.CANONICAL} or '
                       f'unchanged, got {orientation!r}')
    order = re.fullmatch(r'spline order (\d)',
                         str(section['image_interpolation']))
    if order is None:
      raise ValueError(f"{where}.image_interpolation: expected 'spline order "
                       f"N', got {section['image_interpolation']!r}")
    resample = section['resample'] or {}
    target_spacing = resample.get('target_spacing')
    if target_spacing is not None:
      target_spacing = checked_spacing(target_spacing,
                                       f'{where}.resample.target_spacing')
    target_shape = resample.get('target_shape')
    if target_shape is not None:
      target_shape = checked_shape(target_shape,
                                   f'{where}.resample.target_shape')
    norms = tuple(_channel_norm(entry, f'{where}.normalization[{c}]')
                  for c, entry in enumerate(section['normalization']))
    return cases.Plan(
        reorient=orientation == spatial.CANONICAL,
        crop_nonzero=bool(section['crop_to_nonzero']),
        target_spacing=(None if target_spacing is None else
                        tuple(float(s) for s in target_spacing)),
        target_shape=(None if target_shape is None else
                      tuple(int(s) for s in target_shape)),
        image_order=int(order.group(1)), norms=norms)
  except KeyError as e:
    raise ValueError(f'{source}: {where} has no key {e}') from None
  except (TypeError, AttributeError) as e:
    raise ValueError(f'{source}: {where} is malformed ({e})') from None
  except ValueError as e:
    raise ValueError(f'{source}: {e}') from None

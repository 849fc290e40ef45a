"""Scores a folder of existing segmentations against a folder of labels
(`--mode=evaluate_folder`, as nnU-Net's `nnUNetv2_evaluate_folder`).

```
label_dir/*.nii.gz, prediction_dir/*.nii.gz ──match_cases (by case id)
──▶ per case: both on one grid (check_same_grid), else a one-line error
──▶ scoring.score_case: the per-case scoring --mode=eval uses
──▶ output_dir/metrics.csv   one row per case and class
    output_dir/summary.json  per class and metric: mean, median, std, 95 %
                             bootstrap CI of the mean; the conventions
    output_dir/overlays/<case>.png (on the image, or on the label)
```
Matching: a label's case id is its file name without `.nii.gz`/`.nii`. A
prediction matches the label of its own name (nnU-Net's output), or of its
name without `_seg` (unet3d predict's `<name>_seg.nii.gz`); an image
matches by its name, or its name without nnU-Net's channel suffix
`_0000`. `*_probabilities.nii.gz` (predict's probabilities) are skipped.
"""

from __future__ import annotations

import dataclasses
import math
import os
from typing import Any, Optional, Sequence

import numpy as np

from unet3d import fileio
from unet3d.config import Config
from unet3d.evaluation import overlays
from unet3d.evaluation import scoring
from unet3d.evaluation import tables
from unet3d.preprocess import decathlon
from unet3d.preprocess import io
from unet3d.preprocess import nnunet

METRICS_CSV, SUMMARY_JSON, CONVENTIONS_JSON = ('metrics.csv', 'summary.json',
                                               'conventions.json')
FOLDER_COLUMNS = ('case', 'class', 'dice', 'iou', 'hd95', 'assd', 'nsd',
                  'volume_pred_ml', 'volume_label_ml')
LESION_COLUMNS = ('lesion_dice', 'lesion_hd95', 'lesion_tp', 'lesion_fp',
                  'lesion_fn', 'lesion_f1')
SUMMARY_METRICS = FOLDER_COLUMNS[2:]
BOOTSTRAP_SAMPLES = 2000
BOOTSTRAP_SEED = 0
# A prediction is on its label's grid when every affine entry of the
# direction cosines agrees within this, and origin and spacing within
# GRID_MM.
GRID_MM, GRID_ROTATION = 1e-3, 1e-4
_SKIPPED = ('_probabilities.nii.gz', '_probabilities.nii')


def _volumes(folder: str, what: str) -> dict[str, str]:
  """{file name without suffix: path} of the NIfTI files in folder."""
  if not folder or not os.path.isdir(folder):
    raise FileNotFoundError(f'--{what}: {folder!r} is not a folder')
  out = {}
  for name in sorted(os.listdir(folder)):
    if name.endswith(('.nii.gz', '.nii')) and not name.endswith(_SKIPPED):
      out[io.strip_suffix(name)] = os.path.join(folder, name)
  if not out:
    raise FileNotFoundError(f'--{what}: no .nii.gz/.nii files in {folder}')
  return out


def candidate_ids(stem: str, kind: str) -> list[str]:
  """The case ids a file name (without suffix) may stand for, most
  specific first: 'prediction' also tries it without `_seg`, 'image'
  without nnU-Net's channel suffix `_NNNN`."""
  ids = [stem]
  if kind == 'prediction' and stem.endswith('_seg'):
    ids.append(stem[:-len('_seg')])
  channel = nnunet.CHANNEL_NAME.match(stem)
  if kind == 'image' and channel:
    ids.append(channel['case'])
  return ids


def _short(names: Sequence[str], count: int = 3) -> str:
  shown = ', '.join(sorted(names)[:count])
  return shown + (f' and {len(names) - count} more' if len(names) > count
                  else '')


def match_cases(labels: dict[str, str], files: dict[str, str], kind: str
               ) -> tuple[dict[str, str], list[str]]:
  """({case id: file} of the files matching a label, [unmatched file
  names]); two files for one case is an error."""
  matched, unmatched = {}, []
  for stem, path in files.items():
    case = next((c for c in candidate_ids(stem, kind) if c in labels), None)
    if case is None:
      unmatched.append(os.path.basename(path))
    elif case in matched:
      raise ValueError(f'case {case}: two {kind}s, {matched[case]} and '
                       f'{path}')
    else:
      matched[case] = path
  return matched, unmatched


def pair_cases(label_dir: str, prediction_dir: str,
               allow_missing: bool = False
               ) -> list[tuple[str, str, Optional[str]]]:
  """[(case id, label path, prediction path or None)], sorted by case id.

  A prediction without a label is an error; so is a label without a
  prediction, unless allow_missing (then None: scored as an empty
  prediction).
  """
  labels = _volumes(label_dir, 'label_dir')
  predictions, extra = match_cases(labels, _volumes(prediction_dir,
                                                    'prediction_dir'),
                                   'prediction')
  if extra:
    raise ValueError(f'--prediction_dir: {len(extra)} predictions match no '
                     f'label in {label_dir}: {_short(extra)}')
  missing = [c for c in labels if c not in predictions]
  if missing and not allow_missing:
    raise ValueError(f'--prediction_dir: no prediction for {len(missing)} '
                     f'labels: {_short(missing)} (--allow_missing_predictions'
                     ' scores them as empty predictions)')
  return [(c, labels[c], predictions.get(c)) for c in sorted(labels)]


def grid_mismatch(label_shape: Sequence[int], label_affine: np.ndarray,
                  pred_shape: Sequence[int], pred_affine: np.ndarray
                  ) -> Optional[str]:
  """Why a prediction is not on its label's grid (shape; spacing, origin
  within GRID_MM mm; direction cosines within GRID_ROTATION), or None."""
  if tuple(label_shape) != tuple(pred_shape):
    return f'shape {tuple(pred_shape)} != label shape {tuple(label_shape)}'
  a, b = np.asarray(label_affine, float), np.asarray(pred_affine, float)
  spacing_a, spacing_b = io.spacing_of(a), io.spacing_of(b)
  if np.abs(spacing_a - spacing_b).max() > GRID_MM:
    return f'spacing {spacing_b.tolist()} != label {spacing_a.tolist()} mm'
  if np.abs(a[:3, 3] - b[:3, 3]).max() > GRID_MM:
    return (f'origin {b[:3, 3].tolist()} != label {a[:3, 3].tolist()} mm')
  turn = np.abs(a[:3, :3] / spacing_a - b[:3, :3] / spacing_b).max()
  if turn > GRID_ROTATION:
    return f'direction differs from the label by {turn:.3g}'
  return None


def dataset_json_path(label_dir: str, given: Optional[str]) -> Optional[str]:
  """--dataset_json, else label_dir/../dataset.json when present (nnU-Net's
  layout), else None."""
  if given:
    return given
  beside = os.path.join(os.path.dirname(os.path.abspath(label_dir)),
                        'dataset.json')
  return beside if os.path.isfile(beside) else None


def names_from_dataset_json(info: dict, path: str) -> list[str]:
  """Class names by label value from a dataset.json's `labels`: nnU-Net v2
  ({name: value}) or MSD / nnU-Net v1 ({"value": name})."""
  names = decathlon.names_by_value(info, 'labels', path)
  return [names[str(v)] for v in range(len(names))]


def summary_statistics(values: Sequence[Optional[float]],
                       samples: int = BOOTSTRAP_SAMPLES,
                       seed: int = BOOTSTRAP_SEED) -> dict[str, Any]:
  """mean, median, std (sample, ddof=1) and the 95 % percentile-bootstrap
  interval of the mean (`samples` resamples of the cases with replacement,
  numpy `default_rng(seed).integers(0, n, (samples, n))`, then the 2.5th
  and 97.5th percentiles of the resampled means) of the finite values;
  None and NaN (excluded scores) are left out, infinite ones counted."""
  present = np.array([v for v in values if v is not None], np.float64)
  present = present[~np.isnan(present)]
  finite = present[np.isfinite(present)]
  out = {'n': int(finite.size), 'num_infinite': int(present.size -
                                                    finite.size),
         'mean': None, 'median': None, 'std': None, 'ci95': None}
  if not finite.size:
    return out
  out['mean'] = float(finite.mean())
  out['median'] = float(np.median(finite))
  out['std'] = float(finite.std(ddof=1)) if finite.size > 1 else None
  draws = np.random.default_rng(seed).integers(0, finite.size,
                                               (samples, finite.size))
  means = finite[draws].mean(axis=1)
  out['ci95'] = [float(x) for x in np.percentile(means, [2.5, 97.5])]
  return out


def summarize(rows: Sequence[dict], metrics: Sequence[str],
              samples: int = BOOTSTRAP_SAMPLES, seed: int = BOOTSTRAP_SEED
              ) -> dict[str, dict]:
  """{class: {metric: summary_statistics}} over the cases' rows."""
  by_class: dict[str, list] = {}
  for row in rows:
    by_class.setdefault(row['class'], []).append(row)
  return {name: {m: summary_statistics([r.get(m) for r in group], samples,
                                       seed) for m in metrics}
          for name, group in by_class.items()}


@dataclasses.dataclass(frozen=True)
class FolderOptions:
  """The folders and choices of one evaluate_folder run."""
  label_dir: str
  prediction_dir: str
  output_dir: str
  image_dir: Optional[str] = None
  dataset_json: Optional[str] = None
  allow_missing: bool = False
  # From the data (largest label value + 1) when None and no dataset.json.
  num_classes: Optional[int] = None

  def __post_init__(self):
    for key in ('label_dir', 'prediction_dir', 'output_dir'):
      if not getattr(self, key):
        raise ValueError(f'--{key}: required with --mode=evaluate_folder')


def options_from_flags(argv_flags, cfg: Config) -> FolderOptions:
  """FolderOptions of the command line (--label_dir, --prediction_dir,
  --output_dir, --image_dir, --dataset_json, --allow_missing_predictions);
  num_classes from the config only when --config_file or --params_override
  is given."""
  given = argv_flags.config_file or argv_flags.params_override
  return FolderOptions(argv_flags.label_dir, argv_flags.prediction_dir,
                       argv_flags.output_dir, argv_flags.image_dir,
                       argv_flags.dataset_json,
                       argv_flags.allow_missing_predictions,
                       cfg.num_classes if given else None)


def _load(path: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  array, affine, spacing = io.load_nifti(path)
  if array.ndim != 3:
    raise ValueError(f'{path}: expected a 3D volume of class indices, got '
                     f'shape {array.shape}')
  rounded = np.rint(array)
  if np.any(rounded != array) or (array.size and array.min() < 0):
    raise ValueError(f'{path}: expected non-negative integer class indices')
  return rounded.astype(np.int32), affine, spacing


def _num_classes(pairs, given: Optional[int]) -> int:
  """`given`, or the largest value of every label and prediction + 1."""
  if given:
    return int(given)
  largest = 1
  for _, label_path, pred_path in pairs:
    for path in (label_path, pred_path):
      if path:
        largest = max(largest, int(_load(path)[0].max()))
  return largest + 1


def _image_paths(image_dir: Optional[str], cases: Sequence[str]
                ) -> dict[str, str]:
  """{case id: image} (the first channel file per case) in image_dir."""
  if not image_dir:
    return {}
  images = {}
  for stem, path in sorted(_volumes(image_dir, 'image_dir').items()):
    case = next((c for c in candidate_ids(stem, 'image') if c in cases), None)
    if case is not None:
      images.setdefault(case, path)
  return images


def evaluate_folder(cfg: Config, options: FolderOptions,
                    samples: int = BOOTSTRAP_SAMPLES,
                    seed: int = BOOTSTRAP_SEED) -> dict[str, Any]:
  """Scores every prediction against its label; writes metrics.csv,
  summary.json, conventions.json and overlays/ (metrics.overlays) into
  output_dir, and returns the summary.

  cfg supplies metrics.* (conventions, lesion_wise, brats_regions,
  surface_metrics, overlays); num_classes comes from the options, the
  dataset.json's labels, or the data.
  """
  pairs = pair_cases(options.label_dir, options.prediction_dir,
                     options.allow_missing)
  json_path = dataset_json_path(options.label_dir, options.dataset_json)
  names = (names_from_dataset_json(fileio.read_json(json_path), json_path)
           if json_path else None)
  num_classes = (options.num_classes or (len(names) if names else None) or
                 _num_classes(pairs, None))
  if names and len(names) != num_classes:
    raise ValueError(f'{json_path}: labels: {len(names)} classes, but '
                     f'num_classes is {num_classes}')
  names = names or [f'class_{c}' for c in range(num_classes)]
  scoring_options = dataclasses.replace(
      scoring.ScoringOptions.from_config(cfg, names, first_class=1),
      multi_label=False, ignore_label=None)
  images = _image_paths(options.image_dir, [c for c, _, _ in pairs])
  overlay_dir = (os.path.join(options.output_dir, 'overlays')
                 if cfg.metrics.overlays else None)
  rows, written = [], []
  for case, label_path, pred_path in pairs:
    label, affine, spacing = _load(label_path)
    if pred_path:
      prediction, pred_affine, _ = _load(pred_path)
      problem = grid_mismatch(label.shape, affine, prediction.shape,
                              pred_affine)
      if problem:
        raise ValueError(f'case {case}: prediction {pred_path} is not on the '
                         f'grid of label {label_path}: {problem}')
    else:
      prediction = np.zeros_like(label)
    for path, array in ((label_path, label), (pred_path, prediction)):
      if array.size and array.max() >= num_classes:
        raise ValueError(f'{path}: class value {int(array.max())} >= '
                         f'num_classes {num_classes}')
    scores = scoring.score_case(case, label, prediction, spacing,
                                scoring_options)
    rows.extend(scores.rows)
    if overlay_dir:
      image = (io.load_nifti(images[case])[0] if case in images
               else label).astype(np.float32)
      if image.ndim == 4:
        image = image[..., 0]
      written.append(overlays.write_case_overlay(
          overlay_dir, case, image, label, prediction, spacing, names, False,
          scores.rows[:num_classes - 1]))
  return _write(options, cfg, rows, scoring_options, written, samples, seed,
                missing=[c for c, _, p in pairs if p is None])


def folder_rows(rows: Sequence[dict], lesion_wise: bool) -> list[dict]:
  """metrics.csv's rows: `scoring.score_case` rows under FOLDER_COLUMNS
  (plus LESION_COLUMNS)."""
  columns = FOLDER_COLUMNS + (LESION_COLUMNS if lesion_wise else ())
  return [{c: (row['case_id'] if c == 'case' else row.get(c))
           for c in columns} for row in rows]


def _write(options: FolderOptions, cfg: Config, rows, scoring_options,
           overlay_files, samples, seed, missing) -> dict[str, Any]:
  lesion_wise = scoring_options.lesion_wise
  out_rows = folder_rows(rows, lesion_wise)
  metrics = SUMMARY_METRICS + (LESION_COLUMNS if lesion_wise else ())
  conventions = scoring_options.conventions.describe()
  summary = {
      'label_dir': options.label_dir,
      'prediction_dir': options.prediction_dir,
      'num_cases': len({r['case'] for r in out_rows}),
      'missing_predictions': missing,
      'classes': list(scoring_options.class_names),
      'conventions': conventions,
      'statistics': {
          'ci95': 'percentile bootstrap of the mean over cases',
          'bootstrap_samples': samples, 'bootstrap_seed': seed,
          'std': 'sample standard deviation (ddof=1)',
          'excluded': 'empty and NaN scores are left out; infinite ones '
                      'are counted in num_infinite, not averaged'},
      'per_class': summarize(out_rows, metrics, samples, seed)}
  folder = options.output_dir
  fileio.makedirs(folder)
  paths = {name: fileio.join(folder, name)
           for name in (METRICS_CSV, SUMMARY_JSON, CONVENTIONS_JSON)}
  columns = FOLDER_COLUMNS + (LESION_COLUMNS if lesion_wise else ())
  fileio.write_text(paths[METRICS_CSV], tables.to_csv(out_rows, columns))
  fileio.write_json(paths[CONVENTIONS_JSON], _finite(conventions))
  summary['files'] = {**paths, 'overlays': list(overlay_files)}
  fileio.write_json(paths[SUMMARY_JSON], _finite(summary))
  return summary


def _finite(value):
  """JSON has no infinity: inf becomes the string 'inf'."""
  if isinstance(value, float) and math.isinf(value):
    return 'inf' if value > 0 else '-inf'
  if isinstance(value, dict):
    return {k: _finite(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [_finite(v) for v in value]
  return value


def format_summary(summary: dict) -> str:
  """Per-class mean dice and HD95 with their 95 % intervals, one line per
  class, then the output folder."""
  def fmt(stat, digits):
    if stat['mean'] is None:
      return 'n/a'
    ci = stat['ci95']
    return (f"{stat['mean']:.{digits}f} [{ci[0]:.{digits}f}, "
            f"{ci[1]:.{digits}f}]")
  lines = [f"{summary['num_cases']} cases; mean [95 % bootstrap CI]"]
  for name, stats in summary['per_class'].items():
    lines.append(f"{name:>16s}  dice {fmt(stats['dice'], 4)}  hd95 mm "
                 f"{fmt(stats['hd95'], 2)}")
  lines.append(f"report: {summary['files'][METRICS_CSV]}, "
               f"{summary['files'][SUMMARY_JSON]}")
  return '\n'.join(lines)

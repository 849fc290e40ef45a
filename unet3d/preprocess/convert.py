"""Datasets -> sharded TFRecords of the unet3d schema + dataset.json + splits.

One converter serves every dataset. A dataset module (lits, brats,
decathlon, hdf5) describes its cases as a `cases.Source`; `convert` then

1. surveys the cases (header spacing; foreground intensities for CT; the
   nonzero fraction when a channel leaves the nonzero mask undecided),
2. resolves the shared plan (median target spacing, CT clip and z-score,
   z-score within the nonzero mask or not by nnU-Net's rule),
3. splits case ids into folds (`splits.json`),
4. preprocesses cases in worker processes (numpy only; 'spawn', since
   TensorFlow is not fork-safe) while this process writes the shards
   `train-XXXXX-of-YYYYY.tfrecord` and `val-...` in case order,
5. writes `dataset.json`: labels, cases with their original and stored
   geometry, class voxel counts, spacing and intensity statistics, the
   preprocessing applied and any skipped cases.

Everything goes to `<output>.tmp-<pid>` first and is renamed to `<output>`
when complete, so an interrupted run never leaves a half-written output.
Bad input stops the run with a one-line ValueError naming the file, or with
`on_error='skip'` is recorded in dataset.json `skipped` and left out.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import functools
import json
import os
import time
from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence, Union

import numpy as np

from unet3d import fileio
from unet3d.input import dataset_info
from unet3d.input import schema
from unet3d.input import splits as splits_lib
from unet3d.preprocess import cases
from unet3d.preprocess import dataset_json
from unet3d.preprocess import intensity
from unet3d.preprocess import io
from unet3d.preprocess import runner
from unet3d.preprocess import survey as survey_lib

ON_ERROR = ('stop', 'skip')
LABEL_INTERPOLATIONS = ('linear', 'nearest')


@dataclass(frozen=True)
class Options:
  """How to convert; every dataset shares these.

  target_spacing: 'median' (of the dataset, per canonical axis), a
    per-axis spacing in mm, or None to keep each case's grid.
  target_shape: resample every case to this many voxels instead (the
    Model Garden's fixed resize; the spacing follows from it).
  """
  num_shards: int = 4
  # > 0: as many shards as needed for this many cases each (NVIDIA's
  # vol_per_file), instead of num_shards.
  cases_per_shard: int = 0
  compressed: bool = True
  overwrite: bool = False
  validation_fraction: float = 0.2
  num_folds: int = 1
  fold: int = 0
  seed: int = 0
  num_processes: int = 1
  on_error: str = 'stop'
  reorient: bool = True
  crop_nonzero: bool = True
  target_spacing: Union[str, Sequence[float], None] = 'median'
  target_shape: Optional[Sequence[int]] = None
  image_order: int = 3
  label_interpolation: str = 'linear'
  # Foreground voxels sampled per case for intensity statistics.
  num_samples: int = 10000
  # Replace non-finite image voxels (cases.NONFINITE_RULE) instead of
  # stopping at the file.
  nan_to_num: bool = False


def check_options(options: Options) -> None:
  """One-line errors naming the flag."""
  if options.num_shards < 1:
    raise ValueError(f'--num_shards: must be >= 1, got {options.num_shards}')
  if options.cases_per_shard < 0:
    raise ValueError('--cases_per_shard: must be >= 0, got '
                     f'{options.cases_per_shard}')
  if options.num_processes < 1:
    raise ValueError('--num_processes: must be >= 1, got '
                     f'{options.num_processes}')
  if options.on_error not in ON_ERROR:
    raise ValueError(f'--on_error: {options.on_error!r} is not one of '
                     f'{ON_ERROR}')
  if options.label_interpolation not in LABEL_INTERPOLATIONS:
    raise ValueError(f'--label_interpolation: {options.label_interpolation!r} '
                     f'is not one of {LABEL_INTERPOLATIONS}')
  if not 0 <= options.image_order <= 5:
    raise ValueError(f'--image_order: must be 0..5, got {options.image_order}')
  if options.num_folds < 1:
    raise ValueError(f'--num_folds: must be >= 1, got {options.num_folds}')
  if not 0 <= options.fold < options.num_folds:
    raise ValueError(f'--fold: must be in 0..{options.num_folds - 1}, got '
                     f'{options.fold}')
  if not 0.0 <= options.validation_fraction < 1.0:
    raise ValueError('--validation_fraction: must be in [0, 1), got '
                     f'{options.validation_fraction}')
  spacing = options.target_spacing
  if isinstance(spacing, str):
    if spacing != 'median':
      raise ValueError(f'--target_spacing: {spacing!r} is not "median", '
                       '"original" or three numbers in mm')
  elif spacing is not None and (len(spacing) != 3 or min(spacing) <= 0):
    raise ValueError('--target_spacing: expected three positive numbers in '
                     f'mm, got {list(spacing)}')
  shape = options.target_shape
  if shape is not None and (len(shape) != 3 or min(shape) < 1):
    raise ValueError(f'target shape: expected three positive sizes, got '
                     f'{list(shape)}')


def _finite_loader(source: cases.Source, options: Options):
  """The source's loader with the non-finite voxel check (picklable, for
  worker processes)."""
  return functools.partial(cases.load_finite, load=source.load,
                           nan_to_num=options.nan_to_num)


def _survey(pool, source: cases.Source, options: Options,
            ct_channels: list[int], errors: runner.Errors, window: int,
            progress) -> dict[str, dict[str, Any]]:
  """{case_id: survey_lib.survey_case(...)} of the cases that could be read."""
  reorient = options.reorient and source.has_orientation
  load = _finite_loader(source, options)
  # Measured whether or not the plan crops, as dataset.json records it.
  fractions = intensity.needs_nonzero_fractions(source.norms)
  jobs = [(survey_lib.survey_case, c.case_id,
           (c, source.geometry, load, reorient, ct_channels,
            options.num_samples, options.seed, fractions), {})
          for c in source.cases]
  survey = {}
  with contextlib.closing(runner.progress_bar(
      progress, len(jobs), 'survey (reading images)' if ct_channels or
      fractions else 'survey')) as bar:
    for outcome in runner.ordered_outcomes(pool, jobs, window):
      bar.update(1)
      if errors.ok(outcome, 'survey'):
        survey[outcome.case_id] = outcome.value
  if not survey:
    raise ValueError(f'{source.name}: every case failed (see the warnings '
                     'above)')
  return survey


# ----------------------------------------------------------------------------
# Resolving the plan from the survey
# ----------------------------------------------------------------------------


def _resolve_plan(source: cases.Source, options: Options,
                  survey: dict[str, dict[str, Any]],
                  ct_channels: list[int]) -> cases.Plan:
  target_spacing = options.target_spacing
  if options.target_shape is not None:
    target_spacing = None
  elif isinstance(target_spacing, str):
    target_spacing = tuple(float(s) for s in np.median(
        [s['spacing'] for s in survey.values()], axis=0))
  elif target_spacing is not None:
    target_spacing = tuple(float(s) for s in target_spacing)
  norms = list(source.norms)
  if intensity.needs_nonzero_fractions(norms):
    norms = list(intensity.resolve_nonzero_mask(
        norms, [s['nonzero_fraction'] for s in survey.values()]))
  if ct_channels:
    samples = np.concatenate([s['samples'] for s in survey.values()])
    if samples.shape[0] == 0:
      raise ValueError(f'{source.name}: CT normalisation needs foreground '
                       'voxels, but no case has a nonzero label')
    for j, c in enumerate(ct_channels):
      low, high, mean, std = intensity.ct_parameters(
          samples[:, j], norms[c].window, norms[c].percentiles)
      norms[c] = dataclasses.replace(norms[c], clip_low=low, clip_high=high,
                                     mean=mean, std=std)
  return cases.Plan(
      reorient=options.reorient and source.has_orientation,
      crop_nonzero=options.crop_nonzero,
      target_spacing=target_spacing,
      target_shape=(None if options.target_shape is None else
                    tuple(int(s) for s in options.target_shape)),
      image_order=options.image_order,
      label_interpolation=options.label_interpolation,
      norms=tuple(norms), num_samples=options.num_samples, seed=options.seed)


def _shard_plan(split_ids: dict[str, list[str]], num_shards: int, seed: int,
                cases_per_shard: int = 0
               ) -> list[tuple[str, str, list[str]]]:
  """[(split, shard file name, case ids)]: each split's cases in a seeded
  order, cut into contiguous shards so they can be written one by one:
  num_shards of them, or ceil(cases / cases_per_shard) when that is set."""
  plan = []
  for split in splits_lib.SPLIT_NAMES:
    ids = split_ids[split]
    if not ids:
      continue
    order = [ids[i] for i in np.random.default_rng(seed).permutation(len(ids))]
    count = min(num_shards, len(ids))
    if cases_per_shard > 0:
      count = -(-len(ids) // cases_per_shard)
    for k, chunk in enumerate(np.array_split(np.array(order, object), count)):
      plan.append((split, f'{split}-{k:05d}-of-{count:05d}.tfrecord',
                   list(chunk)))
  return plan


# ----------------------------------------------------------------------------
# The converter
# ----------------------------------------------------------------------------


def convert(source: cases.Source, output_dir: str,
            options: Options = Options(),
            progress: Optional[Callable[..., Any]] = None) -> dict[str, Any]:
  """Converts a dataset; returns the dataset.json summary.

  Args:
    source: the dataset's cases, loader and names.
    output_dir: the folder to create (refused when it exists and is not
      empty, unless options.overwrite).
    options: sharding, split, preprocessing and error policy.
    progress: optional tqdm-like factory `progress(total=, desc=)` whose
      result has `update(n)` and `close()`.

  Raises:
    ValueError: bad options or input, one line naming the flag or file.
  """
  check_options(options)
  if not source.cases:
    raise ValueError(f'{source.name}: no cases to convert')
  counts = collections.Counter(c.case_id for c in source.cases)
  duplicates = sorted(i for i, n in counts.items() if n > 1)
  if duplicates:
    raise ValueError(f'{source.name}: case ids are not unique: {duplicates}')
  start_time = time.perf_counter()
  errors = runner.Errors(options.on_error)
  output_dir = fileio.normpath(output_dir)
  with runner.staged_output(output_dir, options.overwrite,
                      source.cases) as tmp_dir:
    with runner.worker_pool(options.num_processes) as pool:
      window = 2 * options.num_processes
      ct_channels = [c for c, n in enumerate(source.norms)
                     if n.scheme == 'ct']
      survey = _survey(pool, source, options, ct_channels, errors, window,
                       progress)
      plan = _resolve_plan(source, options, survey, ct_channels)
      splits = splits_lib.make_splits(list(survey), options.num_folds,
                                      options.seed,
                                      options.validation_fraction)
      fold = splits_lib.check_fold(splits, options.fold)
      by_id = {c.case_id: c for c in source.cases}
      shard_plan = _shard_plan(fold, options.num_shards, options.seed,
                               options.cases_per_shard)
      load = _finite_loader(source, options)
      jobs = [(cases.process_case, case_id,
               (by_id[case_id], load, plan, split == 'train',
                source.finish, source.parts), {})
              for split, _, chunk in shard_plan for case_id in chunk]
      with contextlib.closing(runner.progress_bar(progress, len(jobs),
                                            'convert')) as bar:
        infos, samples, shards = _write_shards(
            pool, jobs, shard_plan, tmp_dir, options, errors, window, bar)
    if not infos:
      raise ValueError(f'{source.name}: every case failed (see the warnings '
                       'above)')
    # Cases that failed after the split was drawn leave every fold.
    splits = splits_lib.without(splits, [s['case_id'] for s in errors.skipped])
    summary = dataset_json.dataset_summary(
        source, plan, survey=survey, num_folds=splits['num_folds'],
        infos=infos,
        samples=samples, shards=shards, skipped=errors.skipped,
        spacing_from=('dataset median' if isinstance(options.target_spacing,
                                                     str) else 'given'),
        compressed=options.compressed, fold=options.fold, seed=options.seed,
        schema_version=schema.SCHEMA_VERSION)
    summary['seconds'] = round(time.perf_counter() - start_time, 2)
    splits_lib.write_splits(os.path.join(tmp_dir, splits_lib.SPLITS_JSON),
                            splits)
    with open(os.path.join(tmp_dir, dataset_info.DATASET_JSON), 'w') as f:
      json.dump(summary, f, indent=1)
  return summary


def _to_volume(record: cases.Processed):
  rank = record.image.ndim - 1  # 2 for slices: their in-plane spacing
  return schema.Volume(image=record.image, label=record.label,
                       spacing=io.spacing_of(record.affine)[:rank],
                       affine=record.affine, case_id=record.case_id,
                       channel_mean=record.channel_mean,
                       channel_std=record.channel_std)


def _write_shards(pool, jobs, shard_plan, tmp_dir: str, options: Options,
                  errors: runner.Errors, window: int, bar):
  """Runs the jobs and streams their records into the shards, in order."""
  outcomes = runner.ordered_outcomes(pool, jobs, window)
  infos, samples = [], []
  shards = {split: [] for split in splits_lib.SPLIT_NAMES}

  def records(split, name, chunk):
    for _ in chunk:
      outcome = next(outcomes)
      bar.update(1)
      if not errors.ok(outcome, 'convert'):
        continue
      volumes, info = outcome.value
      samples.append(info.pop('samples'))
      info.update(split=split, shard=name)
      infos.append(info)
      for volume in volumes:
        yield schema.encode_volume(_to_volume(volume))

  for split, name, chunk in shard_plan:
    schema.write_records(os.path.join(tmp_dir, name),
                         records(split, name, chunk), options.compressed)
    shards[split].append(name)
  return infos, samples, shards

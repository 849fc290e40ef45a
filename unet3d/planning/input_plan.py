"""The input part of a plan: which records training and evaluation read,
and how (sampling, cache, augmentation with laterality).

A CPU plan times its steps through `input_entries`, so the step it
measures reads exactly what the recipe will.
"""

from __future__ import annotations

import dataclasses
import math

from unet3d.planning import budgets as budgets_lib
from unet3d.planning import fingerprint as fingerprint_lib
from unet3d.planning import rules
from unet3d.planning.planned import PlannedRecipe

# Fewer cases than this: train on every case (nnU-Net's fold "all"), since
# holding one out would take a large share of the few there are.
MIN_CASES_TO_HOLD_OUT = 5


def trains_on_every_case(fp: fingerprint_lib.Fingerprint) -> bool:
  """A val split of a dataset with fewer than MIN_CASES_TO_HOLD_OUT cases."""
  return bool(fp.shards.get('val')) and len(fp.cases) < MIN_CASES_TO_HOLD_OUT


def for_training(fp: fingerprint_lib.Fingerprint, plan: PlannedRecipe
                ) -> fingerprint_lib.Fingerprint:
  """The fingerprint with the cases training reads marked as training
  cases (every case when the plan trains on all of them)."""
  if not trains_on_every_case(fp):
    return fp
  plan.notes.append(
      f'{len(fp.cases)} cases, fewer than {MIN_CASES_TO_HOLD_OUT}: training '
      'reads every case, the val split too (nnU-Net\'s fold "all")')
  return dataclasses.replace(fp, cases=tuple(
      dataclasses.replace(c, split='train') for c in fp.cases))


def evaluation_cases(fp: fingerprint_lib.Fingerprint
                    ) -> tuple[fingerprint_lib.CaseFingerprint, ...]:
  """The cases train_and_eval evaluates: the val split, or every case."""
  val = tuple(c for c in fp.cases if c.split == 'val')
  return val or fp.cases


def _augmentation(fp: fingerprint_lib.Fingerprint, plan: PlannedRecipe,
                  rank: int) -> list[int]:
  """Flips (with laterality) and rotations; returns the axes test-time
  mirroring may use (none whose flip changes what a label means)."""
  first = 0 if fp.multi_label else 1
  pairs = rules.lateral_pairs(fp.labels, first)
  all_axes = list(range(rank))
  aug = 'data.augmentation.'
  if not pairs:
    plan.add(aug + 'flip_axes', all_axes,
             'no label name says left or right: every axis may flip '
             '(nnU-Net mirrors all axes)')
    return all_axes
  names = ', '.join(f'{fp.labels[str(a)]}/{fp.labels[str(b)]}'
                    for a, b in pairs)
  centroid_axis = rules.lateral_axis_from_centroids(
      [c.centroid_voxel for c in fp.cases],
      [c.stored_spacing for c in fp.cases], pairs)
  axis, how = None, ''
  if fp.reoriented:
    axis, how = 0, 'axis 0 of the RAS-reoriented records'
    if centroid_axis not in (None, 0):
      plan.warnings.append(
          f'laterality: the paired classes lie apart along axis '
          f'{centroid_axis}, not along RAS axis 0; check the label names')
  elif centroid_axis is not None:
    axis, how = centroid_axis, ('the axis along which the paired classes '
                                'lie apart (the records carry no orientation)')
  if axis is None:
    plan.add(aug + 'flip_prob', 0.0,
             f'lateralised labels ({names}) but no known left-right axis: '
             'no flips, since a flip over it would swap their meaning')
    return []
  others = [a for a in all_axes if a != axis]
  if fp.multi_label:
    plan.add(aug + 'flip_axes', others,
             f'lateralised mask channels ({names}) cannot be swapped: no '
             f'flip over the left-right axis {axis} ({how})')
    return others
  plan.add(aug + 'flip_axes', all_axes, 'every axis may flip (nnU-Net)')
  plan.add(aug + 'left_right_axis', axis,
           f'label names are lateralised; left-right is {how}')
  plan.add(aug + 'left_right_label_pairs', [list(p) for p in pairs],
           f'a flip over axis {axis} swaps {names}')
  return others


def _cache(fp: fingerprint_lib.Fingerprint, budget: budgets_lib.Budget
          ) -> tuple[str, str]:
  """In memory when every record (train and val, both pipelines cache)
  decoded (float32 image, int32 label or masks) takes at most a quarter of
  the host's RAM."""
  label_channels = fp.num_classes if fp.multi_label else 1
  decoded = sum(math.prod(c.stored_shape) * c.num_records
                for c in fp.cases) * 4 * (fp.num_channels + label_channels)
  host = budget.host_memory_gib
  size = (f'{decoded / 2**20:.0f} MiB' if decoded < budgets_lib.GIB else
          f'{decoded / budgets_lib.GIB:.1f} GiB')
  if decoded <= 0.25 * host * budgets_lib.GIB:
    return 'memory', (f'the train and val records take {size} decoded, '
                      f'within a quarter of the {host:g} GB of host RAM the '
                      'budget assumes')
  return 'none', (f'the train and val records take {size} decoded, over a '
                  f'quarter of the {host:g} GB of host RAM: read from disk '
                  'each epoch')


def training_pattern(records_dir: str) -> str:
  """The converter's train split in records_dir."""
  return f'{records_dir}/train-*.tfrecord'


def _file_patterns(fp: fingerprint_lib.Fingerprint, records_dir: str,
                   part: PlannedRecipe) -> None:
  """What training and evaluation read."""
  if trains_on_every_case(fp):
    every = f'{records_dir}/*.tfrecord'
    part.add('training_file_pattern', every,
             'every case: too few to hold some out')
    part.add('eval_file_pattern', every,
             'every case (training cases): too few to hold some out')
    return
  part.add('training_file_pattern', training_pattern(records_dir),
           'the converter\'s train split')
  if fp.shards.get('val'):
    part.add('eval_file_pattern', f'{records_dir}/val-*.tfrecord',
             'the converter\'s val split (held out)')
  else:
    part.add('eval_file_pattern', training_pattern(records_dir),
             'no val split was written: evaluation sees training cases')
    part.warnings.append('no val cases: evaluation runs on training cases; '
                         're-convert with --validation_fraction > 0')


def input_entries(fp: fingerprint_lib.Fingerprint, budget: budgets_lib.Budget,
                  records_dir: str) -> tuple[PlannedRecipe, list[int]]:
  """The records and how training reads them (file patterns, sampling,
  cache, augmentation) as a part of the plan with its warnings, and the axes
  test-time mirroring may use. A CPU plan times its steps through this."""
  part = PlannedRecipe()
  _file_patterns(fp, records_dir, part)
  part.add('compressed_input', fp.compressed, 'as the converter wrote them')
  part.add('data.foreground_oversample', 0.33,
           'a third of the patches centred on foreground (nnU-Net)')
  cache, why = _cache(fp, budget)
  part.add('data.cache', cache, why)
  part.add('data.eval_mode', 'whole_volume',
           'evaluate whole cases with sliding windows, as predict does')
  mirror_axes = _augmentation(fp, part, rank=3)
  anisotropic = max(fp.stored_spacing()) > rules.ANISOTROPY_RATIO * min(
      fp.stored_spacing())
  if anisotropic:
    part.add('data.augmentation.rotation_degrees', 15.0,
             'anisotropic spacing: smaller rotations mix the coarse axis less')
  return part, mirror_axes

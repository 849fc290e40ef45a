"""A fingerprint and a budget -> the choices of a training recipe.

`make_plan` applies `unet3d.planning.rules` to a converted dataset's
fingerprint, in named steps:

1. sizing: the patch, batch and network the budget's memory (and, on a
   CPU, its hours) afford (`unet3d.planning.sizing`);
2. preprocessing checks: the target spacing and normalisation the rules
   give, against what the converter applied (notes, or warnings with the
   flag to re-convert);
3. input: file patterns, sampling, cache and augmentation (laterality);
4. model and loss: the sized network and nnU-Net's loss;
5. schedule: optimiser, precision and steps (nnU-Net's on a GPU, what the
   measured hours hold on a CPU);
6. inference and provenance: sliding windows, mirroring, post-processing,
   and what the recipe was planned from.

The result is a `PlannedRecipe`: (dotted config key, value, reason) entries
in recipe order, plus notes and warnings.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import numpy as np

from unet3d.planning import budgets as budgets_lib
from unet3d.planning import checks
from unet3d.planning import fingerprint as fingerprint_lib
from unet3d.planning import rules
from unet3d.planning import sizing as sizing_lib

# nnU-Net's schedule: 1000 epochs of 250 steps, SGD with Nesterov momentum.
GPU_TRAIN_STEPS = 250_000
# Steps are rounded down to a multiple of this.
STEP_ROUNDING = 50


@dataclass
class PlannedRecipe:
  """The recipe's entries in order, and what the user should know."""
  entries: list[tuple[str, Any, str]] = field(default_factory=list)
  warnings: list[str] = field(default_factory=list)
  notes: list[str] = field(default_factory=list)

  def add(self, key: str, value: Any, reason: str) -> None:
    self.entries.append((key, value, reason))

  def values(self) -> dict[str, Any]:
    return {k: v for k, v, _ in self.entries}


# ----------------------------------------------------------------------------
# The whole plan
# ----------------------------------------------------------------------------


def _preprocessing_checks(fp: fingerprint_lib.Fingerprint,
                          plan: PlannedRecipe) -> None:
  """Target spacing and normalisation by the rules, against what the
  converter applied: notes when they agree, warnings (with the flag to
  re-convert) when not. Training reads the records as they are."""
  spacing = rules.target_spacing([c.cropped_spacing for c in fp.cases],
                                 [c.cropped_shape for c in fp.cases])
  applied = fp.stored_spacing()
  same_grid = np.allclose([c.stored_spacing for c in fp.cases], applied,
                          rtol=0.01)
  text = rules.describe_shape(spacing.value)
  if same_grid and np.allclose(applied, spacing.value, rtol=0.01):
    plan.notes.append(f'target spacing {text} mm: {spacing.reason}; the '
                      'converter resampled to it')
  else:
    flag = ','.join(f'{s:.4g}' for s in spacing.value)
    plan.warnings.append(
        f'target spacing: the rule gives {text} mm ({spacing.reason}), the '
        f'records are at {rules.describe_shape(applied)} mm'
        f'{"" if same_grid else " (median; cases differ)"}; re-convert with '
        f'--target_spacing={flag} to follow it')
  applied_norms = fp.preprocessing.get('normalization') or []
  fractions = [c.nonzero_fraction for c in fp.cases]
  for c, (key, modality) in enumerate(sorted(fp.modalities.items(),
                                             key=lambda kv: int(kv[0]))):
    rule = rules.channel_normalisation(modality, fractions, fp.intensity[c])
    entry = applied_norms[c] if c < len(applied_norms) else {}
    if rules.applied_matches(rule, entry):
      plan.notes.append(f'channel {key} normalisation: {rule.reason}; the '
                        'converter applied it')
    else:
      hint = ''
      if rule.scheme == 'zscore':
        flag = '--nonzero_mask' if rule.nonzero_mask else '--nononzero_mask'
        hint = (' (the decathlon and nnunet converters follow it unless '
                f'told otherwise; {flag} forces it)')
      plan.warnings.append(
          f'channel {key} normalisation: the rule says {rule.reason}; the '
          f"converter applied {entry.get('scheme', 'nothing')}"
          f"{' within the nonzero mask' if entry.get('within_nonzero_mask') else ''}"
          f'; re-convert to follow it{hint}')


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


def _largest_component_classes(fp: fingerprint_lib.Fingerprint) -> list[int]:
  """Classes that form one connected component in every training case
  holding them."""
  first = 0 if fp.multi_label else 1
  classes = []
  for key in sorted(fp.labels, key=int):
    if int(key) < first:
      continue
    counts = [c.component_counts[key] for c in fp.training_cases()
              if key in c.component_counts]
    if counts and all(n == 1 for n in counts):
      classes.append(int(key))
  return classes


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


def _timing_reason(budget: budgets_lib.Budget,
                   timing: Optional[sizing_lib.Timing]) -> str:
  if timing is None:
    return ''
  hours = f'{budget.train_hours:g} h'
  steps = sizing_lib.MIN_CPU_STEPS
  if not timing.fits:
    return f'; fewer than {steps} steps fit {hours} ({timing.why_not})'
  if timing.shrunk:
    return f', shrunk until {steps} measured steps fit {hours}'
  return f'; {steps} measured steps of it fit {hours}'


def model_entries(fp: fingerprint_lib.Fingerprint, budget: budgets_lib.Budget,
                  sizing: sizing_lib.Sizing,
                  timing: Optional[sizing_lib.Timing] = None
                 ) -> list[tuple[str, Any, str]]:
  """The recipe's patch, batch, network and loss entries for a sizing (a
  CPU plan measures the step of exactly these; `timing` is what that gave)."""
  topo = sizing.topology
  median = rules.describe_shape(fp.stored_shape())
  spacing = rules.describe_shape(fp.stored_spacing())
  shrunk = _timing_reason(budget, timing)
  if sizing.batch == 2:
    batch_reason = 'nnU-Net\'s 2'
  elif sizing.batch > 2:
    batch_reason = ('the most that fits, at most 5% of the dataset\'s voxels '
                    'and the training records')
  else:
    batch_reason = 'one training record'
  out = [
      ('num_channels', fp.num_channels,
       'modalities: ' + ', '.join(fp.modalities.values())),
      ('num_classes', fp.num_classes,
       'labels: ' + ', '.join(fp.labels[k] for k in
                              sorted(fp.labels, key=int))),
      ('input_image_size', sizing.patch,
       f'median stored case {median} voxels at {spacing} mm; the largest '
       f'patch whose estimated training memory '
       f'({sizing.memory_bytes / budgets_lib.GIB:.1f} GiB) fits '
       f'{budget.name}{shrunk}'),
      ('train_batch_size', sizing.batch, batch_reason),
      ('depth', topo.levels,
       f'pool while a feature map keeps >= {rules.MIN_FEATURE_SIZE} voxels '
       f'per axis, at most {budget.max_levels} levels'),
      ('model.name', 'unet3d',
       '3D U-Net, the plain encoder-decoder nnU-Net plans'),
      ('model.filters', sizing.filters,
       f'{budget.base_filters} x 2^level, capped at {budget.max_filters} '
       f'({sizing.parameters:,} weights)'),
      ('model.pool_sizes', [list(p) for p in topo.pool_sizes],
       'pool an axis only while its spacing is within 2x of the finest '
       '(anisotropic data pools in-plane first)'),
      ('model.kernel_sizes', [list(k) for k in topo.kernel_sizes],
       '3 on axes within 2x of the finest spacing, 1 on coarser ones'),
  ]
  if fp.multi_label:
    out += [('model.output_activation', 'sigmoid',
             'multi-label masks: one sigmoid channel each'),
            ('loss', 'bce_dice', 'multi-label: BCE + dice per channel')]
  else:
    out += [('loss', 'dice_ce', 'dice + cross-entropy (nnU-Net)'),
            ('use_index_label_in_train', True, 'class indices, not one-hot'),
            ('loss_options.include_background', False,
             'dice over the foreground classes (nnU-Net)')]
  out.append(('loss_options.batch_dice', True,
              'one dice over the batch (nnU-Net\'s 3D default)'))
  return out


def training_pattern(records_dir: str) -> str:
  """The converter's train split in records_dir."""
  return f'{records_dir}/train-*.tfrecord'


def input_entries(fp: fingerprint_lib.Fingerprint, budget: budgets_lib.Budget,
                  records_dir: str) -> tuple[PlannedRecipe, list[int]]:
  """The records and how training reads them (file patterns, sampling,
  cache, augmentation) as a part of the plan with its warnings, and the axes
  test-time mirroring may use. A CPU plan times its steps through this."""
  part = PlannedRecipe()
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


def measurement_values(fp: fingerprint_lib.Fingerprint,
                       budget: budgets_lib.Budget, sizing: sizing_lib.Sizing,
                       records_dir: Optional[str] = None) -> dict[str, Any]:
  """Config values (dotted keys) of the training step a CPU plan times:
  the sizing's network, fed by the plan's input from records_dir (given)."""
  values = {k: v for k, v, _ in model_entries(fp, budget, sizing)}
  if records_dir is not None:
    values.update(input_entries(fp, budget, records_dir)[0].values())
  values.update({'distribution_strategy': 'cpu', 'optimizer': 'adam'})
  return values


def _timed_on(timed_on_cores: Optional[int]) -> str:
  """Where a CPU plan's step was timed, as a phrase ('' when not here)."""
  if timed_on_cores is None:
    return ''
  return (f' with its input pipeline on {timed_on_cores} cores of this '
          'machine')


def _steps_that_fit(budget: budgets_lib.Budget,
                    timing: sizing_lib.Timing) -> int:
  """Measured steps that fit the budget's hours."""
  return int(budget.train_hours * 3600 / timing.step_seconds)


def _cpu_warnings(budget: budgets_lib.Budget, timing: sizing_lib.Timing,
                  timed_on_cores: Optional[int], plan: PlannedRecipe) -> None:
  """Warnings when the hours hold too few steps, or the step was timed on
  fewer cores than the budget's."""
  if not timing.fits:
    plan.warnings.append(
        f'budget {budget.name}: {budget.train_hours:g} h hold only '
        f'{_steps_that_fit(budget, timing)} steps of '
        f'{timing.step_seconds:.2f} s, fewer than {sizing_lib.MIN_CPU_STEPS} '
        f'({timing.why_not}); give more --train_hours')
  if timed_on_cores is not None and timed_on_cores < budget.cores:
    plan.warnings.append(
        f'budget {budget.name} is for {budget.cores} cores; the step was '
        f'timed{_timed_on(timed_on_cores)}, so train_steps is what '
        f'{timed_on_cores} cores do in {budget.train_hours:g} h (more cores '
        'would do more)')


def _size(fp: fingerprint_lib.Fingerprint, budget: budgets_lib.Budget,
          seconds_per_step: Optional[Callable[[sizing_lib.Sizing], float]],
          timed_on_cores: Optional[int], plan: PlannedRecipe
         ) -> tuple[sizing_lib.Sizing, Optional[sizing_lib.Timing]]:
  """Step 1: the sizing for the budget's memory; a CPU budget also fits its
  hours (timing is None on a GPU)."""
  sizing = sizing_lib.size_for_memory(fp, budget,
                                      grow_batch=budget.device != 'cpu')
  if budget.device != 'cpu':
    return sizing, None
  if seconds_per_step is None:
    raise ValueError(f'budget {budget.name}: a CPU plan needs a measured '
                     'step time')
  sizing, timing = sizing_lib.size_for_time(fp, budget, sizing,
                                            seconds_per_step)
  _cpu_warnings(budget, timing, timed_on_cores, plan)
  return sizing, timing


def _gpu_schedule(budget: budgets_lib.Budget, plan: PlannedRecipe) -> int:
  """nnU-Net's precision, optimiser and steps; returns the steps."""
  plan.add('dtype', budget.precision, 'mixed precision on the GPU')
  plan.add('train.jit_compile', True, 'XLA on the GPU')
  plan.add('optimizer', 'momentum', 'SGD with Nesterov momentum (nnU-Net)')
  plan.add('momentum', 0.99, 'nnU-Net')
  plan.add('init_learning_rate', 0.01, 'nnU-Net')
  plan.add('train.weight_decay', 3e-5, 'nnU-Net')
  plan.add('train_steps', GPU_TRAIN_STEPS, 'nnU-Net: 1000 epochs of 250 steps')
  plan.add('train.eval_every_n_steps', 12_500,
           'evaluate every 50 nnU-Net epochs; the best checkpoint is kept')
  return GPU_TRAIN_STEPS


def _cpu_schedule(budget: budgets_lib.Budget, timing: sizing_lib.Timing,
                  timed_on_cores: Optional[int], plan: PlannedRecipe) -> int:
  """Adam and the steps the measured hours hold; returns the steps."""
  plan.add('distribution_strategy', 'cpu', f'{budget.description}')
  plan.add('optimizer', 'adam',
           'Adam: faster than SGD in the few thousand steps a CPU affords')
  plan.add('init_learning_rate', 0.003, 'Adam with a polynomial decay')
  steps = max(STEP_ROUNDING, _steps_that_fit(budget, timing) // STEP_ROUNDING
              * STEP_ROUNDING)
  plan.add('train_steps', steps,
           f'{budget.train_hours:g} h at the {timing.step_seconds:.2f} s '
           f'per step measured{_timed_on(timed_on_cores)}')
  return steps


def _schedule(budget: budgets_lib.Budget, timing: Optional[sizing_lib.Timing],
              timed_on_cores: Optional[int], plan: PlannedRecipe) -> None:
  """Step 5: optimiser, precision, steps, learning-rate decay and
  checkpoints."""
  if budget.device == 'gpu':
    steps = _gpu_schedule(budget, plan)
  else:
    steps = _cpu_schedule(budget, timing, timed_on_cores, plan)
  plan.add('train.lr_schedule', 'polynomial', 'poly decay (nnU-Net)')
  plan.add('train.checkpoint_every_n_steps',
           max(STEP_ROUNDING, steps // 20 // STEP_ROUNDING * STEP_ROUNDING),
           'twenty checkpoints over the run')


def _inference(fp: fingerprint_lib.Fingerprint, mirror_axes: list[int],
               plan: PlannedRecipe) -> None:
  """Step 6a: sliding windows, test-time mirroring and post-processing."""
  plan.add('inference.overlap', 0.5, 'half-window overlap (nnU-Net)')
  plan.add('inference.weighting', 'gaussian', 'Gaussian importance map')
  plan.add('inference.mirror_axes', mirror_axes,
           'test-time mirroring over the axes training flips without '
           'changing label meaning')
  classes = _largest_component_classes(fp)
  if classes:
    plan.add('predict.largest_component', classes,
             'one connected component in every training case holding them')


def _provenance(fp: fingerprint_lib.Fingerprint, budget: budgets_lib.Budget,
                plan: PlannedRecipe) -> None:
  """Step 6b: the seed, and what the recipe was planned from."""
  plan.add('seed', 0, 'repeatable runs')
  plan.add('plan.dataset_json', fp.path, 'planned from this fingerprint')
  plan.add('plan.fingerprint_sha256', fp.sha256,
           'the hash of the fingerprint the plan read')
  plan.add('plan.budget', budget.name, budget.description)


def make_plan(fp: fingerprint_lib.Fingerprint, budget: budgets_lib.Budget,
              records_dir: str,
              seconds_per_step: Optional[
                  Callable[[sizing_lib.Sizing], float]] = None,
              timed_on_cores: Optional[int] = None) -> PlannedRecipe:
  """The recipe's choices for a dataset and a budget.

  Args:
    fp: the converted dataset's fingerprint.
    budget: what training may spend.
    records_dir: the converter's output folder (for the file patterns).
    seconds_per_step: CPU budgets: the measured time of one training step
      of a sizing (required for them).
    timed_on_cores: CPU budgets: the cores of this machine the step was
      timed on (with the recipe's input pipeline), when measured here.
  """
  plan = PlannedRecipe()
  sizing, timing = _size(fp, budget, seconds_per_step, timed_on_cores, plan)
  plan.warnings += checks.label_warnings(fp)
  _preprocessing_checks(fp, plan)
  inputs, mirror_axes = input_entries(fp, budget, records_dir)
  plan.warnings += inputs.warnings
  plan.entries += [e for e in inputs.entries if not e[0].startswith('data.')]
  plan.entries += model_entries(fp, budget, sizing, timing)
  plan.add('eval_batch_size', 1, 'whole-volume evaluation, one case at a time')
  plan.add('predict_batch_size', 2, 'sliding windows per forward pass')
  _schedule(budget, timing, timed_on_cores, plan)
  plan.entries += [e for e in inputs.entries if e[0].startswith('data.')]
  _inference(fp, mirror_axes, plan)
  _provenance(fp, budget, plan)
  return plan

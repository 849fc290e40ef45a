"""A fingerprint and a budget -> the choices of a training recipe.

`make_plan` applies `unet3d.planning.rules` to a converted dataset's
fingerprint, in named steps:

1. sizing: the patch, batch and network the budget's memory affords
   (`unet3d.planning.sizing`); on a CPU, the spacing and patch chosen
   together for its hours (`unet3d.planning.cpu_plan`);
2. preprocessing checks: the target spacing and normalisation the rules
   give, against what the converter applied (notes, or warnings with the
   flag to re-convert);
3. input: file patterns, sampling, cache and augmentation (laterality);
4. model and loss: the sized network and nnU-Net's loss;
5. schedule: optimiser, precision and steps (nnU-Net's on a GPU; on a
   CPU, what the measured hours hold besides startup, evaluation and
   checkpoints, `unet3d.planning.wall_time`);
6. inference and provenance: sliding windows, mirroring, post-processing,
   and what the recipe was planned from.

The result is a `PlannedRecipe`: (dotted config key, value, reason) entries
in recipe order, plus notes and warnings.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

import numpy as np

from unet3d.planning import budgets as budgets_lib
from unet3d.planning import checks
from unet3d.planning import cpu_plan
from unet3d.planning import fingerprint as fingerprint_lib
from unet3d.planning import input_plan
from unet3d.planning import rules
from unet3d.planning import sizing as sizing_lib
from unet3d.planning import spacing as spacing_lib
from unet3d.planning import wall_time as wall_time_lib
from unet3d.planning.planned import PlannedRecipe

# nnU-Net's schedule: 1000 epochs of 250 steps, SGD with Nesterov momentum.
GPU_TRAIN_STEPS = 250_000
STEP_ROUNDING = cpu_plan.STEP_ROUNDING
INFERENCE_OVERLAP = 0.5


# ----------------------------------------------------------------------------
# The whole plan
# ----------------------------------------------------------------------------


def _preprocessing_checks(fp: fingerprint_lib.Fingerprint,
                          plan: PlannedRecipe,
                          resample_to: Optional[tuple[float, ...]] = None
                         ) -> None:
  """Target spacing and normalisation by the rules, against what the
  converter applied: notes when they agree, warnings (with the flag to
  re-convert) when not. A CPU plan that trains at a coarser spacing
  (resample_to) says so instead of comparing spacings."""
  spacing = rules.target_spacing([c.cropped_spacing for c in fp.cases],
                                 [c.cropped_shape for c in fp.cases])
  applied = fp.stored_spacing()
  same_grid = np.allclose([c.stored_spacing for c in fp.cases], applied,
                          rtol=0.01)
  text = rules.describe_shape(spacing.value)
  if resample_to is not None:
    plan.notes.append(
        f'target spacing: nnU-Net\'s rule gives {text} mm ({spacing.reason}); '
        f'the records are at {rules.describe_shape(applied)} mm; this plan '
        f'resamples them to {rules.describe_shape(resample_to)} mm for its '
        'time budget (see the spacing candidates), and predict maps back '
        "onto each input's own grid")
  elif same_grid and np.allclose(applied, spacing.value, rtol=0.01):
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


def measurement_values(fp: fingerprint_lib.Fingerprint,
                       budget: budgets_lib.Budget, sizing: sizing_lib.Sizing,
                       records_dir: Optional[str] = None) -> dict[str, Any]:
  """Config values (dotted keys) of the training step a CPU plan times:
  the sizing's network, fed by the plan's input from records_dir (given)."""
  values = {k: v for k, v, _ in model_entries(fp, budget, sizing)}
  if records_dir is not None:
    values.update(
        input_plan.input_entries(fp, budget, records_dir)[0].values())
  values.update({'distribution_strategy': 'cpu', 'optimizer': 'adam'})
  return values


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
                  steps: int, timed_on_cores: Optional[int],
                  wall: wall_time_lib.WallTime, plan: PlannedRecipe) -> None:
  """Adam and the steps the measured hours hold."""
  plan.add('distribution_strategy', 'cpu', f'{budget.description}')
  plan.add('optimizer', 'adam',
           'Adam: faster than SGD in the few thousand steps a CPU affords')
  plan.add('init_learning_rate', 0.003, 'Adam with a polynomial decay')
  plan.add('train_steps', steps,
           f'{budget.train_hours:g} h at the {timing.step_seconds:.2f} s '
           f'per step measured{cpu_plan.timed_on(timed_on_cores)}, less '
           'startup, evaluation and checkpoints')
  plan.notes.append(f'estimated wall time of train_and_eval: '
                    f'{wall.describe()}')


def _schedule(budget: budgets_lib.Budget, steps: int,
              plan: PlannedRecipe) -> None:
  """Step 5 (both devices): learning-rate decay and checkpoints."""
  plan.add('train.lr_schedule', 'polynomial', 'poly decay (nnU-Net)')
  every = max(STEP_ROUNDING, steps // cpu_plan.CHECKPOINTS // STEP_ROUNDING
              * STEP_ROUNDING)
  plan.add('train.checkpoint_every_n_steps', every,
           'twenty checkpoints over the run')


def _inference(fp: fingerprint_lib.Fingerprint, mirror_axes: list[int],
               plan: PlannedRecipe) -> None:
  """Step 6a: sliding windows, test-time mirroring and post-processing."""
  plan.add('inference.overlap', INFERENCE_OVERLAP,
           'half-window overlap (nnU-Net)')
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


def _size_cpu(fp: fingerprint_lib.Fingerprint, budget: budgets_lib.Budget,
              seconds_per_step, chooser, progress, plan: PlannedRecipe
             ) -> cpu_plan.CpuChoice:
  """Step 1 on a CPU: the spacing and patch that fit the hours."""
  if seconds_per_step is None:
    raise ValueError(f'budget {budget.name}: a CPU plan needs a measured '
                     'step time')
  choice = cpu_plan.choose_spacing(fp, budget, seconds_per_step, chooser,
                                   progress)
  plan.notes += choice.notes
  return choice


def make_plan(fp: fingerprint_lib.Fingerprint, budget: budgets_lib.Budget,
              records_dir: str,
              seconds_per_step: Optional[
                  Callable[[sizing_lib.Sizing], float]] = None,
              timed_on_cores: Optional[int] = None,
              overheads: Optional[
                  Callable[[sizing_lib.Sizing], wall_time_lib.Overheads]
              ] = None,
              chooser: Optional[cpu_plan.Chooser] = None,
              progress: Optional[Callable[[int, int], None]] = None
             ) -> PlannedRecipe:
  """The recipe's choices for a dataset and a budget.

  Args:
    fp: the converted dataset's fingerprint.
    budget: what training may spend.
    records_dir: the converter's output folder (for the file patterns).
    seconds_per_step: CPU budgets: the measured time of one training step
      of a sizing (required for them).
    timed_on_cores: CPU budgets: the cores of this machine the step was
      timed on (with the recipe's input pipeline), when measured here.
    overheads: CPU budgets: the measured startup, window and checkpoint
      seconds of a sizing (none when not given).
    chooser: CPU budgets: replaces the coverage rule's choice of spacing
      (calibration).
    progress: CPU budgets: called with (candidate, candidates) as each
      candidate spacing is sized.
  The plan's `resample_to` is the spacing whose records the recipe reads
  when it is not the stored one (`records_dir/<spacing folder>`).
  """
  plan = PlannedRecipe()
  fp = input_plan.for_training(fp, plan)
  timing, data_dir, choice = None, records_dir, None
  if budget.device == 'cpu':
    choice = _size_cpu(fp, budget, seconds_per_step, chooser, progress, plan)
    chosen = choice.chosen
    sizing, timing = chosen.sizing, chosen.timing
    plan.warnings += cpu_plan.warnings(budget, timing, timed_on_cores)
    if choice.index:
      plan.resample_to = chosen.spacing
      data_dir = f'{records_dir}/{spacing_lib.spacing_folder(chosen.spacing)}'
    stored_fp, fp = fp, chosen.fingerprint
  else:
    sizing = sizing_lib.size_for_memory(fp, budget)
    stored_fp = fp
  plan.warnings += checks.label_warnings(fp)
  _preprocessing_checks(stored_fp, plan, plan.resample_to)
  inputs, mirror_axes = input_plan.input_entries(fp, budget, data_dir)
  plan.warnings += inputs.warnings
  plan.entries += [e for e in inputs.entries if not e[0].startswith('data.')]
  plan.entries += model_entries(fp, budget, sizing, timing)
  plan.add('eval_batch_size', 1, 'whole-volume evaluation, one case at a time')
  plan.add('predict_batch_size', 2, 'sliding windows per forward pass')
  if budget.device == 'gpu':
    steps = _gpu_schedule(budget, plan)
  else:
    measured = (overheads(sizing) if overheads is not None else
                wall_time_lib.Overheads(0.0, 0.0, 0.0))
    steps, wall = cpu_plan.schedule(budget, timing.step_seconds, measured,
                                    input_plan.evaluation_cases(fp),
                                    sizing.patch, INFERENCE_OVERLAP,
                                    mirror_axes)
    _cpu_schedule(budget, timing, steps, timed_on_cores, wall, plan)
  _schedule(budget, steps, plan)
  plan.entries += [e for e in inputs.entries if e[0].startswith('data.')]
  _inference(fp, mirror_axes, plan)
  _provenance(fp, budget, plan)
  return plan

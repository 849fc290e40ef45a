"""`unet_main.py --mode=plan`: a converted dataset -> a commented recipe file.

Reads the fingerprint and sizes the recipe for the budget. A CPU budget
times training steps, windows and checkpoints on this machine
(`Measurements`), optionally calibrates its spacing by short trainings
(`unet3d.planning.calibration`), and writes the records resampled to the
spacing it chose. Each stage prints progress lines with an ETA. The recipe
is checked to load as a config and written atomically.
"""

from __future__ import annotations

import os
import time
from typing import Any, Callable, Optional

from unet3d import config
from unet3d import fileio
from unet3d.planning import budgets as budgets_lib
from unet3d.planning import calibration
from unet3d.planning import fingerprint as fingerprint_lib
from unet3d.planning import input_plan
from unet3d.planning import planner
from unet3d.planning import recipe
from unet3d.planning import rules
from unet3d.planning import sizing as sizing_lib
from unet3d.planning import spacing as spacing_lib
from unet3d.planning import wall_time
from unet3d.preprocess import regrid

PLAN_FILE = 'plan_{budget}.yaml'


def timing_threads(budget: budgets_lib.Budget) -> int:
  """Limits TensorFlow to the CPU budget's cores (or this machine's, when
  fewer) for the timed steps; returns the cores the steps run on. Must run
  before TensorFlow starts executing; after, the steps use what it has."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  available = os.cpu_count() or 1
  threads = min(budget.cores or available, available)
  try:
    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(threads)
  except RuntimeError:  # already running (tests): as configured
    return tf.config.threading.get_intra_op_parallelism_threads() or available
  return threads


class Progress:
  """Progress lines with an ETA for the plan's stages (printed; planning
  can take minutes while it times steps and resamples records)."""

  def __init__(self, out: Optional[Callable[[str], None]] = None):
    self._out = out or (lambda line: print(line, flush=True))
    self._stage = ''
    self._start = time.perf_counter()

  def start(self, stage: str) -> None:
    self._stage, self._start = stage, time.perf_counter()
    self._out(f'plan: {stage} ...')

  def note(self, text: str) -> None:
    self._out(f'plan: {self._stage}: {text}')

  def update(self, done: float, total: float, what: str = '') -> None:
    """`done` of `total` units of the current stage are finished."""
    elapsed = time.perf_counter() - self._start
    left = elapsed * (total - done) / done if done > 0 else float('nan')
    eta = (f', about {_minutes(left)} left' if done < total and
           left == left else '')
    self._out(f'plan: {self._stage}: {done:g}/{total:g}'
              f'{" " + what if what else ""} ({_minutes(elapsed)} elapsed'
              f'{eta})')


def _minutes(seconds: float) -> str:
  seconds = int(round(seconds))
  return f'{seconds // 60}m{seconds % 60:02d}s'


def _sizing_key(sizing: sizing_lib.Sizing) -> tuple:
  return (tuple(sizing.patch), sizing.batch, tuple(sizing.filters),
          sizing.topology)


class Measurements:
  """What a CPU plan measures of a sizing on this machine, each sizing once:
  its training step with the plan's input pipeline reading the records (it
  shares the cores), startup, an inference window and a checkpoint."""

  def __init__(self, fp: fingerprint_lib.Fingerprint,
               budget: budgets_lib.Budget, records_dir: str,
               progress: Optional[Progress] = None):
    self._fp, self._budget, self._records_dir = fp, budget, records_dir
    self._progress = progress
    self._timings: dict[tuple, Any] = {}

  def _timing(self, sizing: sizing_lib.Sizing):
    # pylint: disable=g-import-not-at-top
    import tensorflow as tf
    from unet3d.input import pipeline
    from unet3d.training import benchmark
    # pylint: enable=g-import-not-at-top
    key = _sizing_key(sizing)
    if key not in self._timings:
      values = planner.measurement_values(self._fp, self._budget, sizing,
                                          self._records_dir)
      cfg = config.build_config_from_mapping(
          config.nest_dotted(values.items(), 'the measured recipe'))
      try:
        self._timings[key] = benchmark.run_timing(cfg)
      except tf.errors.OpError as e:  # a shard that cannot be read
        raise ValueError(pipeline.describe_read_error(cfg, e)) from None
      if self._progress is not None:
        self._progress.note(
            f'a {rules.describe_shape(sizing.patch)} patch, batch '
            f'{sizing.batch}: {self._timings[key].step:.2f} s per step')
    return self._timings[key]

  def seconds_per_step(self, sizing: sizing_lib.Sizing) -> float:
    return self._timing(sizing).step

  def overheads(self, sizing: sizing_lib.Sizing) -> wall_time.Overheads:
    timing = self._timing(sizing)
    return wall_time.Overheads(timing.startup, timing.window,
                               timing.checkpoint)


def _header(fp: fingerprint_lib.Fingerprint, budget: budgets_lib.Budget,
            plan_file: str, hours: Optional[float]) -> list[str]:
  train = (len(fp.cases) if input_plan.trains_on_every_case(fp) else
           len(fp.training_cases()))
  return [
      f'unet3d recipe planned from {fp.path}',
      f'  fingerprint sha256 {fp.sha256}',
      f'  budget {budget.name}: {budget.description}'
      + ('' if hours is None or hours == budgets_lib.BUDGETS[
          budget.name].train_hours else f' (--train_hours={hours:g})'),
      f'  {len(fp.cases)} cases ({train} for training), labels '
      + ', '.join(fp.labels[k] for k in sorted(fp.labels, key=int)),
      'Each key follows the one-line reason above it. Train it unchanged:',
      f'  python unet_main.py --mode=train_and_eval --config_file={plan_file} '
      '--model_dir=<run folder>',
  ]


def plan_dataset(data_dir: str, budget_name: str,
                 plan_file: Optional[str] = None,
                 train_hours: Optional[float] = None,
                 seconds_per_step: Optional[
                     Callable[[sizing_lib.Sizing], float]] = None,
                 overheads: Optional[
                     Callable[[sizing_lib.Sizing], wall_time.Overheads]
                 ] = None,
                 out: Optional[Callable[[str], None]] = None,
                 calibrate: bool = False) -> dict[str, Any]:
  """Plans a recipe for the converter output in data_dir and writes it,
  with the records resampled to the plan's spacing when a CPU plan chose a
  coarser one (`<data_dir>/spacing_<mm>/`).

  Args:
    data_dir: the converter's output folder (its dataset.json), or the
      dataset.json itself.
    budget_name: one of budgets.BUDGETS.
    plan_file: where the recipe goes; default
      `<data_dir>/plan_<budget>.yaml`.
    train_hours: replaces a CPU budget's hours.
    seconds_per_step, overheads: replace the measured step time and
      overheads (tests).
    out: where progress lines go.
    calibrate: CPU budgets: choose the spacing by short trainings of the
      candidates (`unet3d.planning.calibration`), which spend
      CALIBRATION_SHARE of the hours; the recipe's steps fill the rest.
  Returns {'plan_file', 'warnings', 'notes', 'values'}.
  """
  budget = budgets_lib.get_budget(budget_name, train_hours)
  if calibrate and budget.device != 'cpu':
    raise ValueError('--calibrate: only CPU budgets calibrate (a GPU budget '
                     'trains nnU-Net\'s full-resolution recipe)')
  whole_hours = budget.train_hours
  if calibrate:
    budget = budgets_lib.get_budget(
        budget_name, whole_hours * (1 - calibration.CALIBRATION_SHARE))
  fp = fingerprint_lib.read(data_dir)
  records_dir = fileio.dirname(fp.path)
  if not fileio.is_remote(records_dir):
    records_dir = os.path.abspath(records_dir)
  plan_file = plan_file or fileio.join(
      records_dir, PLAN_FILE.format(budget=budget.name))
  timed_on_cores = None
  progress = Progress(out)
  if budget.device == 'cpu' and seconds_per_step is None:
    pattern = input_plan.training_pattern(records_dir)
    if not fileio.glob(pattern):
      raise ValueError(f'{pattern}: no training records beside {fp.path} '
                       f'(budget {budget.name} times training steps on them; '
                       'keep dataset.json with the converter\'s records)')
    timed_on_cores = timing_threads(budget)
    measurements = Measurements(fp, budget, records_dir, progress)
    seconds_per_step = measurements.seconds_per_step
    overheads = measurements.overheads

  def on_candidate(i: int, n: int) -> None:
    if i == 0:
      progress.start(f'timing training steps at {n} candidate spacings')
    else:
      progress.update(i, n, 'spacings sized')

  chooser = None
  if calibrate:
    chooser = calibration.Calibrator(budget, records_dir, overheads, progress)
  plan = planner.make_plan(fp, budget, records_dir, seconds_per_step,
                           timed_on_cores, overheads=overheads,
                           chooser=chooser, progress=on_candidate)
  if calibrate:
    plan.notes.append(
        f'calibration spent {calibration.CALIBRATION_SHARE:.0%} of the '
        f'{whole_hours:g} h while planning; train_steps fill the other '
        f'{1 - calibration.CALIBRATION_SHARE:.0%} ({budget.train_hours:g} h)')
  if plan.resample_to is not None:
    folder = spacing_lib.spacing_folder(plan.resample_to)
    progress.start(f'resampling the records to '
                   f'{rules.describe_shape(plan.resample_to)} mm')
    regrid.regrid_dataset(
        records_dir, fileio.join(records_dir, folder), plan.resample_to,
        f'plan ({budget.name})', overwrite=True,
        progress=lambda done, total: progress.update(done, total, 'records'))
  text = recipe.render(plan, _header(fp, budget, plan_file, whole_hours))
  recipe.check_rendered(text, plan, f'the planned recipe for {fp.path}')
  recipe.check_loads(text, f'the planned recipe for {fp.path}')
  fileio.write_text(plan_file, text)
  return {'plan_file': plan_file, 'warnings': plan.warnings,
          'notes': plan.notes, 'values': plan.values()}

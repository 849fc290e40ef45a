"""`unet_main.py --mode=plan`: a converted dataset -> a commented recipe file.

Reads the fingerprint, sizes the recipe for the budget (CPU budgets time
training steps on this machine), checks that the recipe loads as a config,
and writes it atomically.
"""

from __future__ import annotations

import os
from typing import Any, Callable, Optional

from unet3d import config
from unet3d import fileio
from unet3d.planning import budgets as budgets_lib
from unet3d.planning import fingerprint as fingerprint_lib
from unet3d.planning import planner
from unet3d.planning import recipe
from unet3d.planning import sizing as sizing_lib

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


def measured_step(fp: fingerprint_lib.Fingerprint,
                  budget: budgets_lib.Budget, records_dir: str
                 ) -> Callable[[sizing_lib.Sizing], float]:
  """Seconds per training step of a sizing, timed on this machine with the
  plan's input pipeline reading the records (it shares the cores)."""
  # pylint: disable=g-import-not-at-top
  import tensorflow as tf
  from unet3d.input import pipeline
  from unet3d.training import benchmark
  # pylint: enable=g-import-not-at-top

  def measure(sizing: sizing_lib.Sizing) -> float:
    values = planner.measurement_values(fp, budget, sizing, records_dir)
    cfg = config.build_config_from_mapping(
        config.nest_dotted(values.items(), 'the measured recipe'))
    try:
      return benchmark.seconds_per_step(cfg)
    except tf.errors.OpError as e:  # a shard that cannot be read
      raise ValueError(pipeline.describe_read_error(cfg, e)) from None

  return measure


def _header(fp: fingerprint_lib.Fingerprint, budget: budgets_lib.Budget,
            plan_file: str) -> list[str]:
  train = len(fp.training_cases())
  return [
      f'unet3d recipe planned from {fp.path}',
      f'  fingerprint sha256 {fp.sha256}',
      f'  budget {budget.name}: {budget.description}',
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
                     Callable[[sizing_lib.Sizing], float]] = None
                ) -> dict[str, Any]:
  """Plans a recipe for the converter output in data_dir and writes it.

  Args:
    data_dir: the converter's output folder (its dataset.json), or the
      dataset.json itself.
    budget_name: one of budgets.BUDGETS.
    plan_file: where the recipe goes; default
      `<data_dir>/plan_<budget>.yaml`.
    train_hours: replaces a CPU budget's hours.
    seconds_per_step: replaces the measured step time (tests).
  Returns {'plan_file', 'warnings', 'values'}.
  """
  budget = budgets_lib.get_budget(budget_name, train_hours)
  fp = fingerprint_lib.read(data_dir)
  records_dir = fileio.dirname(fp.path)
  if not fileio.is_remote(records_dir):
    records_dir = os.path.abspath(records_dir)
  plan_file = plan_file or fileio.join(
      records_dir, PLAN_FILE.format(budget=budget.name))
  timed_on_cores = None
  if budget.device == 'cpu' and seconds_per_step is None:
    pattern = planner.training_pattern(records_dir)
    if not fileio.glob(pattern):
      raise ValueError(f'{pattern}: no training records beside {fp.path} '
                       f'(budget {budget.name} times training steps on them; '
                       'keep dataset.json with the converter\'s records)')
    timed_on_cores = timing_threads(budget)
    seconds_per_step = measured_step(fp, budget, records_dir)
  plan = planner.make_plan(fp, budget, records_dir, seconds_per_step,
                           timed_on_cores)
  text = recipe.render(plan, _header(fp, budget, plan_file))
  recipe.check_rendered(text, plan, f'the planned recipe for {fp.path}')
  recipe.check_loads(text, f'the planned recipe for {fp.path}')
  fileio.write_text(plan_file, text)
  return {'plan_file': plan_file, 'warnings': plan.warnings,
          'values': plan.values()}

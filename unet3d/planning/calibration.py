"""Calibration: a CPU plan's spacing chosen by measured held-out dice.

The coverage rule (`unet3d.planning.spacing`) guesses which spacing
generalises best for a time budget; calibration measures it:

1. CALIBRATION_SHARE of the budget's hours is split evenly over the
   candidate spacings, and the recipe's own steps fill the rest;
2. what is held out: the val split when the plan holds cases out; else,
   with two or more cases, the last case (by id); with one case, the last
   HELD_OUT_REGION of it along its longest axis;
3. each candidate trains on its records resampled and re-split
   (`unet3d.preprocess.regrid`, in a scratch folder) with the recipe's
   network, input and optimiser for the steps its share holds, then
   evaluates the held-out part once, whole, without mirroring;
4. the best mean foreground dice wins, unless the coverage rule's choice
   scored within TIE of it; every candidate's score goes into the plan's
   comments.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile
from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence

from unet3d import config
from unet3d.planning import budgets as budgets_lib
from unet3d.planning import fingerprint as fingerprint_lib
from unet3d.planning import planner
from unet3d.planning import rules
from unet3d.planning import spacing as spacing_lib
from unet3d.planning import wall_time as wall_time_lib

# The share of a CPU budget's hours calibration spends.
CALIBRATION_SHARE = 0.25
# With one case, the share of it (along its longest axis) held out.
HELD_OUT_REGION = 0.25
# Scores within this of the best count as equal (the coverage rule's
# choice among them stands).
TIE = 0.02


@dataclass(frozen=True)
class HoldOut:
  """What calibration scores on: whole cases, or a region of each."""
  kind: str  # 'cases' or 'region'
  case_ids: tuple[str, ...] = ()

  def describe(self) -> str:
    if self.kind == 'region':
      return (f'the last {HELD_OUT_REGION:.0%} of the case along its longest '
              'axis')
    return 'held-out case' + ('s ' if len(self.case_ids) > 1 else ' ') + (
        ', '.join(self.case_ids))


def hold_out(fp: fingerprint_lib.Fingerprint) -> HoldOut:
  """The val split's cases, else the last case, else a region."""
  val = tuple(c.case_id for c in fp.cases if c.split == 'val')
  if val:
    return HoldOut('cases', val)
  if len(fp.cases) > 1:
    return HoldOut('cases', (max(c.case_id for c in fp.cases),))
  return HoldOut('region')


def held_out_cases(fp: fingerprint_lib.Fingerprint, held: HoldOut
                  ) -> list[fingerprint_lib.CaseFingerprint]:
  """The held-out part as cases (a region: each case cut to it)."""
  if held.kind == 'cases':
    return [c for c in fp.cases if c.case_id in held.case_ids]
  out = []
  for case in fp.cases:
    shape = list(case.stored_shape)
    axis = shape.index(max(shape))
    shape[axis] = max(1, round(shape[axis] * HELD_OUT_REGION))
    out.append(dataclasses.replace(case, stored_shape=tuple(shape)))
  return out


def calibration_steps(seconds: float, step_seconds: float,
                      overheads: wall_time_lib.Overheads,
                      windows: int) -> int:
  """Steps of one candidate that fit its seconds with startup, one
  evaluation and one checkpoint."""
  return max(10, wall_time_lib.steps_that_fit(seconds, step_seconds,
                                              overheads, windows, 1, 1))


def pick(scores: Sequence[float], rule_index: int) -> int:
  """The best score, unless the rule's choice scored within TIE of it
  (short trainings are noisy: a smaller lead is not evidence)."""
  best = max(scores)
  if best - scores[rule_index] <= TIE:
    return rule_index
  return scores.index(best)


class Calibrator:
  """The plan's chooser (`planner.make_plan(chooser=...)`): trains every
  candidate briefly and picks by held-out dice (module doc)."""

  def __init__(self, budget: budgets_lib.Budget, records_dir: str,
               overheads: Callable[[Any], wall_time_lib.Overheads],
               progress=None, work_dir: Optional[str] = None):
    self._budget, self._records_dir = budget, records_dir
    self._overheads, self._progress = overheads, progress
    self._work_dir = work_dir
    self.scores: list[float] = []

  def seconds_per_candidate(self, candidates: int) -> float:
    """The budget given is the recipe's (1 - CALIBRATION_SHARE of the
    hours); calibration's share of the whole, split over the candidates."""
    return (self._budget.train_hours * 3600.0 * CALIBRATION_SHARE /
            (1 - CALIBRATION_SHARE) / candidates)

  def __call__(self, candidates: Sequence[spacing_lib.Candidate],
               rule_index: int) -> tuple[int, str]:
    work = self._work_dir or tempfile.mkdtemp(prefix='unet3d-calibration-')
    try:
      self.scores = []
      steps = []
      if self._progress is not None:
        self._progress.start(f'calibrating {len(candidates)} candidate '
                             'spacings')
      for i, candidate in enumerate(candidates):
        score, n = self._score(candidate, os.path.join(work, str(i)),
                               self.seconds_per_candidate(len(candidates)))
        self.scores.append(score)
        steps.append(n)
        if self._progress is not None:
          self._progress.update(
              i + 1, len(candidates),
              f'candidates; {rules.describe_shape(candidate.spacing)} mm: '
              f'held-out dice {score:.3f} after {n} steps')
    finally:
      if self._work_dir is None:
        shutil.rmtree(work, ignore_errors=True)
    index = pick(self.scores, rule_index)
    held = hold_out(candidates[0].fingerprint)
    scored = ', '.join(
        f'{rules.describe_shape(c.spacing)} mm {s:.3f} ({n} steps)'
        for c, s, n in zip(candidates, self.scores, steps))
    return index, (f'calibration: mean foreground dice on '
                   f'{held.describe()} after '
                   f'{CALIBRATION_SHARE:.0%} of the hours split over the '
                   f'candidates: {scored}')

  def _score(self, candidate: spacing_lib.Candidate, work: str,
             seconds: float) -> tuple[float, int]:
    # pylint: disable=g-import-not-at-top
    from unet3d.preprocess import regrid
    from unet3d.training import trainer
    # pylint: enable=g-import-not-at-top
    fp = candidate.fingerprint
    held = hold_out(fp)
    assign = (regrid.hold_out_cases(held.case_ids) if held.kind == 'cases'
              else regrid.hold_out_region(HELD_OUT_REGION))
    data = os.path.join(work, 'records')
    regrid.regrid_dataset(self._records_dir, data, candidate.spacing,
                          'calibration', overwrite=True, assign=assign)
    windows = wall_time_lib.evaluation_windows(
        held_out_cases(fp, held), candidate.sizing.patch, 0.5, [])
    steps = calibration_steps(seconds, candidate.timing.step_seconds,
                              self._overheads(candidate.sizing), windows)
    values = planner.measurement_values(fp, self._budget, candidate.sizing,
                                        data)
    # Holding a case out may leave fewer records than the recipe's batch.
    records = sum(c.num_records for c in fp.cases
                  if held.kind == 'region' or c.case_id not in held.case_ids)
    values.update({
        'train_batch_size': min(candidate.sizing.batch, records),
        'training_file_pattern': os.path.join(data, 'train-*.tfrecord'),
        'eval_file_pattern': os.path.join(data, 'val-*.tfrecord'),
        'model_dir': os.path.join(work, 'run'),
        'train_steps': steps, 'init_learning_rate': 0.003,
        'train.lr_schedule': 'polynomial',
        'train.checkpoint_every_n_steps': steps,
        'train.keep_best_checkpoint': False,
        'inference.mirror_axes': [],
        'seed': 0})
    cfg = config.build_config_from_mapping(
        config.nest_dotted(values.items(), 'the calibration recipe'))
    report = trainer.train_and_evaluate(cfg)
    return float(report['mean_foreground_dice']), steps

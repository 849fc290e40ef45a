"""A CPU budget's choices: the spacing and patch, and the steps its hours
hold with everything else the run does.

1. every candidate spacing is sized for the budget's memory and hours
   (`unet3d.planning.spacing`), and one is chosen: by the foreground
   coverage rule, or by calibration's measured dice when given;
2. the steps are what the hours hold after startup, evaluation and
   checkpoints (`unet3d.planning.wall_time`), rounded down to
   STEP_ROUNDING.

Pure functions of measured seconds; the plan writes the entries, notes and
warnings returned here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence

from unet3d.planning import budgets as budgets_lib
from unet3d.planning import fingerprint as fingerprint_lib
from unet3d.planning import rules
from unet3d.planning import sizing as sizing_lib
from unet3d.planning import spacing as spacing_lib
from unet3d.planning import wall_time as wall_time_lib

# Steps are rounded down to a multiple of this.
STEP_ROUNDING = 50
# A run saves this many checkpoints (and one at the end).
CHECKPOINTS = 20
# Whole-volume evaluations of a CPU run: at the end.
EVALUATIONS = 1

# (candidates, the coverage rule's choice) -> (the index chosen, reason).
Chooser = Callable[[Sequence[spacing_lib.Candidate], int],
                   tuple[int, str]]


@dataclass
class CpuChoice:
  """The chosen candidate, the other candidates, and why."""
  candidates: list[spacing_lib.Candidate]
  index: int
  reason: str
  notes: list[str] = field(default_factory=list)

  @property
  def chosen(self) -> spacing_lib.Candidate:
    return self.candidates[self.index]


def choose_spacing(fp: fingerprint_lib.Fingerprint, budget: budgets_lib.Budget,
                   seconds_per_step: Callable[[sizing_lib.Sizing], float],
                   chooser: Optional[Chooser] = None,
                   on_candidate: Optional[Callable[[int, int], None]] = None
                  ) -> CpuChoice:
  """Sizes every candidate spacing and chooses one (module doc)."""
  candidates = spacing_lib.size_candidates(fp, budget, seconds_per_step,
                                           on_candidate)
  _, is_foreground = fp.foreground_extent_mm()
  index, reason = spacing_lib.choose(candidates, is_foreground)
  if chooser is not None:
    index, reason = chooser(candidates, index)
  notes = [f'spacing candidate {i + 1} of {len(candidates)}, '
           f'{c.describe()}' for i, c in enumerate(candidates)]
  notes.append(f'{spacing_lib.extent_text(fp)} at the stored spacing; '
               f'chose {rules.describe_shape(candidates[index].spacing)}'
               f' mm: {reason}')
  return CpuChoice(candidates, index, reason, notes)


def timed_on(timed_on_cores: Optional[int]) -> str:
  """Where a CPU plan's step was timed, as a phrase ('' when not here)."""
  if timed_on_cores is None:
    return ''
  return (f' with its input pipeline on {timed_on_cores} cores of this '
          'machine')


def warnings(budget: budgets_lib.Budget, timing: sizing_lib.Timing,
             timed_on_cores: Optional[int]) -> list[str]:
  """When the hours hold too few steps, or the step was timed on fewer
  cores than the budget's."""
  out = []
  if not timing.fits:
    out.append(
        f'budget {budget.name}: {budget.train_hours:g} h hold only '
        f'{int(budget.train_hours * 3600 / timing.step_seconds)} steps of '
        f'{timing.step_seconds:.2f} s, fewer than {sizing_lib.MIN_CPU_STEPS} '
        f'({timing.why_not}); give more --train_hours')
  if timed_on_cores is not None and timed_on_cores < budget.cores:
    out.append(
        f'budget {budget.name} is for {budget.cores} cores; the step was '
        f'timed{timed_on(timed_on_cores)}, so train_steps is what '
        f'{timed_on_cores} cores do in {budget.train_hours:g} h (more cores '
        'would do more)')
  return out


def schedule(budget: budgets_lib.Budget, step_seconds: float,
             overheads: wall_time_lib.Overheads,
             evaluation_cases: Sequence[fingerprint_lib.CaseFingerprint],
             patch: Sequence[int], overlap: float,
             mirror_axes: Sequence[int]
            ) -> tuple[int, wall_time_lib.WallTime]:
  """The steps the budget's hours hold with startup, evaluation and
  checkpoints, and the run's estimated wall time."""
  windows = wall_time_lib.evaluation_windows(evaluation_cases, patch,
                                             overlap, mirror_axes)
  fit = wall_time_lib.steps_that_fit(
      budget.train_hours * 3600.0, step_seconds, overheads, windows,
      EVALUATIONS, CHECKPOINTS + 1)
  steps = max(STEP_ROUNDING, fit // STEP_ROUNDING * STEP_ROUNDING)
  return steps, wall_time_lib.wall_time(steps, step_seconds, overheads,
                                        windows, EVALUATIONS,
                                        CHECKPOINTS + 1)

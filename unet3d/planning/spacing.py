"""A CPU budget's spacing and patch, chosen together.

A time budget holds about the same patch voxels per step at any spacing, so
a coarser spacing buys context: the same patch covers more millimetres.
Structures told apart by position and side need that context more than
they need the finest voxels. nnU-Net makes this trade for GPU memory (its
3d_lowres configuration); a CPU plan makes it for time:

1. candidates: the stored spacing and coarser ones, the finest axis times
   1.5 and 2 (axes already coarser keep their spacing);
2. each is sized as `unet3d.planning.sizing` sizes the stored one: the
   largest patch its memory allows, shrunk until MIN_CPU_STEPS measured
   steps fit the budget's hours;
3. the choice: the finest candidate whose patch covers at least
   COVERAGE_TARGET of the foreground's bounding box (median over the
   training cases, in mm); when none does, the one that covers most.

Calibration (`unet3d.planning.calibration`) may replace step 3 by short
trainings of the candidates. Pure functions; the step time is measured by
the caller.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import numpy as np

from unet3d.planning import budgets as budgets_lib
from unet3d.planning import fingerprint as fingerprint_lib
from unet3d.planning import rules
from unet3d.planning import sizing as sizing_lib

# Candidate spacings: the finest stored axis times these.
COARSENING = (1.0, 1.5, 2.0)
# The share of the foreground's bounding box one patch should cover. Half
# kept a 1.1 mm patch holding 53% of the benchmark's 69x79x59 mm box, which
# lost to 1.65 mm (all of the box) by 0.3-0.4 dice on a scan from another
# source; on the held-back MRI task a 1.5 mm 60x72x60 mm patch (about four
# fifths of such a box) beat a 1 mm one by 0.4. A 1.1 mm patch holding the
# whole box did as well as 1.65 mm (benchmarks page, "Plans that generalise").
COVERAGE_TARGET = 0.75


@dataclass(frozen=True)
class Candidate:
  """One spacing, the sizing and timing a budget gives it, and how much of
  the foreground box its patch covers."""
  spacing: tuple[float, ...]
  fingerprint: fingerprint_lib.Fingerprint
  sizing: sizing_lib.Sizing
  timing: sizing_lib.Timing
  coverage: float

  @property
  def patch_mm(self) -> list[float]:
    return [p * s for p, s in zip(self.sizing.patch, self.spacing)]

  def describe(self) -> str:
    """One line: spacing, patch in voxels and mm, coverage, step time."""
    return (f'{rules.describe_shape(self.spacing)} mm: patch '
            f'{rules.describe_shape(self.sizing.patch)} '
            f'({rules.describe_shape(self.patch_mm)} mm) covers '
            f'{self.coverage:.0%} of the foreground box, '
            f'{self.timing.step_seconds:.2f} s per step')


def candidate_spacings(stored_spacing: Sequence[float]
                      ) -> list[tuple[float, ...]]:
  """The stored spacing and its coarsenings (COARSENING of the finest
  axis; coarser axes keep theirs), without repeats, finest first."""
  finest = min(stored_spacing)
  out: list[tuple[float, ...]] = []
  for factor in COARSENING:
    spacing = tuple(float(round(max(s, factor * finest), 4))
                    for s in stored_spacing)
    if spacing not in out:
      out.append(spacing)
  return out


def coverage(patch: Sequence[int], spacing: Sequence[float],
             extent_mm: Sequence[float]) -> float:
  """The share of a box of extent_mm (per axis) that one patch covers."""
  return float(math.prod(min(1.0, p * s / e) for p, s, e in
                         zip(patch, spacing, extent_mm)))


def size_candidates(fp: fingerprint_lib.Fingerprint,
                    budget: budgets_lib.Budget,
                    seconds_per_step: Callable[[sizing_lib.Sizing], float],
                    on_candidate: Optional[Callable[[int, int], None]] = None
                   ) -> list[Candidate]:
  """Every candidate spacing, sized for the budget's memory and hours."""
  extent, _ = fp.foreground_extent_mm()
  spacings = candidate_spacings(fp.stored_spacing())
  out = []
  for i, spacing in enumerate(spacings):
    if on_candidate is not None:
      on_candidate(i, len(spacings))
    at = fp if i == 0 else fp.at_spacing(spacing)
    sizing = sizing_lib.size_for_memory(at, budget, grow_batch=False)
    sizing, timing = sizing_lib.size_for_time(at, budget, sizing,
                                              seconds_per_step)
    out.append(Candidate(spacing, at, sizing, timing,
                         coverage(sizing.patch, spacing, extent)))
  return out


def choose(candidates: Sequence[Candidate], extent_is_foreground: bool
          ) -> tuple[int, str]:
  """The index of the chosen candidate and the reason."""
  box = 'foreground box' if extent_is_foreground else (
      'median case (no foreground box recorded)')
  fitting = [i for i, c in enumerate(candidates) if c.timing.fits] or list(
      range(len(candidates)))
  for i in fitting:
    if candidates[i].coverage >= COVERAGE_TARGET:
      return i, (f'the finest spacing whose patch covers at least '
                 f'{COVERAGE_TARGET:.0%} of the {box} in the budget\'s time')
  best = max(fitting, key=lambda i: (candidates[i].coverage, -i))
  return best, (f'no spacing\'s patch covers {COVERAGE_TARGET:.0%} of the '
                f'{box} in the budget\'s time: the one that covers most')


def spacing_folder(spacing: Sequence[float]) -> str:
  """The folder (beside the converter's records) of records resampled to
  `spacing`."""
  return 'spacing_' + 'x'.join(f'{s:g}' for s in spacing)


def extent_text(fp: fingerprint_lib.Fingerprint) -> str:
  extent, is_foreground = fp.foreground_extent_mm()
  what = 'foreground box' if is_foreground else 'median case'
  return f'{what} {rules.describe_shape(np.round(extent, 1))} mm'

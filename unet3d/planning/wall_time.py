"""A CPU plan's wall time: what the run spends besides its training steps.

A time budget covers the whole `--mode=train_and_eval` run, so the steps
it holds are what remains after

- startup: building the model and tracing the step, and the input
  pipeline's first batches (measured with the step time);
- evaluation: every evaluation runs sliding windows over the evaluation
  cases, with test-time mirroring when the recipe mirrors (windows counted
  as inference places them, each pass timed on this machine);
- checkpoints: each save, measured.

Pure functions; the caller measures the seconds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

from unet3d.planning import fingerprint as fingerprint_lib


@dataclass(frozen=True)
class Overheads:
  """Measured seconds of what a run spends besides its steps."""
  startup: float
  # One forward pass of one window (batched as predict_batch_size).
  window: float
  checkpoint: float


@dataclass(frozen=True)
class WallTime:
  """Seconds a planned run takes, by part."""
  startup: float
  steps: float
  evaluation: float
  checkpoints: float

  @property
  def total(self) -> float:
    return self.startup + self.steps + self.evaluation + self.checkpoints

  def describe(self) -> str:
    return (f'{self.total / 60:.1f} min: {self.startup:.0f} s startup, '
            f'{self.steps / 60:.1f} min of steps, {self.evaluation:.0f} s '
            f'evaluating, {self.checkpoints:.0f} s saving checkpoints')


def windows_per_axis(size: int, patch: int, overlap: float) -> int:
  """Windows inference places along one axis
  (`unet3d.inference.window_placement.window_starts`)."""
  # pylint: disable-next=g-import-not-at-top
  from unet3d.inference import window_placement  # imports TensorFlow
  return len(window_placement.window_starts(size, patch, overlap))


def evaluation_windows(cases: Sequence[fingerprint_lib.CaseFingerprint],
                       patch: Sequence[int], overlap: float,
                       mirror_axes: Sequence[int]) -> int:
  """Forward passes of one whole-volume evaluation over `cases`."""
  passes = 2 ** len(mirror_axes)
  return passes * sum(
      math.prod(windows_per_axis(n, p, overlap)
                for n, p in zip(c.stored_shape, patch)) for c in cases)


def wall_time(steps: int, step_seconds: float, overheads: Overheads,
              windows_per_evaluation: int, evaluations: int,
              checkpoints: int) -> WallTime:
  """The run's seconds by part."""
  return WallTime(
      startup=overheads.startup, steps=steps * step_seconds,
      evaluation=evaluations * windows_per_evaluation * overheads.window,
      checkpoints=checkpoints * overheads.checkpoint)


def steps_that_fit(seconds: float, step_seconds: float,
                   overheads: Overheads, windows_per_evaluation: int,
                   evaluations: int, checkpoints: int) -> int:
  """Steps whose run, overheads included, fits `seconds` (0 when the
  overheads alone do not)."""
  rest = seconds - wall_time(0, step_seconds, overheads,
                             windows_per_evaluation, evaluations,
                             checkpoints).total
  return max(0, int(rest / step_seconds))

"""Live training progress: a bar on a terminal, else a line every N seconds.

Each update shows step/total, loss, learning rate, steps/s, voxels/s and the
ETA. Speeds average over the loops since the start of this process, leaving
out the first (it includes tracing), so the ETA settles quickly.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from typing import Optional, TextIO


def format_duration(seconds: float) -> str:
  """'45s', '7m05s', '2h03m', '3d04h'."""
  seconds = max(0, int(round(seconds)))
  if seconds < 60:
    return f'{seconds}s'
  minutes, seconds = divmod(seconds, 60)
  if minutes < 60:
    return f'{minutes}m{seconds:02d}s'
  hours, minutes = divmod(minutes, 60)
  if hours < 24:
    return f'{hours}h{minutes:02d}m'
  days, hours = divmod(hours, 24)
  return f'{days}d{hours:02d}h'


def format_count(value: float) -> str:
  """912, 12.3k, 4.56M."""
  if value >= 1e6:
    return f'{value / 1e6:.2f}M'
  if value >= 1e3:
    return f'{value / 1e3:.1f}k'
  return f'{value:.0f}'


@dataclasses.dataclass
class Snapshot:
  """What one update reports."""
  step: int
  total: int
  loss: float
  learning_rate: float
  steps_per_second: Optional[float]
  voxels_per_step: int
  epoch: Optional[float] = None

  @property
  def eta_seconds(self) -> Optional[float]:
    if not self.steps_per_second:
      return None
    return (self.total - self.step) / self.steps_per_second

  def line(self) -> str:
    """`step 120/400 (30%)  loss 0.4132  lr 2.1e-03  1.92 steps/s  442k
    vox/s  ETA 2m26s`."""
    parts = [f'step {self.step}/{self.total} '
             f'({100 * self.step / max(self.total, 1):.0f}%)']
    if self.epoch is not None:
      parts.append(f'epoch {self.epoch:.2f}')
    parts += [f'loss {self.loss:.4f}', f'lr {self.learning_rate:.2e}']
    if self.steps_per_second:
      parts += [f'{self.steps_per_second:.2f} steps/s',
                f'{format_count(self.steps_per_second * self.voxels_per_step)}'
                ' vox/s', f'ETA {format_duration(self.eta_seconds)}']
    return '  '.join(parts)


class Progress:
  """Reports training progress after every loop of steps.

  On a terminal, a tqdm bar (its postfix holds loss, lr and speeds); when
  stdout is not a terminal (logs, CI), a `Snapshot.line` at the first loop
  and then at most every `interval_seconds`, and always at the end.
  """

  def __init__(self, first_step: int, total: int, voxels_per_step: int,
               interval_seconds: float = 30.0,
               stream: Optional[TextIO] = None,
               use_bar: Optional[bool] = None):
    self._stream = stream or sys.stdout
    self._total = total
    self._voxels = voxels_per_step
    self._interval = interval_seconds
    self._last_print = None
    self._timed_steps = 0
    self._timed_seconds = 0.0
    self._loops = 0
    if use_bar is None:
      use_bar = self._stream.isatty()
    self._bar = None
    if use_bar:
      import tqdm  # pylint: disable=g-import-not-at-top
      self._bar = tqdm.tqdm(total=total, initial=first_step, unit='step',
                            file=self._stream, dynamic_ncols=True)

  def steps_per_second(self) -> Optional[float]:
    if not self._timed_seconds:
      return None
    return self._timed_steps / self._timed_seconds

  def update(self, step: int, num_steps: int, seconds: float, loss: float,
             learning_rate: float, epoch: Optional[float] = None,
             now: Optional[float] = None) -> Snapshot:
    """Records one loop of num_steps steps that took `seconds`."""
    self._loops += 1
    if self._loops > 1 or num_steps > 1:
      # The first loop includes tracing; leave it out once there is more.
      if self._loops == 2:
        self._timed_steps, self._timed_seconds = 0, 0.0
      self._timed_steps += num_steps
      self._timed_seconds += seconds
    snapshot = Snapshot(step, self._total, loss, learning_rate,
                        self.steps_per_second(), self._voxels, epoch)
    now = time.monotonic() if now is None else now
    if self._bar is not None:
      self._bar.update(num_steps)
      postfix = {'loss': f'{loss:.4f}', 'lr': f'{learning_rate:.1e}'}
      if snapshot.steps_per_second:
        postfix['vox/s'] = format_count(
            snapshot.steps_per_second * self._voxels)
      self._bar.set_postfix(postfix, refresh=True)
    elif (self._last_print is None or step >= self._total or
          now - self._last_print >= self._interval):
      print(snapshot.line(), file=self._stream, flush=True)
      self._last_print = now
    return snapshot

  def message(self, text: str) -> None:
    """A line that does not break the bar."""
    if self._bar is not None:
      self._bar.write(text, file=self._stream)
    else:
      print(text, file=self._stream, flush=True)

  def close(self) -> None:
    if self._bar is not None:
      self._bar.close()
      self._bar = None

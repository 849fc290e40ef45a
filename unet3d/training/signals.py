"""SIGTERM / SIGINT during training: finish the running loop, save, stop.

Preemptible TPUs and shared GPU clusters stop jobs with SIGTERM; users press
Ctrl-C. The first signal only records the request, so the loop in flight
completes and the trainer can save a checkpoint at that step; a second
SIGINT stops at once (Python's usual KeyboardInterrupt).
"""

from __future__ import annotations

import signal
import sys
import threading
from typing import Optional

_HANDLED = (signal.SIGTERM, signal.SIGINT)


class StopRequests:
  """Records the first SIGTERM/SIGINT while installed."""

  def __init__(self):
    self.requested: Optional[tuple[int, str]] = None
    self._previous = {}

  def _handle(self, number, frame):
    del frame
    if self.requested is not None and number == signal.SIGINT:
      raise KeyboardInterrupt
    self.requested = (number, signal.Signals(number).name)
    print(f'{signal.Signals(number).name}: finishing the running steps, '
          'then saving a checkpoint (Ctrl-C again stops at once)',
          file=sys.stderr, flush=True)

  def install(self) -> None:
    """Handles the signals (main thread only; elsewhere a no-op)."""
    if threading.current_thread() is not threading.main_thread():
      return
    for number in _HANDLED:
      self._previous[number] = signal.signal(number, self._handle)

  def uninstall(self) -> None:
    for number, previous in self._previous.items():
      signal.signal(number, previous)
    self._previous = {}

"""`model_dir/train.lock`: one training run at a time on a run folder.

The lock file's name is part of the run folder's layout (`run_dir.LOCK_FILE`).
"""

from __future__ import annotations

import os
import socket
import time
from typing import Any

import tensorflow as tf

from unet3d import fileio
from unet3d import run_dir
from unet3d.errors import RunError

# A lock whose holder has not refreshed it for this long is taken over.
LOCK_STALE_SECONDS = 600.0

def _pid_alive(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:
    return True
  return True


class TrainLock:
  """`model_dir/train.lock`: refuses a second training run on the folder.

  Holds the host, pid and a heartbeat time. A lock is stale, and taken over,
  when its process is gone (same host) or its heartbeat is older than
  LOCK_STALE_SECONDS (any host, e.g. a preempted TPU VM).
  """

  def __init__(self, model_dir: str):
    self.path = fileio.join(model_dir, run_dir.LOCK_FILE)
    self._owner = {'host': socket.gethostname(), 'pid': os.getpid()}
    self._last_beat = 0.0

  def _stale(self, holder: dict[str, Any]) -> bool:
    if holder.get('host') == self._owner['host']:
      return not _pid_alive(int(holder.get('pid', -1)))
    return time.time() - float(holder.get('time', 0)) > LOCK_STALE_SECONDS

  def acquire(self) -> None:
    if fileio.exists(self.path):
      try:
        holder = fileio.read_json(self.path)
      except (ValueError, tf.errors.OpError):
        holder = {}
      if holder and holder != self._owner and not self._stale(holder):
        age = time.time() - float(holder.get('time', 0))
        raise RunError(
            f'model_dir: another training run (pid {holder.get("pid")} on '
            f'{holder.get("host")}, alive {age:.0f} s ago) is using '
            f'{fileio.dirname(self.path)}; wait for it or use another '
            f'model_dir (remove {self.path} if that run is gone)')
    self.heartbeat(force=True)

  def heartbeat(self, force: bool = False) -> None:
    """Refreshes the lock's time (at most every 30 s unless forced)."""
    now = time.time()
    if force or now - self._last_beat > 30:
      fileio.write_json(self.path, {**self._owner, 'time': now})
      self._last_beat = now

  def release(self) -> None:
    try:
      if fileio.exists(self.path) and {
          k: v for k, v in fileio.read_json(self.path).items()
          if k != 'time'} == self._owner:
        fileio.remove(self.path)
    except (ValueError, tf.errors.OpError):
      pass

  def __enter__(self):
    self.acquire()
    return self

  def __exit__(self, *exc):
    self.release()

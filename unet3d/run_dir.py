"""A run's folder (`model_dir`): its params.yaml and checkpoints, and a model
restored from them without an optimizer.

Training, evaluation and inference all go through here, so the layout is
known in one place:

  params.yaml          the resolved config that trained the run
  checkpoint, ckpt-N   interval checkpoints (model, optimizer, step, input
                       position, plateau state)
  best/                the checkpoint with the best eval dice, best.json
  train.lock           held by the training run using the folder
  train/, eval/        TensorBoard summaries and evaluation reports

Every path may be local or on a TensorFlow filesystem (gs://, ram://).
"""

from __future__ import annotations

import os
import socket
import time
from typing import Any, Optional

import keras
import tensorflow as tf

from unet3d import config as config_lib
from unet3d import distribute
from unet3d import errors
from unet3d import fileio
from unet3d import models
from unet3d.config import Config, ConfigError
from unet3d.errors import RunError

PARAMS_FILE = 'params.yaml'
BEST_DIR = 'best'
BEST_JSON = 'best.json'
LOCK_FILE = 'train.lock'
# A lock whose holder has not refreshed it for this long is taken over.
LOCK_STALE_SECONDS = 600.0


def params_path(model_dir: str) -> str:
  return fileio.join(model_dir, PARAMS_FILE)


def save_params(cfg: Config) -> None:
  """Writes the resolved config to `cfg.model_dir/params.yaml`."""
  fileio.write_text(params_path(cfg.model_dir), config_lib.to_yaml(cfg))


def load_params(model_dir: str) -> Optional[Config]:
  """The config saved in model_dir, or None when there is none."""
  path = params_path(model_dir)
  if not fileio.exists(path):
    return None
  return config_lib.from_yaml(fileio.read_text(path), path)


def architecture_differences(saved: Config, cfg: Config) -> list[str]:
  """`key: saved -> given` for every architecture key (one that changes the
  model's variables) on which two configs differ."""
  out = []
  for key in models.ARCHITECTURE_KEYS:
    a, b = config_lib.value_at(saved, key), config_lib.value_at(cfg, key)
    if a != b:
      out.append(f'{key}: {a!r} -> {b!r}')
  return out


def check_same_model(cfg: Config, saved: Optional[Config],
                     what: str) -> None:
  """Refuses (one line naming the keys) a config whose architecture differs
  from the run's params.yaml; `what` names the source of the change."""
  if saved is None:
    return
  differences = architecture_differences(saved, cfg)
  if differences:
    raise ConfigError(
        f'model_dir: {params_path(cfg.model_dir)} describes a different '
        f'model than {what} ({"; ".join(differences)}); use another '
        'model_dir, or pass --overwrite to use your config')


def latest_checkpoint(model_dir: str) -> Optional[str]:
  """The newest interval checkpoint's prefix, or None."""
  if not model_dir:
    return None
  return tf.train.latest_checkpoint(model_dir)


def best_dir(model_dir: str) -> str:
  return fileio.join(model_dir, BEST_DIR)


def read_best(model_dir: str) -> Optional[dict[str, Any]]:
  """best.json of the run (step, mean foreground dice, per class), if any."""
  path = fileio.join(best_dir(model_dir), BEST_JSON)
  return fileio.read_json(path) if fileio.exists(path) else None


def find_checkpoint(model_dir: str, which: str = 'latest') -> str:
  """The checkpoint prefix to restore: 'latest', 'best', or a path.

  Raises a one-line ConfigError naming model_dir when there is none.
  """
  if not model_dir and which in ('latest', 'best'):
    raise ConfigError('model_dir: required (the run whose checkpoint to use)')
  if which == 'latest':
    path = latest_checkpoint(model_dir)
    if not path:
      raise ConfigError(f'model_dir: no checkpoint in {model_dir!r}; train '
                        'first or point model_dir at a run')
    return path
  if which == 'best':
    path = latest_checkpoint(best_dir(model_dir))
    if not path:
      raise ConfigError(f'--checkpoint=best: no best checkpoint in '
                        f'{best_dir(model_dir)!r} (train_and_eval with '
                        'train.keep_best_checkpoint writes it)')
    return path
  if not fileio.exists(which + '.index'):
    raise ConfigError(f'--checkpoint: {which} is not a checkpoint (no '
                      f'{which}.index)')
  return which


def checkpoint_step(path: str) -> int:
  """The global step stored in a checkpoint (the optimizer's iterations)."""
  step = tf.Variable(-1, dtype=tf.int64)
  reader = tf.train.Checkpoint(optimizer=tf.train.Checkpoint(_iterations=step))
  reader.restore(path).expect_partial()
  return int(step.numpy())


def restore_model(cfg: Config, checkpoint: str = 'latest',
                  strategy: Optional[tf.distribute.Strategy] = None
                 ) -> tuple[keras.Model, int]:
  """Builds the configured model and restores its weights, without an
  optimizer; returns (model, step).

  Args:
    cfg: the run's config (model keys, precision, model_dir).
    checkpoint: 'latest' (in cfg.model_dir) or a checkpoint prefix.
    strategy: builds the variables under this strategy's scope; the default
      strategy when None.
  """
  path = find_checkpoint(cfg.model_dir, checkpoint)
  distribute.set_precision_policy(cfg)
  strategy = strategy or tf.distribute.get_strategy()
  with strategy.scope():
    model = models.build_model(cfg)
  restore_checked(tf.train.Checkpoint(model=model), path, partial=True)
  return model, checkpoint_step(path)


def restore_checked(checkpoint: tf.train.Checkpoint, path: str,
                    partial: bool = False) -> None:
  """Restores `path` into `checkpoint`; every variable of `checkpoint` must
  come from the file (a partial restore raises one line). `partial`: the
  file may hold more (e.g. the optimizer, when only the model is wanted)."""
  try:
    status = checkpoint.restore(path)
    if partial:
      status.expect_partial()
    status.assert_existing_objects_matched()
  except (AssertionError, ValueError, tf.errors.OpError) as e:
    raise RunError(f'{path}: checkpoint does not match the configured model '
                   f'({errors.first_line(e)[:300]}); use the config it was trained with '
                   '(its params.yaml) or another model_dir') from None


# ----------------------------------------------------------------------------
# One training run at a time
# ----------------------------------------------------------------------------


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
    self.path = fileio.join(model_dir, LOCK_FILE)
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

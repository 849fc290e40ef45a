"""A run's folder (`model_dir`): its params.yaml and checkpoints, and a model
restored from them without an optimizer.

Training, evaluation and inference all go through here, so the layout is
known in one place:

  params.yaml          the resolved config that trained the run
  checkpoint, ckpt-N   interval checkpoints (model, optimizer, step, input
                       position, plateau state)
  best/                the checkpoint with the best eval dice, best.json
  train.lock           held by the training run using the folder
                       (unet3d.training.lock)
  train/, eval/        TensorBoard summaries and evaluation reports

Every path may be local or on a TensorFlow filesystem (gs://, ram://).
"""

from __future__ import annotations

import os
import re
import time
from typing import Any, Optional

import keras
import numpy as np
import tensorflow as tf
from absl import logging

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


def best_dir(model_dir: str) -> str:
  return fileio.join(model_dir, BEST_DIR)


def read_best(model_dir: str) -> Optional[dict[str, Any]]:
  """best.json of the run (step, mean foreground dice, per class), if any."""
  path = fileio.join(best_dir(model_dir), BEST_JSON)
  return fileio.read_json(path) if fileio.exists(path) else None


def checkpoint_step(path: str) -> int:
  """The global step stored in a checkpoint (the optimizer's iterations)."""
  step = tf.Variable(-1, dtype=tf.int64)
  reader = tf.train.Checkpoint(optimizer=tf.train.Checkpoint(_iterations=step))
  reader.restore(path).expect_partial()
  return int(step.numpy())


def restore_model(cfg: Config, checkpoint: str = 'latest',
                  strategy: Optional[tf.distribute.Strategy] = None,
                  fallbacks: tuple[str, ...] = ()
                 ) -> tuple[keras.Model, int]:
  """Builds the configured model and restores its weights, without an
  optimizer; returns (model, step).

  Args:
    cfg: the run's config (model keys, precision, model_dir).
    checkpoint: 'latest' or 'best' (of cfg.model_dir; falls back to the
      newest intact one, see `checkpoint_candidates`) or a checkpoint prefix.
    strategy: builds the variables under this strategy's scope; the default
      strategy when None.
    fallbacks: prefixes to try, in order, when `checkpoint` turns out
      corrupt at restore (what `checkpoint_candidates` listed after it).
  """
  candidates = checkpoint_candidates(cfg.model_dir, checkpoint)
  distribute.set_precision_policy(cfg)
  strategy = strategy or tf.distribute.get_strategy()
  with strategy.scope():
    model = models.build_model(cfg)
  path = restore_newest(tf.train.Checkpoint(model=model),
                        candidates + list(fallbacks), partial=True)
  return model, checkpoint_step(path)


# ----------------------------------------------------------------------------
# Checkpoints: found from their files, checked, restored with a fallback
# ----------------------------------------------------------------------------

INDEX_FILE = 'checkpoint'  # tf.train.CheckpointManager's list of ckpt-N
_CKPT_INDEX = re.compile(r'^ckpt-(\d+)\.index$')
_STEP = re.compile(r'-(\d+)$')
# What a save killed midway leaves (TensorFlow's own temporary names): the
# shards' folder `<prefix>_temp/` (checkpoint/functional_saver.py;
# `_temp_<uuid>` from the v1 Saver) and the index file's
# `checkpoint.tmp<uuid>` (file_io.atomic_write_string_to_file).
_SAVE_LEFTOVER = re.compile(
    r'^(ckpt-\d+_temp(_[0-9a-f]{32})?|checkpoint\.tmp[0-9a-f]{32})$')
# Errors of reading a checkpoint's files, rather than of matching its
# variables. A shard shorter than its index says raises IndexError.
_READ_ERROR_CODES = (tf.errors.DATA_LOSS, tf.errors.OUT_OF_RANGE,
                     tf.errors.NOT_FOUND, tf.errors.UNKNOWN)


class CorruptCheckpoint(RunError):
  """A checkpoint's files are missing, truncated or fail their checksum
  (not a checkpoint of another model: that is a plain RunError)."""

  def __init__(self, path: str, cause: str):
    super().__init__(f'{path} is corrupt or truncated ({cause}); restore it '
                     'from a copy, or move it aside to use an older one')
    self.path, self.cause = path, cause


def _basename(path: str) -> str:
  return path.rstrip('/').rsplit('/', 1)[-1].rsplit(os.sep, 1)[-1]


def _step_of(prefix: str) -> int:
  match = _STEP.search(prefix)
  return int(match.group(1)) if match else -1


def _indexed(folder: str) -> list[str]:
  """The prefixes the index file of `folder` names, as written (none when
  it is missing or unreadable)."""
  state = tf.train.get_checkpoint_state(folder)
  if state is None:
    return []
  return (list(state.all_model_checkpoint_paths) or
          [state.model_checkpoint_path])


def list_checkpoints(folder: str) -> list[str]:
  """Every checkpoint prefix in `folder`, newest (highest step) first.

  The `ckpt-N.index` files found there, merged with the prefixes the index
  file (`checkpoint`) names that still have their `.index`: a missing or
  stale index file hides no checkpoint. Integrity is not checked here (see
  `checkpoint_problem`).
  """
  if not folder or not fileio.isdir(folder):
    return []
  names = {name[:-len('.index')] for name in fileio.listdir(folder)
           if _CKPT_INDEX.match(name)}
  found = [fileio.join(folder, name) for name in names]
  found += [p for p in _indexed(folder)
            if _basename(p) not in names and fileio.exists(p + '.index')]
  return sorted(found, key=_step_of, reverse=True)


def latest_checkpoint(model_dir: str) -> Optional[str]:
  """The newest interval checkpoint's prefix (by its files, unchecked), or
  None."""
  found = list_checkpoints(model_dir)
  return found[0] if found else None


def checkpoint_problem(path: str) -> Optional[str]:
  """Why checkpoint `path` cannot be read, or None when it looks intact.

  Cheap (the index and the shards' sizes; no tensor is read): the `.index`
  must parse, every `.data-i-of-n` shard must exist, and the shards must
  hold at least the bytes of the numeric tensors the index lists. Flipped
  bytes pass; the restore finds them by checksum (`restore_newest`).
  """
  name = _basename(path)
  if not fileio.exists(path + '.index'):
    return f'no {name}.index'
  try:
    reader = tf.compat.v1.train.NewCheckpointReader(path)
    shapes = reader.get_variable_to_shape_map()
    dtypes = reader.get_variable_to_dtype_map()
  except (tf.errors.OpError, ValueError) as e:
    return f'{name}.index: {errors.first_line(e)[:120]}'
  folder = fileio.dirname(path)
  shards = [n for n in fileio.listdir(folder) if n.startswith(name + '.data-')]
  count = int(shards[0][-5:]) if shards else 1
  for i in range(count):
    shard = f'{name}.data-{i:05d}-of-{count:05d}'
    if shard not in shards:
      return f'{shard} is missing'
  size = sum(fileio.gfile.stat(fileio.join(folder, n)).length for n in shards)
  expected = sum(int(np.prod(shape)) * dtypes[key].size
                 for key, shape in shapes.items()
                 if dtypes[key] not in (tf.string, tf.resource, tf.variant))
  if size < expected:
    return f'its data holds {size} bytes, the index lists {expected}'
  return None


def _corrupt(folder: str, found: list[CorruptCheckpoint]) -> RunError:
  """The one-line error when no checkpoint of `folder` can be read."""
  if len(found) == 1:
    return found[0]
  causes = '; '.join(f'{_basename(e.path)}: {e.cause[:80]}' for e in found[:3])
  return RunError(f'{folder}: every checkpoint ({len(found)}) is corrupt or '
                  f'truncated ({causes}); restore them from a copy, or use '
                  'another model_dir')


def _warn_skipped(skipped: list[CorruptCheckpoint], used: str) -> None:
  for e in skipped:
    logging.warning('%s is corrupt (%s); using %s', e.path, e.cause,
                    _basename(used))


def checkpoint_candidates(model_dir: str, which: str = 'latest') -> list[str]:
  """The checkpoints `which` can mean, to restore in this order.

  'latest' (or 'best'): every checkpoint of model_dir (or best/) whose files
  pass `checkpoint_problem`, newest first, warning about each newer one that
  does not. A path: that checkpoint alone, which must pass. Raises one line:
  ConfigError when there is no checkpoint, CorruptCheckpoint (a RunError)
  when none is intact.
  """
  if not model_dir and which in ('latest', 'best'):
    raise ConfigError('model_dir: required (the run whose checkpoint to use)')
  if which not in ('latest', 'best'):
    if not fileio.exists(which + '.index'):
      raise ConfigError(f'--checkpoint: {which} is not a checkpoint (no '
                        f'{which}.index)')
    problem = checkpoint_problem(which)
    if problem:
      raise CorruptCheckpoint(which, problem)
    return [which]
  folder = model_dir if which == 'latest' else best_dir(model_dir)
  found = list_checkpoints(folder)
  if not found and which == 'latest':
    raise ConfigError(f'model_dir: no checkpoint in {model_dir!r}; train '
                      'first or point model_dir at a run')
  if not found:
    raise ConfigError(f'--checkpoint=best: no best checkpoint in {folder!r} '
                      '(train_and_eval with train.keep_best_checkpoint '
                      'writes it)')
  skipped, intact = [], []
  for path in found:
    problem = checkpoint_problem(path)
    if problem and not intact:
      skipped.append(CorruptCheckpoint(path, problem))
    elif not problem:
      intact.append(path)
  if not intact:
    raise _corrupt(folder, skipped)
  _warn_skipped(skipped, intact[0])
  return intact


def find_checkpoint(model_dir: str, which: str = 'latest') -> str:
  """The checkpoint prefix to restore: 'latest', 'best', or a path; the
  newest intact one (see `checkpoint_candidates`)."""
  return checkpoint_candidates(model_dir, which)[0]


def restore_checked(checkpoint: tf.train.Checkpoint, path: str,
                    partial: bool = False) -> None:
  """Restores `path` into `checkpoint`; every variable of `checkpoint` must
  come from the file (a partial restore raises one line). `partial`: the
  file may hold more (e.g. the optimizer, when only the model is wanted).

  Raises CorruptCheckpoint when the files cannot be read (missing,
  truncated, a checksum), a RunError when they hold another model.
  """
  problem = checkpoint_problem(path)
  if problem:
    raise CorruptCheckpoint(path, problem)
  try:
    status = checkpoint.restore(path)
    if partial:
      status.expect_partial()
    status.assert_existing_objects_matched()
  except IndexError as e:  # a shard shorter than its index says
    raise CorruptCheckpoint(path, errors.first_line(e)[:200]) from None
  except (AssertionError, ValueError, tf.errors.OpError) as e:
    if getattr(e, 'error_code', None) in _READ_ERROR_CODES:
      raise CorruptCheckpoint(path, errors.first_line(e)[:200]) from None
    raise RunError(f'{path}: checkpoint does not match the configured model '
                   f'({errors.first_line(e)[:300]}); use the config it was trained with '
                   '(its params.yaml) or another model_dir') from None


def restore_newest(checkpoint: tf.train.Checkpoint, candidates: list[str],
                   partial: bool = False) -> str:
  """Restores the first of `candidates` (newest first) that reads intact
  and returns it; warns `<path> is corrupt (<cause>); using <name>` for
  each one skipped. A checkpoint of another model stops at once (an older
  one would not match either). Raises one line when none reads."""
  skipped = []
  for path in candidates:
    try:
      restore_checked(checkpoint, path, partial)
    except CorruptCheckpoint as e:
      skipped.append(e)
      continue
    _warn_skipped(skipped, path)
    return path
  raise _corrupt(fileio.dirname(candidates[0]), skipped)


def resume(checkpoint: tf.train.Checkpoint, model_dir: str,
           tidy: bool) -> Optional[str]:
  """Restores a training run's newest intact checkpoint into `checkpoint`;
  None when model_dir holds no `ckpt-N` (a new run).

  Never starts over while checkpoint files exist: when none can be read it
  raises one line. With `tidy` (the chief, holding train.lock), each
  checkpoint newer than the one restored (all corrupt) is moved aside into
  `<prefix>.corrupt-<time>/` (kept, never deleted, so it is not picked
  again nor overwritten), and the index file is rewritten when it does not
  list the checkpoints found (missing, or naming deleted files), so that
  tf.train.CheckpointManager keeps and rotates them.
  """
  found = list_checkpoints(model_dir)
  if not found:
    return None
  path = restore_newest(checkpoint, checkpoint_candidates(model_dir))
  if tidy:
    for corrupt in found[:found.index(path)]:
      _move_aside(corrupt)
    _sync_index(model_dir)
  return path


def _move_aside(path: str) -> None:
  """Moves a corrupt checkpoint's files into `<path>.corrupt-<time>/`."""
  folder, name = fileio.dirname(path), _basename(path)
  aside = f'{path}.corrupt-{time.strftime("%Y%m%dT%H%M%S")}'
  fileio.makedirs(aside)
  for file in fileio.listdir(folder):
    if file == name + '.index' or file.startswith(name + '.data-'):
      fileio.gfile.rename(fileio.join(folder, file), fileio.join(aside, file))
  logging.warning('moved the corrupt %s aside to %s', path, aside)


def _sync_index(folder: str) -> None:
  """Rewrites `folder/checkpoint` to list the checkpoints found there,
  oldest first as tf.train.CheckpointManager writes it, when it differs."""
  found = list_checkpoints(folder)[::-1]
  names = [_basename(p) if fileio.dirname(p) == folder else p for p in found]
  indexed = [_basename(p) if fileio.dirname(p) == folder else p
             for p in _indexed(folder)]
  if not found or names == indexed:
    return
  path = fileio.join(folder, INDEX_FILE)
  fileio.write_text(path, f'model_checkpoint_path: "{names[-1]}"\n' + ''.join(
      f'all_model_checkpoint_paths: "{n}"\n' for n in names))
  gone = sorted(set(indexed) - set(names))
  why = (f'named {", ".join(gone)}, which are gone' if gone else
         'missing' if not indexed else 'incomplete')
  logging.warning('%s was %s; rewrote it to list %s', path, why,
                  ', '.join(names))


def remove_save_leftovers(model_dir: str) -> list[str]:
  """Removes what a checkpoint save killed midway leaves in model_dir and
  best/ (only TensorFlow's own temporary names, `ckpt-N_temp/` and
  `checkpoint.tmp<uuid>`) and logs them; returns their paths. Call it on
  the chief while holding train.lock, so no save is running."""
  removed = []
  for folder in (model_dir, best_dir(model_dir)):
    for name in fileio.listdir(folder):
      if _SAVE_LEFTOVER.match(name.rstrip('/')):
        removed.append(fileio.join(folder, name.rstrip('/')))
        fileio.remove(removed[-1])
  if removed:
    logging.info('removed the leftovers of an interrupted checkpoint save: '
                 '%s', ', '.join(removed))
  return removed

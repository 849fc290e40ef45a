"""Running per-case jobs and publishing an output folder, for the converters.

Jobs run in 'spawn' worker processes (TensorFlow is not fork-safe) or in
this process, and come back in job order. Output goes to a staging folder
that becomes the output folder only when complete; on gs:// (or any
TensorFlow filesystem) it is staged locally and copied up at the end.
"""

from __future__ import annotations

import collections
import contextlib
import multiprocessing
import os
import shutil
import tempfile
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Optional, Sequence

from absl import logging

from unet3d import errors
from unet3d import fileio
from unet3d.input import dataset_info
from unet3d.preprocess import cases


# ----------------------------------------------------------------------------
# Output folder: refuse, write aside, publish
# ----------------------------------------------------------------------------


@dataclass
class Outcome:
  """A job's result, or the one-line error that stopped it."""
  case_id: str
  value: Any = None
  error: Optional[str] = None


def run_job(job: tuple[Callable[..., Any], str, tuple, dict]) -> Outcome:
  """Calls fn(*args, **kwargs); bad input (ValueError/OSError) becomes an
  Outcome error rather than an exception, so one case can be skipped."""
  fn, case_id, args, kwargs = job
  try:
    return Outcome(case_id, value=fn(*args, **kwargs))
  except (ValueError, OSError) as e:
    return Outcome(case_id, error=errors.first_line(e))



def input_files(case_list: Sequence[cases.Case]) -> Iterator[str]:
  for case in case_list:
    yield from case.image_files
    if case.label_file:
      yield case.label_file


def check_output(output_dir: str, overwrite: bool,
                 case_list: Sequence[cases.Case]) -> None:
  if fileio.exists(output_dir) and not fileio.isdir(output_dir):
    raise ValueError(f'{output_dir}: exists and is not a folder')
  if fileio.listdir(output_dir) and not overwrite:
    raise ValueError(f'{output_dir}: output folder exists and is not empty '
                     '(pass --overwrite to replace it)')
  if fileio.is_remote(output_dir):
    return
  out = os.path.realpath(output_dir) + os.sep
  for path in input_files(case_list):
    if os.path.realpath(path).startswith(out):
      raise ValueError(f'{output_dir}: output folder holds input file '
                       f'{path}; choose another output folder')


def publish(tmp_dir: str, output_dir: str) -> None:
  """Moves the finished local tmp folder to output_dir (replacing it)."""
  if fileio.is_remote(output_dir):
    # Object stores cannot rename a folder: the shards are copied into place
    # and dataset.json last, so a folder without it is incomplete.
    fileio.remove(output_dir)
    fileio.copy_tree(tmp_dir, output_dir, last=(dataset_info.DATASET_JSON,))
    return
  if os.path.exists(output_dir):
    old = f'{output_dir}.old-{os.getpid()}'
    os.rename(output_dir, old)
    os.rename(tmp_dir, output_dir)
    shutil.rmtree(old)
  else:
    os.rename(tmp_dir, output_dir)


@contextlib.contextmanager
def staged_output(output_dir: str, overwrite: bool,
                  case_list: Sequence[cases.Case]):
  """Yields a local staging folder that becomes output_dir when the block
  completes and is removed when it fails: `<output_dir>.tmp-<pid>` beside
  a local output_dir (renamed), a local temporary folder for a remote one
  (copied up, dataset.json last)."""
  check_output(output_dir, overwrite, case_list)
  if fileio.is_remote(output_dir):
    tmp_dir = tempfile.mkdtemp(prefix='unet3d-convert-')
  else:
    tmp_dir = f'{output_dir}.tmp-{os.getpid()}'
    shutil.rmtree(tmp_dir, ignore_errors=True)
    os.makedirs(tmp_dir)
  try:
    yield tmp_dir
    publish(tmp_dir, output_dir)
  finally:
    shutil.rmtree(tmp_dir, ignore_errors=True)


# ----------------------------------------------------------------------------
# Running jobs in order, in workers or in this process
# ----------------------------------------------------------------------------


@contextlib.contextmanager
def worker_pool(num_processes: int):
  if num_processes <= 1:
    yield None
    return
  pool = multiprocessing.get_context('spawn').Pool(num_processes)
  try:
    yield pool
  finally:
    pool.terminate()
    pool.join()


def ordered_outcomes(pool, jobs: Sequence[tuple], window: int
                     ) -> Iterator[Outcome]:
  """Job outcomes in job order, with at most `window` jobs in flight (so
  finished volumes never pile up while this process writes)."""
  if pool is None:
    for job in jobs:
      yield run_job(job)
    return
  pending = collections.deque()
  remaining = iter(jobs)

  def submit():
    job = next(remaining, None)
    if job is not None:
      pending.append(pool.apply_async(run_job, (job,)))

  for _ in range(window):
    submit()
  while pending:
    outcome = pending.popleft().get()
    submit()
    yield outcome


class Errors:
  """Applies the on_error policy and remembers skipped cases."""

  def __init__(self, on_error: str):
    self.on_error = on_error
    self.skipped: list[dict[str, str]] = []

  def ok(self, outcome: Outcome, stage: str) -> bool:
    if outcome.error is None:
      return True
    if self.on_error == 'stop':
      raise ValueError(outcome.error)
    logging.warning('skipped case %s: %s', outcome.case_id, outcome.error)
    self.skipped.append({'case_id': outcome.case_id, 'stage': stage,
                         'error': outcome.error})
    return False


class NoBar:

  def update(self, n=1):
    pass

  def close(self):
    pass


def progress_bar(progress, total: int, desc: str):
  """progress(total=, desc=) or a bar that does nothing; use with
  contextlib.closing so an error ends the bar's line before it is printed."""
  return NoBar() if progress is None else progress(total=total, desc=desc)

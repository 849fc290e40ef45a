"""File I/O for run folders, records and exports, on any TensorFlow filesystem.

Every read and write that can touch `model_dir`, TFRecords or an export goes
through here, so `gs://bucket/run` (Cloud TPU), `ram://` (tests) and local
paths behave alike. Writes are atomic where the filesystem allows: the
content goes to `<path>.tmp-<pid>` and is renamed over `path`, so a reader
never sees half a file.
"""

from __future__ import annotations

import contextlib
import json
import os
import posixpath
import shutil
import tempfile
from typing import Any, Iterator

import numpy as np
import tensorflow as tf

gfile = tf.io.gfile


def is_remote(path: str) -> bool:
  """True for paths with a URL scheme (gs://, ram://, s3://, ...)."""
  return '://' in str(path)


def join(*parts: str) -> str:
  """os.path.join for local paths, '/'-joined for URL paths."""
  if parts and is_remote(parts[0]):
    return posixpath.join(*parts)
  return os.path.join(*parts)


def normpath(path: str) -> str:
  """os.path.normpath for local paths; URL paths lose trailing '/' only."""
  return path.rstrip('/') if is_remote(path) else os.path.normpath(path)


def dirname(path: str) -> str:
  return posixpath.dirname(path) if is_remote(path) else os.path.dirname(path)


def exists(path: str) -> bool:
  return gfile.exists(path)


def isdir(path: str) -> bool:
  return gfile.isdir(path)


def isfile(path: str) -> bool:
  return gfile.exists(path) and not gfile.isdir(path)


def makedirs(path: str) -> None:
  gfile.makedirs(path)


def listdir(path: str) -> list[str]:
  return sorted(gfile.listdir(path)) if gfile.isdir(path) else []


def glob(pattern: str) -> list[str]:
  return sorted(gfile.glob(pattern))


def remove(path: str) -> None:
  """Removes a file or a folder tree; nothing when it is not there."""
  try:
    if gfile.isdir(path):
      gfile.rmtree(path)
    elif gfile.exists(path):
      gfile.remove(path)
  except tf.errors.NotFoundError:
    pass


def _cause(error: BaseException) -> str:
  """`strerror` of an OSError, the first line of a TensorFlow error."""
  if isinstance(error, OSError) and error.strerror:
    return error.strerror
  text = getattr(error, 'message', None) or str(error) or type(error).__name__
  return text.split('\n')[0]


def check_writable(folder: str, key: str) -> None:
  """Creates `folder` and writes and removes a tiny file in it, so a mode
  stops before its work when it could not write its outputs.

  Raises a one-line ValueError `<key>: cannot write to <folder> (<cause>)`
  (read-only, a file where a folder should be, a full disk).
  """
  probe = join(folder, f'.write-test-{os.getpid()}')
  try:
    gfile.makedirs(folder)
    with gfile.GFile(probe, 'w') as f:
      f.write('ok')
    gfile.remove(probe)
  except (OSError, tf.errors.OpError) as e:
    raise ValueError(f'{key}: cannot write to {folder} ({_cause(e)})'
                    ) from None


def read_text(path: str) -> str:
  with gfile.GFile(path, 'r') as f:
    return f.read()


def read_json(path: str) -> Any:
  return json.loads(read_text(path))


def open_read(path: str):
  """A binary, seekable reader of `path` (a GFile: streams from gs://)."""
  return gfile.GFile(path, 'rb')


@contextlib.contextmanager
def local_copy(path: str, suffix: str = '') -> Iterator[str]:
  """Yields a local file with the content of `path`: path itself when it
  is local, else a temporary copy (streamed, removed after the block).

  For readers that need a real local file (h5py's random access).
  """
  if not is_remote(path):
    yield path
    return
  with tempfile.TemporaryDirectory() as local_dir:
    local = os.path.join(local_dir, 'in' + suffix)
    gfile.copy(path, local, overwrite=True)
    yield local


def _tmp_name(path: str) -> str:
  return f'{path}.tmp-{os.getpid()}'


def write_text(path: str, text: str) -> None:
  """Writes text atomically (temporary name, then rename over `path`)."""
  parent = dirname(path)
  if parent:
    gfile.makedirs(parent)
  tmp = _tmp_name(path)
  with gfile.GFile(tmp, 'w') as f:
    f.write(text)
  gfile.rename(tmp, path, overwrite=True)


def _json_default(value):
  if isinstance(value, np.generic):
    return value.item()
  if isinstance(value, np.ndarray):
    return value.tolist()
  raise TypeError(f'not JSON serialisable: {type(value)}')


def write_json(path: str, data: Any) -> None:
  """Writes JSON (numpy values allowed) atomically."""
  write_text(path, json.dumps(data, indent=2, default=_json_default) + '\n')


@contextlib.contextmanager
def published(path: str, suffix: str = '') -> Iterator[str]:
  """Yields a local temporary file path; when the block completes, the file
  becomes `path` (renamed locally, copied for remote filesystems). When the
  block fails nothing appears at `path`.

  For writers that need a real local file (nibabel, matplotlib, h5py).
  """
  parent = dirname(path)
  if is_remote(path):
    with tempfile.TemporaryDirectory() as local_dir:
      local = os.path.join(local_dir, 'out' + suffix)
      yield local
      if parent:
        gfile.makedirs(parent)
      tmp = _tmp_name(path)
      gfile.copy(local, tmp, overwrite=True)
      gfile.rename(tmp, path, overwrite=True)
    return
  if parent:
    os.makedirs(parent, exist_ok=True)
  tmp = _tmp_name(path) + suffix
  try:
    yield tmp
    os.replace(tmp, path)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)


def copy_tree(src_dir: str, dst_dir: str, last: tuple[str, ...] = ()) -> None:
  """Copies every file below src_dir to the same place below dst_dir (any
  filesystems); files named in `last` (relative paths) are copied last, so
  their presence marks a complete copy."""
  files = []
  for root, _, names in gfile.walk(src_dir):
    rel_root = root[len(src_dir):].lstrip('/')
    files.extend(posixpath.join(rel_root, n) if rel_root else n for n in names)
  files.sort(key=lambda rel: (rel in last, rel))
  for rel in files:
    target = join(dst_dir, rel)
    gfile.makedirs(dirname(target))
    gfile.copy(join(src_dir, rel), target, overwrite=True)


def publish_dir(tmp_dir: str, final_dir: str) -> None:
  """Moves a completed folder to `final_dir` (which must not exist): a
  rename locally; on object stores, which cannot rename folders, a copy
  followed by removing tmp_dir."""
  if is_remote(final_dir) or is_remote(tmp_dir):
    copy_tree(tmp_dir, final_dir)
    remove(tmp_dir)
  else:
    shutil.move(tmp_dir, final_dir)

"""What has to happen before TensorFlow is imported, for every entry point.

- oneDNN: TensorFlow turns its oneDNN CPU kernels on by default only on
  CPUs with AVX-512-class features; on AVX2-only CPUs they are off, and a
  3D U-Net training step runs several times slower. unet3d turns them on
  unless the user's environment already sets TF_ENABLE_ONEDNN_OPTS.
- Quiet start: TensorFlow's C++ logging prints CUDA-driver and pre-init
  messages on machines without a GPU. They are held back while TensorFlow
  is imported and its devices are listed; anything else it printed, and
  everything when a GPU is present, is passed on.

Plain Python: this module must not import TensorFlow.
"""

from __future__ import annotations

import contextlib
import logging
import os
import platform
import re
import sys
import tempfile

ONEDNN_ENV = 'TF_ENABLE_ONEDNN_OPTS'

# Messages that only say "no GPU here" or that logging is not initialised.
_CPU_ONLY_NOISE = re.compile(
    r'All log messages before absl::InitializeLog|cudart_stub|cuda_platform|'
    r'cuInit|Could not find cuda drivers|Unable to register cu(DNN|FFT|BLAS)|'
    r'TF-TRT Warning|This TensorFlow binary is optimized|To enable the '
    r'following instructions|rebuild TensorFlow with the appropriate|'
    r'oneDNN custom operations are on|computation placer already registered|'
    r'cpu_feature_guard')


_onednn_set_here = False


def prepare_environment() -> None:
  """Sets TensorFlow's environment defaults; the user's own values win."""
  global _onednn_set_here
  os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
  if ONEDNN_ENV not in os.environ:
    os.environ[ONEDNN_ENV] = '1'
    _onednn_set_here = True


@contextlib.contextmanager
def _stderr_to(path: str):
  """Points file descriptor 2 (C++ logging writes there) at `path`."""
  sys.stderr.flush()
  saved = os.dup(2)
  with open(path, 'w') as target:
    os.dup2(target.fileno(), 2)
  try:
    yield
  finally:
    sys.stderr.flush()
    os.dup2(saved, 2)
    os.close(saved)


def import_tensorflow():
  """Imports TensorFlow with the environment prepared and its start-up
  noise filtered; returns the module."""
  prepare_environment()
  if 'tensorflow' in sys.modules:
    return sys.modules['tensorflow']
  has_gpu = True  # until known otherwise, hold nothing back
  with tempfile.NamedTemporaryFile('r', suffix='.log') as log:
    try:
      with _stderr_to(log.name):
        import tensorflow as tf  # pylint: disable=g-import-not-at-top
        has_gpu = bool(tf.config.list_physical_devices('GPU'))
    finally:
      for line in log.read().splitlines():
        if has_gpu or not _CPU_ONLY_NOISE.search(line):
          print(line, file=sys.stderr)
  hide_tensorflow_info_logs(tf)
  return tf


def hide_tensorflow_info_logs(tf) -> None:
  """Drops TensorFlow's own INFO records (one per checkpoint save, for
  example), which would interleave with the progress lines; warnings and
  unet3d's INFO lines still show. Some TensorFlow modules log through its
  logger, others through absl's. Idempotent."""
  tf.get_logger().setLevel('WARNING')
  absl_logger = logging.getLogger('absl')
  if not any(isinstance(f, _NoInfoFrom) for f in absl_logger.filters):
    absl_logger.addFilter(_NoInfoFrom(os.path.dirname(tf.__file__)))


class _NoInfoFrom(logging.Filter):
  """Drops records below WARNING logged from files under `root`."""

  def __init__(self, root: str):
    super().__init__()
    self._root = root

  def filter(self, record: logging.LogRecord) -> bool:
    return (record.levelno >= logging.WARNING or
            not record.pathname.startswith(self._root))


def cpu_model() -> str:
  """The CPU's model name, for benchmark reports."""
  try:
    with open('/proc/cpuinfo') as f:
      for line in f:
        if line.startswith('model name'):
          return line.split(':', 1)[1].strip()
  except OSError:
    pass
  return platform.processor() or 'unknown'


def cpu_simd_flags() -> list[str]:
  """The CPU's vector-instruction flags (avx2, fma, avx512*, amx*), and the
  ISA cap oneDNN is given (ONEDNN_MAX_CPU_ISA), for benchmark reports."""
  flags = set()
  try:
    with open('/proc/cpuinfo') as f:
      for line in f:
        if line.startswith('flags'):
          flags = set(line.split(':', 1)[1].split())
          break
  except OSError:
    pass
  wanted = sorted(f for f in flags if f in ('avx', 'avx2', 'fma', 'f16c') or
                  f.startswith(('avx512', 'amx', 'avx_vnni')))
  cap = os.environ.get('ONEDNN_MAX_CPU_ISA')
  return wanted + ([f'ONEDNN_MAX_CPU_ISA={cap}'] if cap else [])


def machine_info() -> dict:
  """The CPU, its core count and whether oneDNN is on, for benchmark JSON."""
  return {'onednn': onednn_enabled(), 'cpu': cpu_model(),
          'cpu_flags': cpu_simd_flags(), 'cpu_count': os.cpu_count()}


def onednn_enabled() -> bool:
  """Whether TensorFlow's oneDNN kernels are on in this process."""
  from tensorflow.python.util import _pywrap_util_port  # pylint: disable=g-import-not-at-top
  return bool(_pywrap_util_port.IsMklEnabled())


def describe_onednn() -> str:
  """One line: whether oneDNN is on, and who decided."""
  state = 'on' if onednn_enabled() else 'off'
  value = os.environ.get(ONEDNN_ENV)
  if value is None:
    how = "TensorFlow's default for this CPU"
  elif _onednn_set_here:
    how = f'{ONEDNN_ENV}={value} set by unet3d; export {ONEDNN_ENV}=0 to turn off'
  else:
    how = f'{ONEDNN_ENV}={value} from the environment'
  return f'oneDNN CPU kernels {state} ({how})'

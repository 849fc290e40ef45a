"""The errors unet3d reports as one line naming the file, key or thing that failed.

`unet_main.py` prints each as `error: <message>` and exits non-zero; anything
else escaping a mode is a bug and keeps its traceback.
"""

from __future__ import annotations

import difflib
import functools
import re
import sys
from typing import Callable, Sequence, Union

# The longest error line printed; longer messages are cut.
MAX_LINE = 500


class ConfigError(ValueError):
  """A config value or key is wrong. The message is one line naming the key."""


def unknown_name(key: str, value: str, known: Sequence[str],
                 kind: str) -> ConfigError:
  """The error for a name that no registry holds, with the closest match."""
  guess = difflib.get_close_matches(str(value), list(known), n=1)
  if guess:
    return ConfigError(f"{key}: unknown {kind} '{value}'; did you mean "
                       f"'{guess[0]}'? (expected one of {', '.join(known)})")
  return ConfigError(f"{key}: expected one of {', '.join(known)}, got "
                     f'{value!r}')


class RunError(RuntimeError):
  """A run cannot go on: training diverged, another run holds model_dir, a
  checkpoint does not match, the TPU cannot start. One line saying what
  failed and what to do."""


class Interrupted(RunError):
  """SIGTERM or SIGINT stopped training after a checkpoint was saved."""

  def __init__(self, message: str, signal_number: int):
    super().__init__(message)
    self.signal_number = signal_number


class StartupError(RuntimeError):
  """The devices or the cluster could not be started: a TPU that cannot be
  found, reached or initialised. The message is one line naming the TPU (or
  cluster) and the step that failed."""


def first_line(error: Union[BaseException, str]) -> str:
  """The first line of an error's message, without TensorFlow's
  `{{function_node ...}}` and `[Op:...]` decorations, cut to MAX_LINE
  characters; the exception's type name when the message is empty."""
  if isinstance(error, str):
    text, fallback = error, 'unknown error'
  else:
    text = getattr(error, 'message', None) or str(error)
    fallback = type(error).__name__
  text = re.sub(r'\{\{function_node [^}]*\}\}\s*', '', text or '').strip()
  line = re.sub(r'\s*\[Op:\w+\].*$', '', text.split('\n')[0]) if text else ''
  if len(line) > MAX_LINE:  # never echo a huge value
    line = line[:MAX_LINE - 3] + '...'
  return line or fallback


def one_line_errors(main: Callable) -> Callable:
  """Wraps a script's main: the errors unet3d reports as one line
  (ConfigError, RunError, StartupError, a ValueError or a missing file)
  print `error: <message>` on stderr and exit 1 (128 + the signal for an
  interrupted run), without a traceback."""

  @functools.wraps(main)
  def wrapped(*args, **kwargs):
    try:
      return main(*args, **kwargs)
    except Interrupted as e:
      print(f'error: {first_line(e)}', file=sys.stderr)
      sys.exit(128 + e.signal_number)
    except (ConfigError, RunError, StartupError, ValueError,
            FileNotFoundError) as e:
      print(f'error: {first_line(e)}', file=sys.stderr)
      sys.exit(1)

  return wrapped

"""What the predict mode tells its user: the live warning and failure lines
on stderr, the summary of a finished run, and its failures as one error.

The report is `predict.predict_files`'s dict: {'step', 'output_dir', 'files':
[{'input', 'output', 'nonfinite_voxels', 'quality_control', ...}], 'failed':
[{'input', 'error'}], 'ensemble'}.
"""

from __future__ import annotations

import sys
from typing import Any, Mapping

import tqdm

from unet3d.inference import quality_control as qc
from unet3d.preprocess import cases


def nonfinite_warning(input_path: str, count: int) -> str:
  """The one-line warning for an input whose non-finite voxels were
  replaced."""
  return (f'{input_path}: {count} non-finite voxel(s) (NaN or inf) replaced '
          f'({cases.NONFINITE_RULE})')


def one_line(error: BaseException, path: str) -> str:
  """The error's message as one line that names the file."""
  message = ' '.join(str(error).split()) or type(error).__name__
  return message if message.startswith(path) else f'{path}: {message}'


def report_failure(message: str) -> None:
  """`failed: <message>` on stderr, above a progress bar."""
  tqdm.tqdm.write(f'failed: {message}', file=sys.stderr)


def report_warning(message: str) -> None:
  """`warning: <message>` on stderr, above a progress bar."""
  tqdm.tqdm.write(f'warning: {message}', file=sys.stderr)


def format_summary(report: Mapping[str, Any]) -> str:
  """`input -> output` per written file, then the files quality control
  flagged and the failures, one a line."""
  lines = [f"{f['input']} -> {f['output']}" + (
      f" ({f['nonfinite_voxels']} non-finite voxel(s) replaced)"
      if f.get('nonfinite_voxels') else '') for f in report['files']]
  total = len(report['files']) + len(report['failed'])
  lines.append(f"predicted {len(report['files'])} of {total} file(s) into "
               f"{report['output_dir']}")
  flagged = [f for f in report['files'] if f.get('quality_control')]
  if flagged:
    lines.append(f'quality control flagged {len(flagged)} file(s):')
    lines.extend('  ' + qc.warning_line(f['input'], f['quality_control'])
                 for f in flagged)
  if report['failed']:
    lines.append(f"{len(report['failed'])} file(s) failed:")
    lines.extend(f"  {f['error']}" for f in report['failed'])
  return '\n'.join(lines)


def raise_for_failures(report: Mapping[str, Any]) -> None:
  """A one-line ValueError when any file failed: that file's error, or the
  count and the failed files."""
  failed = report['failed']
  if len(failed) == 1:
    raise ValueError(failed[0]['error'])
  if failed:
    total = len(report['files']) + len(failed)
    raise ValueError(f'{len(failed)} of {total} input files failed: ' +
                     ', '.join(f['input'] for f in failed))

"""Predict's cases from its input files: nnU-Net's channel naming.

An input file named `<case>_<XXXX>.nii.gz` (or `.nii`; XXXX four digits) is
one channel of `<case>`: the files of a case in one folder are grouped, in
channel index order, into one case whose output is `<case>_seg.nii.gz`.
The indices must run 0000, 0001, ... without gaps; a single `_0000` file
is a one-channel case. Files of a case without a `_0000` file (e.g.
`scan_2019.nii.gz`) and any other file are cases of their own (a 3D volume
or a 4D [X, Y, Z, C] volume), named after the file.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Optional, Sequence

from unet3d.inference import prediction_files
from unet3d.preprocess import io
from unet3d.preprocess import nnunet



@dataclasses.dataclass(frozen=True)
class InputCase:
  """One case to segment.

  name: the output's stem (`<name>_seg.nii.gz`); files: its channel files
  in channel order, or its one 3D/4D file; path: how reports name it (the
  file, or `<folder>/<case>_XXXX.nii.gz` for several channel files).
  """
  name: str
  files: tuple[str, ...]
  path: str


def _channel_file(path: str) -> Optional[dict[str, str]]:
  """{'case', 'channel', 'ending'} of a `<case>_<XXXX>.nii(.gz)` file
  (nnU-Net's channel naming, `nnunet.CHANNEL_NAME`), or None."""
  name = os.path.basename(path)
  ending = next((e for e in io.NIFTI_SUFFIXES if name.endswith(e)), None)
  match = ending and nnunet.CHANNEL_NAME.match(name[:-len(ending)])
  if not match:
    return None
  return {'case': match['case'], 'channel': match['channel'],
          'ending': ending}


def group_channels(paths: Sequence[str]) -> list[InputCase]:
  """Cases from input files, in the order of their first file.

  Raises a one-line ValueError naming a case (one with a `_0000` file)
  whose channel indices have a gap.
  """
  groups: dict[tuple[str, str, str], dict[int, str]] = {}
  out: list = []  # InputCase, or the key of a group of channel files
  for path in paths:
    match = _channel_file(path)
    if match is None:
      out.append(InputCase(io.strip_suffix(path), (path,), path))
      continue
    key = (os.path.dirname(path), match['case'], match['ending'])
    if key not in groups:
      groups[key] = {}
      out.append(key)
    groups[key][int(match['channel'])] = path
  cases = []
  for item in out:
    if isinstance(item, InputCase):
      cases.append(item)
    elif 0 in groups[item]:
      cases.append(_channel_case(item, groups[item]))
    else:  # no _0000: not channel files (e.g. scan_2019.nii.gz)
      cases.extend(InputCase(io.strip_suffix(p), (p,), p)
                   for _, p in sorted(groups[item].items()))
  return cases


def _channel_case(key: tuple[str, str, str], files: dict[int, str]
                 ) -> InputCase:
  """The case of one group of `<case>_<XXXX>` files."""
  folder, case, ending = key
  pattern = os.path.join(folder, f'{case}_XXXX{ending}')
  missing = sorted(set(range(max(files) + 1)) - set(files))
  if missing:
    raise ValueError(f'{pattern}: case {case} has no channel file '
                     f'{", ".join(f"_{c:04d}" for c in missing)} (expected '
                     f'_0000.._{max(files):04d} without gaps)')
  ordered = tuple(files[c] for c in sorted(files))
  return InputCase(case, ordered, ordered[0] if len(ordered) == 1 else pattern)


def input_cases(pattern: str) -> list[InputCase]:
  """The cases of `--input` / `predict.input_pattern` (see
  `prediction_files.input_files` for the pattern)."""
  return group_channels(prediction_files.input_files(pattern))


def check_case(case: InputCase, num_channels: int) -> None:
  """Header-only check of a case's channels: one 3D/4D file holding
  num_channels, or num_channels 3D channel files."""
  if len(case.files) == 1:
    prediction_files.check_input(case.files[0], num_channels)
    return
  if len(case.files) != num_channels:
    raise ValueError(f'{case.path}: {len(case.files)} channel files, but the '
                     f'model expects num_channels={num_channels}')
  for path in case.files:
    shape, _ = io.nifti_geometry(path)
    if len(shape) != 3:
      raise ValueError(f'{path}: expected a 3D channel volume of case '
                       f'{case.name}, got shape {tuple(shape)}')

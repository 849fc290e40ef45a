"""The predict mode's files: the inputs `predict.input_pattern` names, the
outputs' names beside them in `predict.output_dir`, and the writers that
give the outputs the input's geometry.
"""

from __future__ import annotations

import glob
from typing import Sequence

import numpy as np

from unet3d import fileio
from unet3d.preprocess import io

SEG_SUFFIX = '_seg.nii.gz'
PROBABILITIES_SUFFIX = {'nifti': '_probabilities.nii.gz',
                        'hdf5': '_probabilities.h5'}


def input_files(pattern: str) -> list[str]:
  """The sorted files of `--input` / `predict.input_pattern`: a file, a
  folder (its .nii and .nii.gz files), or a glob; several separated by
  commas.

  Raises a one-line ValueError naming a missing file or folder, or a glob
  that matches nothing. Files of other types that a glob matches are kept,
  and fail one by one in the run.
  """
  found = []
  for part in (p.strip() for p in pattern.split(',')):
    if not part:
      continue
    if fileio.isdir(part):
      matches = sorted(fileio.join(part, n) for n in fileio.listdir(part)
                       if n.endswith(io.NIFTI_SUFFIXES) and
                       fileio.isfile(fileio.join(part, n)))
      if not matches:
        raise ValueError(f'{part}: no .nii or .nii.gz files in this folder')
      found.extend(matches)
    elif glob.has_magic(part):
      matches = sorted(p for p in fileio.glob(part) if fileio.isfile(p))
      if not matches:
        raise ValueError(f'{part}: no files match predict.input_pattern '
                         '(expected .nii or .nii.gz volumes)')
      found.extend(matches)
    elif fileio.isfile(part):
      found.append(part)
    else:
      raise ValueError(f'{part}: file not found (predict.input_pattern)')
  return sorted(set(found))


def output_path(output_dir: str, input_path: str) -> str:
  """`<output_dir>/<input name without .nii(.gz)>_seg.nii.gz`."""
  return fileio.join(output_dir, io.strip_suffix(input_path) + SEG_SUFFIX)


def probabilities_path(output_dir: str, input_path: str, kind: str) -> str:
  """`<output_dir>/<name>_probabilities.nii.gz` (kind 'nifti') or `.h5`."""
  suffix = PROBABILITIES_SUFFIX[kind]
  return fileio.join(output_dir, io.strip_suffix(input_path) + suffix)


def check_input(path: str, num_channels: int) -> None:
  """Header-only check: a .nii(.gz) 3D volume or 4D [X, Y, Z, C] with
  num_channels."""
  if not path.endswith(io.NIFTI_SUFFIXES):
    raise ValueError(f'{path}: expected a .nii or .nii.gz volume')
  shape, _ = io.nifti_geometry(path)
  channels = 1 if len(shape) == 3 else shape[3] if len(shape) == 4 else None
  if channels is None:
    raise ValueError(f'{path}: expected a 3D volume or a 4D [X, Y, Z, C] '
                     f'volume, got shape {tuple(shape)}')
  if channels != num_channels:
    raise ValueError(f'{path}: {channels} channel(s), but the model expects '
                     f'num_channels={num_channels} (a 3D volume, or 4D '
                     '[X, Y, Z, C])')


def write_segmentation(path: str, labels: np.ndarray, input_path: str) -> None:
  """Saves labels (atomically) with the input file's affine and header,
  as uint8 without intensity scaling or display window."""
  reference = io.nifti_reference(input_path)
  header = reference.header.copy()
  header.set_data_dtype(np.uint8)
  header.set_intent('none')
  header['cal_min'] = header['cal_max'] = 0
  io.save_nifti(path, labels.astype(np.uint8), reference.affine, header)


def write_probabilities(path: str, probabilities: np.ndarray,
                        input_path: str, class_names: Sequence[str]) -> None:
  """Saves probabilities [X, Y, Z, K] in [0, 1] atomically.

  NIfTI has no float16: the 4D volume (the input's affine) is stored as
  uint16 with scl_slope/scl_inter (2 bytes a voxel like float16, steps of at
  most 1/65535 instead of float16's 4.9e-4 near 1); nibabel's `get_fdata`,
  ITK and other readers that apply the scaling get floats. HDF5: dataset
  `predictions` float16 [K, Z, Y, X] (pytorch-3dunet's channel-first
  (C, Z, Y, X) order) with attributes `axis_order`, `class_names` and the
  input's `affine`.
  """
  reference = io.nifti_reference(input_path)
  if path.endswith(io.NIFTI_SUFFIXES):
    header = reference.header.copy()
    header.set_data_dtype(np.uint16)  # nibabel scales the floats into it
    header.set_intent('none')
    header['cal_min'], header['cal_max'] = 0, 1
    io.save_nifti(path, np.clip(probabilities, 0.0, 1.0).astype(np.float32),
                  reference.affine, header)
    return
  import h5py  # pylint: disable=g-import-not-at-top
  with fileio.published(path, suffix='.h5') as local:
    with h5py.File(local, 'w') as f:
      dataset = f.create_dataset(
          'predictions', data=np.transpose(probabilities.astype(np.float16),
                                           (3, 2, 1, 0)),
          compression='gzip')
      dataset.attrs['axis_order'] = 'CZYX'
      dataset.attrs['class_names'] = list(class_names)
      dataset.attrs['affine'] = np.asarray(reference.affine, np.float64)

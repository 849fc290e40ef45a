"""Per-case NIfTI dumps of the eval mode (`metrics.save_nifti`), as
Intel's Decathlon U-Net writes them: for each evaluated case
`<model_dir>/eval/nifti/<case>_image.nii.gz`, `_label.nii.gz` and
`_prediction.nii.gz`, on the record's grid (its affine, its spacing as the
voxel size), each written atomically.

image: float32 [X, Y, Z] or [X, Y, Z, C] as the model saw it (the stored,
normalised record); label and prediction: uint8 class indices [X, Y, Z] or
masks [X, Y, Z, K]. Only `data.eval_mode: whole_volume` has the record's
grid; a centre crop has no place in it.
"""

from __future__ import annotations

import nibabel as nib
import numpy as np

from unet3d import fileio
from unet3d.config import ConfigError

FOLDER = 'nifti'
PARTS = ('image', 'label', 'prediction')


def check_config(cfg) -> None:
  """One-line ConfigError when dumps are asked for without whole volumes."""
  if cfg.metrics.save_nifti and cfg.data.eval_mode != 'whole_volume':
    raise ConfigError('metrics.save_nifti: needs data.eval_mode: '
                      'whole_volume (a centre crop is not on the record\'s '
                      f'grid), got {cfg.data.eval_mode}')


def _volume(array: np.ndarray, affine: np.ndarray,
            spacing: np.ndarray) -> nib.Nifti1Image:
  """A NIfTI of array [X, Y, Z(, C)] with the affine and voxel size; a
  single channel is written 3D."""
  if array.ndim == 4 and array.shape[-1] == 1:
    array = array[..., 0]
  image = nib.Nifti1Image(array, np.asarray(affine, np.float64))
  zooms = tuple(float(s) for s in spacing) + (1.0,) * (array.ndim - 3)
  image.header.set_zooms(zooms)
  image.header.set_xyzt_units('mm')
  return image


def write_case(folder: str, result) -> list[str]:
  """Writes one CaseResult (with its affine) as three NIfTIs; returns their
  paths (image, label, prediction)."""
  arrays = {'image': result.image.astype(np.float32),
            'label': result.label.astype(np.uint8),
            'prediction': result.prediction.astype(np.uint8)}
  paths = []
  for part in PARTS:
    path = fileio.join(folder, f'{result.case_id}_{part}.nii.gz')
    with fileio.published(path, suffix='.nii.gz') as local:
      nib.save(_volume(arrays[part], result.affine, result.spacing), local)
    paths.append(path)
  return paths

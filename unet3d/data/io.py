"""NIfTI reading and writing with geometry; errors name the file."""

from __future__ import annotations

import os
from typing import Optional

import nibabel as nib
import numpy as np


def load_nifti(path: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Returns (array in voxel order, affine 4x4, spacing in mm per axis)."""
  if not os.path.isfile(path):
    raise ValueError(f'{path}: file not found')
  try:
    img = nib.load(path)
    data = np.asarray(img.dataobj)
  except Exception as e:  # nibabel raises many types for corrupt files
    raise ValueError(f'{path}: not a readable NIfTI file '
                     f'({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ""})'
                    ) from None
  spacing = np.asarray(img.header.get_zooms()[:3], np.float64)
  return data, np.asarray(img.affine, np.float64), spacing


def save_nifti(path: str, array: np.ndarray, affine: np.ndarray,
               header: Optional[nib.Nifti1Header] = None) -> None:
  """Writes a NIfTI atomically (temporary name, then rename)."""
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  image = nib.Nifti1Image(np.asarray(array), np.asarray(affine), header)
  suffix = '.nii.gz' if path.endswith('.nii.gz') else '.nii'
  tmp = path[:-len(suffix)] + '.tmp-incomplete' + suffix
  try:
    nib.save(image, tmp)
    os.replace(tmp, path)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)

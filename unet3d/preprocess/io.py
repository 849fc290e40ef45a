"""Reading and writing volumes with their geometry; errors name the file.

Volumes keep nibabel's voxel-axis order and an `affine` that maps a voxel
index (i, j, k, 1) to world millimetres. Three on-disk forms are read:

- NIfTI (`.nii`, `.nii.gz`);
- `.npy` with a JSON sidecar `<stem>.json` holding the affine (written by
  `save_npy`, e.g. by `data_preprocess/convert_lits_nii_to_npy.py`);
- HDF5 datasets (`load_hdf5`), which carry no geometry of their own.

Every error is a ValueError whose message starts with the file's path.
"""

from __future__ import annotations

import json
import os
from typing import Any, Optional

import nibabel as nib
import numpy as np

from unet3d import errors

NIFTI_SUFFIXES = ('.nii.gz', '.nii')


def _first_line(error: BaseException) -> str:
  """`Type: first line`, as the libraries' errors rarely name themselves."""
  line = errors.first_line(error)
  name = type(error).__name__
  return line if line == name else f'{name}: {line}'


def _require_file(path: str) -> None:
  if not os.path.isfile(path):
    raise ValueError(f'{path}: file not found')


def spacing_of(affine: np.ndarray) -> np.ndarray:
  """Voxel size in mm along each array axis: the affine's column norms."""
  return np.linalg.norm(np.asarray(affine, np.float64)[:3, :3], axis=0)


def strip_suffix(path: str) -> str:
  """The file name without its volume suffix (`.nii.gz`, `.nii`, `.npy`...)."""
  name = os.path.basename(path)
  for suffix in NIFTI_SUFFIXES + ('.npy', '.h5', '.hdf5', '.hdf'):
    if name.endswith(suffix):
      return name[:-len(suffix)]
  return name


def _voxel_shape(shape) -> tuple[int, ...]:
  """NIfTI vector volumes are [X, Y, Z, 1, C] (time axis of 1): [X, Y, Z, C]."""
  shape = tuple(int(s) for s in shape)
  return shape[:3] + shape[4:] if len(shape) == 5 and shape[3] == 1 else shape


def check_affine(path: str, affine: np.ndarray) -> np.ndarray:
  """The 4x4 affine, or a ValueError naming the file when it is not finite
  or singular (no voxel size or orientation can be read from it)."""
  affine = np.asarray(affine, np.float64)
  if not np.isfinite(affine).all():
    raise ValueError(f'{path}: affine is not finite (NaN or inf in the '
                     'header\'s voxel-to-world matrix)')
  if np.linalg.det(affine[:3, :3]) == 0:
    raise ValueError(f'{path}: affine is singular (determinant 0: a zero '
                     'voxel size or a repeated axis)')
  return affine


def _data_bytes(img) -> int:
  """Bytes of voxel data the header claims, in Python ints (no overflow)."""
  count = 1
  for n in img.shape:
    count *= int(n)
  return count * int(img.get_data_dtype().itemsize)


def _check_data_size(path: str, img) -> None:
  """A .nii whose header claims more voxel data than the file holds stops
  here, with both sizes, before any memory is allocated."""
  if path.endswith('.gz'):
    return  # the compressed size says nothing; `_gz_shortfall` words it
  claimed = _data_bytes(img)
  offset = int(getattr(img.dataobj, 'offset', 352))
  held = max(os.path.getsize(path) - offset, 0)
  if claimed > held:
    raise ValueError(f'{path}: the header claims {claimed} bytes of voxel '
                     f'data (shape {tuple(int(n) for n in img.shape)}, '
                     f'{img.get_data_dtype()}), the file holds {held}')


def _gz_shortfall(path: str, img) -> Optional[str]:
  """For a .nii.gz that failed to load: the header's claimed voxel bytes
  against the bytes that decompress (streamed), when fewer; else None."""
  import gzip  # pylint: disable=g-import-not-at-top
  held = 0
  try:
    with gzip.open(path, 'rb') as f:
      while chunk := f.read(1 << 22):
        held += len(chunk)
  except (OSError, EOFError):
    pass  # a truncated stream: what decompressed so far
  held = max(held - int(getattr(img.dataobj, 'offset', 352)), 0)
  claimed = _data_bytes(img)
  if claimed <= held:
    return None
  return (f'{path}: the header claims {claimed} bytes of voxel data (shape '
          f'{tuple(int(n) for n in img.shape)}, {img.get_data_dtype()}), '
          f'the file decompresses to {held}')


def load_nifti(path: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Returns (array in voxel order, affine 4x4, spacing in mm per axis).

  The array has the file's dtype, or float when the header scales values;
  vector volumes come as [X, Y, Z, C].
  """
  _require_file(path)
  try:
    img = nib.load(path)
  except Exception as e:  # nibabel raises many types for corrupt files
    raise ValueError(f'{path}: cannot read NIfTI ({_first_line(e)})') from None
  affine = check_affine(path, img.affine)
  _check_data_size(path, img)
  try:
    data = np.asarray(img.dataobj)
  except Exception as e:  # truncated, or a header claiming too much
    shortfall = (path.endswith('.gz') and not isinstance(e, EOFError) and
                 _gz_shortfall(path, img))
    if shortfall:
      raise ValueError(shortfall) from None
    raise ValueError(f'{path}: cannot read NIfTI ({_first_line(e)})') from None
  spacing = np.asarray(img.header.get_zooms()[:3], np.float64)
  return data.reshape(_voxel_shape(data.shape)), affine, spacing


def nifti_geometry(path: str) -> tuple[tuple[int, ...], np.ndarray]:
  """(shape, affine) from the header alone, without reading the voxels;
  the shape as `load_nifti` returns the array."""
  _require_file(path)
  try:
    img = nib.load(path)
  except Exception as e:  # nibabel raises many types for corrupt files
    raise ValueError(f'{path}: cannot read NIfTI ({_first_line(e)})') from None
  affine = check_affine(path, img.affine)
  _check_data_size(path, img)
  return _voxel_shape(img.shape), affine


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


def sidecar_path(npy_path: str) -> str:
  """`volume-3.npy` -> `volume-3.json`: the geometry of an `.npy` volume."""
  return npy_path[:-len('.npy')] + '.json'


def _read_sidecar(npy_path: str) -> np.ndarray:
  path = sidecar_path(npy_path)
  if not os.path.isfile(path):
    raise ValueError(f'{npy_path}: no geometry sidecar {path} (write .npy '
                     'volumes with convert_lits_nii_to_npy.py, or convert '
                     'the .nii files directly)')
  try:
    with open(path) as f:
      affine = np.asarray(json.load(f)['affine'], np.float64)
  except (OSError, ValueError, KeyError, TypeError) as e:
    raise ValueError(f'{path}: cannot read the geometry sidecar '
                     f'({_first_line(e)})') from None
  if affine.shape != (4, 4):
    raise ValueError(f'{path}: affine must be 4x4, got {affine.shape}')
  return check_affine(path, affine)


def load_npy(path: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Like `load_nifti` for an `.npy` volume with its JSON sidecar."""
  _require_file(path)
  affine = _read_sidecar(path)
  try:
    data = np.load(path, allow_pickle=False)
  except Exception as e:  # truncated or not an .npy file
    raise ValueError(f'{path}: cannot read .npy ({_first_line(e)})') from None
  return data, affine, spacing_of(affine)


def npy_geometry(path: str) -> tuple[tuple[int, ...], np.ndarray]:
  _require_file(path)
  affine = _read_sidecar(path)
  try:
    shape = np.load(path, mmap_mode='r', allow_pickle=False).shape
  except Exception as e:  # truncated or not an .npy file
    raise ValueError(f'{path}: cannot read .npy ({_first_line(e)})') from None
  return tuple(int(s) for s in shape), affine


def save_npy(path: str, array: np.ndarray, affine: np.ndarray,
             extra: Optional[dict[str, Any]] = None) -> None:
  """Writes `array` to `path` and its geometry to the sidecar, atomically."""
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  affine = np.asarray(affine, np.float64)
  meta = {'affine': affine.tolist(), 'spacing': spacing_of(affine).tolist(),
          'shape': list(np.shape(array)), **(extra or {})}
  targets = [(path, lambda f: np.save(f, np.asarray(array))),
             (sidecar_path(path), lambda f: f.write(
                 json.dumps(meta, indent=1).encode()))]
  tmps = []
  try:
    for target, write in targets:
      tmp = target + '.tmp-incomplete'
      tmps.append(tmp)
      with open(tmp, 'wb') as f:
        write(f)
    for (target, _), tmp in zip(targets, tmps):
      os.replace(tmp, target)
  finally:
    for tmp in tmps:
      if os.path.exists(tmp):
        os.remove(tmp)


def _by_suffix(path: str, nifti_fn, npy_fn):
  if path.endswith(NIFTI_SUFFIXES):
    return nifti_fn(path)
  if path.endswith('.npy'):
    return npy_fn(path)
  raise ValueError(f'{path}: unknown volume format (expected .nii, .nii.gz '
                   'or .npy)')


def load_volume(path: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Loads NIfTI or `.npy` (+ sidecar) by the file's suffix."""
  return _by_suffix(path, load_nifti, load_npy)


def volume_geometry(path: str) -> tuple[tuple[int, ...], np.ndarray]:
  """(shape, affine) of a NIfTI or `.npy` volume without reading voxels."""
  return _by_suffix(path, nifti_geometry, npy_geometry)


def load_hdf5(path: str, key: str, shape_only: bool = False
             ) -> tuple[Any, dict[str, Any]]:
  """Returns (array, or its shape when `shape_only`; the dataset's attrs)."""
  import h5py  # pylint: disable=g-import-not-at-top
  _require_file(path)
  missing = None
  try:
    with h5py.File(path, 'r') as f:
      if key in f:
        dataset = f[key]
        attrs = {k: np.asarray(v).tolist() for k, v in dataset.attrs.items()}
        data = tuple(dataset.shape) if shape_only else dataset[()]
      else:
        missing = sorted(f.keys())
  except Exception as e:  # h5py raises OSError/KeyError/RuntimeError
    raise ValueError(f'{path}: cannot read HDF5 ({_first_line(e)})') from None
  if missing is not None:
    raise ValueError(f'{path}: no dataset /{key} (has {missing})')
  return data, attrs

"""Reading and writing volumes with their geometry; errors name the file.

Volumes keep nibabel's voxel-axis order and an `affine` that maps a voxel
index (i, j, k, 1) to world millimetres. Three on-disk forms are read:

- NIfTI (`.nii`, `.nii.gz`);
- `.npy` with a JSON sidecar `<stem>.json` holding the affine (written by
  `save_npy`, e.g. by `data_preprocess/convert_lits_nii_to_npy.py`);
- HDF5 datasets (`load_hdf5`), which carry no geometry of their own.

Paths may be local or on any TensorFlow filesystem (`gs://`, `ram://`):
URL paths go through `unet3d.fileio`, imported on first use, so worker
processes that read local files never import TensorFlow.

Every error is a ValueError whose message starts with the file's path.
The three forms stay in one module (a little over 450 lines) because they
share the path handling, the affine checks and that error rule.
"""

from __future__ import annotations

import contextlib
import glob as glob_lib
import gzip
import io as io_lib
import json
import os
import posixpath
from typing import Any, Iterator, Optional

import nibabel as nib
import numpy as np

from unet3d import errors

NIFTI_SUFFIXES = ('.nii.gz', '.nii')
# sizeof_hdr, the first int32 of a NIfTI-2 header, in either byte order.
_NIFTI2_MAGIC = (b'\x1c\x02\x00\x00', b'\x00\x00\x02\x1c')


def _fileio():
  """unet3d.fileio (TensorFlow), imported only when a URL path needs it."""
  from unet3d import fileio  # pylint: disable=g-import-not-at-top
  return fileio


def is_remote(path: str) -> bool:
  """True for URL paths (gs://, ram://): read through tf.io.gfile."""
  return '://' in str(path)


def isfile(path: str) -> bool:
  return _fileio().isfile(path) if is_remote(path) else os.path.isfile(path)


def isdir(path: str) -> bool:
  return _fileio().isdir(path) if is_remote(path) else os.path.isdir(path)


def listdir(path: str) -> list[str]:
  """The sorted names in a folder."""
  return _fileio().listdir(path) if is_remote(path) else sorted(
      os.listdir(path))


def glob(pattern: str) -> list[str]:
  """The sorted paths a glob pattern matches (gs:// too)."""
  if is_remote(pattern):
    return _fileio().glob(pattern)
  return sorted(glob_lib.glob(pattern))


def read_text(path: str) -> str:
  if is_remote(path):
    return _fileio().read_text(path)
  with open(path) as f:
    return f.read()


def normjoin(root: str, relative: str) -> str:
  """os.path.normpath(os.path.join(root, relative)), keeping a URL's '//'."""
  if not is_remote(root):
    return os.path.normpath(os.path.join(root, relative))
  scheme, rest = root.split('://', 1)
  return f'{scheme}://' + posixpath.normpath(posixpath.join(rest, relative))


def realpath(path: str) -> str:
  """os.path.realpath; a URL path only normalised (no symlinks there)."""
  return normjoin(path, '.') if is_remote(path) else os.path.realpath(path)


def is_inside(path: str, root: str) -> bool:
  """Whether a normalised `path` is `root` or below it."""
  if is_remote(root) or is_remote(path):
    return path == root or path.startswith(root.rstrip('/') + '/')
  return os.path.commonpath([root, path]) == root


@contextlib.contextmanager
def local_file(path: str, suffix: str = '') -> Iterator[str]:
  """Yields `path`, or for a URL path a temporary local copy of it."""
  if not is_remote(path):
    yield path
    return
  with _fileio().local_copy(path, suffix) as local:
    yield local


class _ChunkedReader(io_lib.RawIOBase):
  """A binary stream whose readinto fills the caller's buffer in 16 MiB
  reads: nibabel reads voxels straight into the array, never into a bytes
  object of the whole volume first."""

  CHUNK = 16 << 20

  def __init__(self, stream):
    super().__init__()
    self._stream = stream

  def readable(self) -> bool:
    return True

  def seekable(self) -> bool:
    return True

  def read(self, size: int = -1) -> bytes:
    return self._stream.read(size)

  def seek(self, offset: int, whence: int = 0) -> int:
    return self._stream.seek(offset, whence)

  def tell(self) -> int:
    return self._stream.tell()

  def readinto(self, buffer) -> int:
    view = memoryview(buffer).cast('B')
    filled = 0
    while filled < len(view):
      data = self._stream.read(min(self.CHUNK, len(view) - filled))
      if not data:
        break
      view[filled:filled + len(data)] = data
      filled += len(data)
    return filled


@contextlib.contextmanager
def _nifti_image(path: str) -> Iterator[nib.Nifti1Image]:
  """nibabel's lazy image of a NIfTI file, valid inside the block.

  A URL path is streamed through a GFile (.nii.gz decompressed on the fly)
  into the array: reading the voxels holds the decoded array plus about
  two 16 MiB chunks, neither the compressed file in memory nor a copy on
  local disk; the header and affine alone read only the first bytes.
  """
  if not is_remote(path):
    yield nib.load(path)
    return
  with _fileio().open_read(path) as raw:
    stream = (gzip.GzipFile(fileobj=raw, mode='rb')
              if path.endswith('.gz') else raw)
    magic = stream.read(4)
    stream.seek(0)
    klass = nib.Nifti2Image if magic in _NIFTI2_MAGIC else nib.Nifti1Image
    holder = nib.FileHolder(filename=path, fileobj=_ChunkedReader(stream))
    yield klass.from_file_map({'header': holder, 'image': holder},
                              mmap=False)


def _first_line(error: BaseException) -> str:
  """`Type: first line`, as the libraries' errors rarely name themselves."""
  line = errors.first_line(error)
  name = type(error).__name__
  return line if line == name else f'{name}: {line}'


def _require_file(path: str) -> None:
  if not isfile(path):
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
  with contextlib.ExitStack() as stack:
    img = _open_checked(path, stack)
    try:
      data = np.asarray(img.dataobj)
    except Exception as e:  # truncated, or a header claiming too much
      shortfall = (path.endswith('.gz') and not is_remote(path) and
                   not isinstance(e, EOFError) and _gz_shortfall(path, img))
      if shortfall:
        raise ValueError(shortfall) from None
      raise ValueError(f'{path}: cannot read NIfTI ({_first_line(e)})') from None
    spacing = np.asarray(img.header.get_zooms()[:3], np.float64)
    affine = np.asarray(img.affine, np.float64)
  return data.reshape(_voxel_shape(data.shape)), affine, spacing


def _open_checked(path: str, stack: contextlib.ExitStack):
  """The lazy image of `path` (entered on `stack`), its affine checked and,
  for a local .nii, its header's data size against the file's."""
  try:
    img = stack.enter_context(_nifti_image(path))
  except Exception as e:  # nibabel raises many types for corrupt files
    raise ValueError(f'{path}: cannot read NIfTI ({_first_line(e)})') from None
  check_affine(path, img.affine)
  if not is_remote(path):
    _check_data_size(path, img)
  return img


def nifti_geometry(path: str) -> tuple[tuple[int, ...], np.ndarray]:
  """(shape, affine) from the header alone, without reading the voxels;
  the shape as `load_nifti` returns the array."""
  _require_file(path)
  with contextlib.ExitStack() as stack:
    img = _open_checked(path, stack)
    return _voxel_shape(img.shape), np.asarray(img.affine, np.float64)


def nifti_reference(path: str) -> nib.Nifti1Image:
  """The image's header and affine, for writing outputs on its grid; its
  voxels are not read (and for a URL path cannot be)."""
  _require_file(path)
  try:
    with _nifti_image(path) as img:
      return img
  except Exception as e:  # nibabel raises many types for corrupt files
    raise ValueError(f'{path}: cannot read NIfTI ({_first_line(e)})') from None


def save_nifti(path: str, array: np.ndarray, affine: np.ndarray,
               header: Optional[nib.Nifti1Header] = None) -> None:
  """Writes a NIfTI atomically (temporary name, then rename); a URL path
  is written to a local temporary file and copied up."""
  if is_remote(path):
    suffix = '.nii.gz' if path.endswith('.nii.gz') else '.nii'
    with _fileio().published(path, suffix=suffix) as local:
      save_nifti(local, array, affine, header)
    return
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
  if not isfile(path):
    raise ValueError(f'{npy_path}: no geometry sidecar {path} (write .npy '
                     'volumes with convert_lits_nii_to_npy.py, or convert '
                     'the .nii files directly)')
  try:
    affine = np.asarray(json.loads(read_text(path))['affine'], np.float64)
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
    data = _load_npy_array(path)
  except Exception as e:  # truncated or not an .npy file
    raise ValueError(f'{path}: cannot read .npy ({_first_line(e)})') from None
  return data, affine, spacing_of(affine)


def _load_npy_array(path: str) -> np.ndarray:
  if not is_remote(path):
    return np.load(path, allow_pickle=False)
  with _fileio().open_read(path) as f:  # numpy reads it in chunks
    return np.load(f, allow_pickle=False)


def _npy_shape(path: str) -> tuple[int, ...]:
  """The shape from the .npy header, without reading the array."""
  if not is_remote(path):
    return np.load(path, mmap_mode='r', allow_pickle=False).shape
  with _fileio().open_read(path) as f:
    version = np.lib.format.read_magic(f)
    read = (np.lib.format.read_array_header_1_0 if version == (1, 0) else
            np.lib.format.read_array_header_2_0)
    return read(f)[0]


def npy_geometry(path: str) -> tuple[tuple[int, ...], np.ndarray]:
  _require_file(path)
  affine = _read_sidecar(path)
  try:
    shape = _npy_shape(path)
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
    with local_file(path, '.h5') as local, h5py.File(local, 'r') as f:
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

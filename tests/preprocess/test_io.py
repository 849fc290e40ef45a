"""Tests for unet3d/preprocess/io.py: headers that lie about their data and
affines that give no geometry stop with one line naming the file."""

import gzip
import struct

import numpy as np
import pytest

from unet3d.preprocess import io


def _claiming(path, shape):
  """Rewrites a saved NIfTI's header dims to `shape`, data unchanged."""
  opener = gzip.open if str(path).endswith('.gz') else open
  with opener(path, 'rb') as f:
    data = bytearray(f.read())
  struct.pack_into('<8h', data, 40, len(shape), *shape,
                   *([1] * (7 - len(shape))))
  with opener(path, 'wb') as f:
    f.write(bytes(data))


@pytest.mark.parametrize('suffix', ['.nii', '.nii.gz'])
@pytest.mark.parametrize('shape', [(4000, 4000, 4000), (9, 8, 8),
                                   (2**15 - 1, 2**15 - 1, 2**15 - 1)])
def test_a_header_claiming_more_than_the_file_names_both_sizes(
    tmp_path, suffix, shape):
  path = tmp_path / f'scan{suffix}'
  io.save_nifti(str(path), np.zeros((8, 8, 8), np.float32), np.eye(4))
  _claiming(path, shape)
  claimed = int(np.prod(shape, dtype=object)) * 4  # Python ints: no wrap
  held = 'holds' if suffix == '.nii' else 'decompresses to'
  with pytest.raises(ValueError) as info:
    io.load_nifti(str(path))
  message = str(info.value)
  assert message == (f'{path}: the header claims {claimed} bytes of voxel '
                     f'data (shape {shape}, float32), the file {held} 2048')
  if suffix == '.nii':  # the header check alone finds it, before any read
    with pytest.raises(ValueError, match='the header claims'):
      io.nifti_geometry(str(path))


def _nan(a):
  a[0, 0] = np.nan


def _inf(a):
  a[1, 3] = np.inf


def _zero_row(a):
  a[2, :3] = 0


def _zero_column(a):
  a[:3, 1] = 0


def _repeated_axis(a):
  a[:3, 2] = a[:3, 0]


AFFINES = {'nan': (_nan, 'affine is not finite'),
           'inf': (_inf, 'affine is not finite'),
           'zero_row': (_zero_row, 'affine is singular (determinant 0'),
           'zero_column': (_zero_column, 'affine is singular (determinant 0'),
           'repeated_axis': (_repeated_axis,
                             'affine is singular (determinant 0')}


@pytest.mark.parametrize('kind', sorted(AFFINES))
@pytest.mark.parametrize('suffix', ['.nii.gz', '.npy'])
def test_an_affine_without_geometry_is_one_line_naming_the_file(
    tmp_path, kind, suffix):
  spoil, problem = AFFINES[kind]
  affine = np.diag([1.0, 1.2, 2.0, 1.0])
  spoil(affine)
  path = tmp_path / f'scan{suffix}'
  if suffix == '.npy':
    io.save_npy(str(path), np.ones((8, 8, 8), np.float32), affine)
    shown = io.sidecar_path(str(path))
  else:
    # nibabel refuses to write such an affine: patch the sform in.
    io.save_nifti(str(path), np.ones((8, 8, 8), np.float32), np.eye(4))
    with gzip.open(path, 'rb') as f:
      data = bytearray(f.read())
    struct.pack_into('<2h', data, 252, 0, 1)  # qform_code 0, sform_code 1
    struct.pack_into('<12f', data, 280, *affine[:3].reshape(-1))
    with gzip.open(path, 'wb') as f:
      f.write(bytes(data))
    shown = str(path)
  for read in (io.load_volume, io.volume_geometry):
    with pytest.raises(ValueError) as info:
      read(str(path))
    assert str(info.value).startswith(f'{shown}: {problem}'), str(info.value)
    assert '\n' not in str(info.value)

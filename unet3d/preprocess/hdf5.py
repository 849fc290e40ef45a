"""pytorch-3dunet HDF5 files: `/raw` and `/label` datasets.

`/raw` is (Z, Y, X) or (C, Z, Y, X); `/label` is (Z, Y, X) class indices or
(K, Z, Y, X) binary masks (multi-label). Arrays keep the file's axis order
(Z, Y, X); HDF5 carries no orientation, so the affine is diag(spacing) with
spacing from the caller, the raw dataset's `element_size_um` attribute, or
1 mm. Numpy only: runs in worker processes.
"""

from __future__ import annotations

import functools
import os
from typing import Optional, Sequence

import numpy as np

from unet3d.preprocess import cases
from unet3d.preprocess import intensity
from unet3d.preprocess import io
from unet3d.preprocess import label_maps

SUFFIXES = ('.h5', '.hdf5', '.hdf')


def find_cases(input_path: str) -> list[cases.Case]:
  """A folder of HDF5 files, a glob pattern, or one file."""
  if io.isdir(input_path):
    paths = [os.path.join(input_path, n) for n in io.listdir(input_path)
             if n.endswith(SUFFIXES)]
  else:
    paths = io.glob(input_path)
  if not paths:
    raise ValueError(f'{input_path}: no HDF5 files found (expected '
                     f'{", ".join("*" + s for s in SUFFIXES)})')
  return [cases.Case(case_id=io.strip_suffix(p), image_files=(p,),
                     label_file=p) for p in sorted(paths)]


def _affine(path: str, attrs: dict, spacing: Optional[Sequence[float]]
           ) -> np.ndarray:
  if spacing is None and 'element_size_um' in attrs:
    spacing = np.asarray(attrs['element_size_um'], np.float64) / 1000.0
  spacing = np.ones(3) if spacing is None else np.asarray(spacing, np.float64)
  if spacing.shape != (3,) or np.any(spacing <= 0):
    raise ValueError(f'{path}: spacing must be three positive numbers (Z, '
                     f'Y, X), got {spacing.tolist()}')
  return np.diag(list(spacing) + [1.0])


def _spatial(shape: tuple[int, ...], path: str, key: str) -> tuple[int, ...]:
  if len(shape) not in (3, 4):
    raise ValueError(f'{path}: /{key} must be (Z, Y, X) or (C, Z, Y, X), '
                     f'got shape {shape}')
  return shape[-3:]


def geometry(case: cases.Case, raw_key: str,
             spacing: Optional[Sequence[float]]):
  path = case.image_files[0]
  shape, attrs = io.load_hdf5(path, raw_key, shape_only=True)
  return _spatial(shape, path, raw_key), _affine(path, attrs, spacing)


def load_case(case: cases.Case, raw_key: str, label_key: str,
              spacing: Optional[Sequence[float]], num_channels: int,
              num_classes: Optional[int]) -> cases.RawCase:
  """Image [Z, Y, X, C] float32 and labels [Z, Y, X] or [Z, Y, X, K]."""
  path = case.image_files[0]
  raw, attrs = io.load_hdf5(path, raw_key)
  spatial = _spatial(raw.shape, path, raw_key)
  image = (raw[..., None] if raw.ndim == 3 else
           np.moveaxis(raw, 0, -1)).astype(np.float32)
  if image.shape[-1] != num_channels:
    raise ValueError(f'{path}: /{raw_key} has {image.shape[-1]} channels, '
                     f'the other files {num_channels}')
  label, _ = io.load_hdf5(path, label_key)
  if _spatial(label.shape, path, label_key) != spatial:
    raise ValueError(f'{path}: /{label_key} shape {label.shape} does not '
                     f'match /{raw_key} shape {raw.shape}')
  label = label_maps.as_label(label, path)
  if label.ndim == 4:
    label_maps.check_label_values(label, (0, 1), f'{path}: /{label_key} masks')
    label = np.moveaxis(label, 0, -1)
  else:
    allowed = range(num_classes) if num_classes else range(256)
    label_maps.check_label_values(label, allowed, f'{path}: /{label_key}')
  return cases.RawCase(image, label.astype(np.uint8),
                       _affine(path, attrs, spacing))


def source(input_path: str, *, raw_key: str = 'raw',
           label_key: str = 'label',
           spacing: Optional[Sequence[float]] = None,
           class_names: Optional[Sequence[str]] = None,
           normalization: str = 'zscore') -> cases.Source:
  """The HDF5 files for `convert.convert`.

  class_names: names of classes 0..K-1 (or of the K mask channels); label
    values outside 0..K-1 are an error. None: named by the values found.
  normalization: 'zscore' per image and channel, or 'none'.
  """
  if normalization not in ('zscore', 'none'):
    raise ValueError(f'--normalization: {normalization!r} is not zscore or '
                     'none')
  found = find_cases(input_path)
  num_channels = 1
  for case in found:  # the first readable file; unreadable ones fail later
    try:
      shape, _ = io.load_hdf5(case.image_files[0], raw_key, shape_only=True)
    except ValueError:
      continue
    num_channels = shape[0] if len(shape) == 4 else 1
    break
  num_classes = len(class_names) if class_names else None
  return cases.Source(
      name=input_path, cases=tuple(found),
      load=functools.partial(load_case, raw_key=raw_key, label_key=label_key,
                             spacing=spacing, num_channels=num_channels,
                             num_classes=num_classes),
      geometry=functools.partial(geometry, raw_key=raw_key, spacing=spacing),
      modalities={str(c): f'channel_{c}' for c in range(num_channels)},
      labels=(None if not class_names else
              {str(i): n for i, n in enumerate(class_names)}),
      norms=tuple(intensity.ChannelNorm(normalization)
                  for _ in range(num_channels)),
      has_orientation=False)

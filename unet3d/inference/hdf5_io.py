"""The predict mode on pytorch-3dunet HDF5 files: `/raw` in,
`<name>_predictions.h5` out.

```
<name>.h5 /raw (Z, Y, X) or (C, Z, Y, X) ──as the HDF5 converter reads it
(unet3d.preprocess.hdf5)──▶ image [Z, Y, X, C] ──predict.segment──▶
<output_dir>/<name>_predictions.h5
  /predictions    uint8 (Z, Y, X) class indices, or (K, Z, Y, X) masks
  /probabilities  float16 (K, Z, Y, X), when predict.save_probabilities
```

The dataset is `predict.hdf5_dataset` (pytorch-3dunet's `raw`), the output
name pytorch-3dunet's predictor's (`<name>_predictions.h5`). HDF5 carries
no orientation and no affine. With `predict.preprocessing: none` the volume
goes to the model as it is. With `dataset_json` the converter's steps are
replayed on the grid diag(spacing): the spacing is the dataset's
`element_size_um` attribute (micrometres, Z, Y, X) when it has one, and
otherwise dataset.json's target spacing, so that a volume of unknown
spacing is taken as already on the model's grid (cropped and normalised,
never resampled).
"""

from __future__ import annotations

import os
from typing import Any, Mapping, Optional

import numpy as np

from unet3d import fileio
from unet3d.preprocess import dataset_json
from unet3d.preprocess import hdf5
from unet3d.preprocess import io

SUFFIXES = hdf5.SUFFIXES
PREDICTIONS_SUFFIX = '_predictions.h5'


def is_hdf5(path: str) -> bool:
  return path.lower().endswith(SUFFIXES)


def output_path(output_dir: str, input_path: str) -> str:
  """`<output_dir>/<input name without .h5>_predictions.h5`."""
  stem = os.path.splitext(os.path.basename(input_path))[0]
  return os.path.join(output_dir, stem + PREDICTIONS_SUFFIX)


def check_input(path: str, key: str, num_channels: int) -> None:
  """Shape-only check: /key is (Z, Y, X) or (C, Z, Y, X) with num_channels."""
  shape, _ = io.load_hdf5(path, key, shape_only=True)
  if len(shape) not in (3, 4):
    raise ValueError(f'{path}: /{key} must be (Z, Y, X) or (C, Z, Y, X) '
                     f'(predict.hdf5_dataset), got shape {tuple(shape)}')
  channels = shape[0] if len(shape) == 4 else 1
  if channels != num_channels:
    raise ValueError(f'{path}: /{key} has {channels} channel(s), but the '
                     f'model expects num_channels={num_channels}')


def read_volume(path: str, key: str) -> tuple[np.ndarray, dict[str, Any]]:
  """(image float32 [Z, Y, X, C], the dataset's attributes)."""
  raw, attrs = io.load_hdf5(path, key)
  image = raw[..., None] if raw.ndim == 3 else np.moveaxis(raw, 0, -1)
  return image.astype(np.float32), attrs


def grid_affine(attrs: Mapping[str, Any],
                info: Optional[Mapping[str, Any]]) -> np.ndarray:
  """diag(spacing mm, 1): `element_size_um` / 1000, else dataset.json's
  target spacing, else 1 mm (module docstring)."""
  if 'element_size_um' in attrs:
    spacing = np.asarray(attrs['element_size_um'], np.float64) / 1000.0
  else:
    plan = dataset_json.plan_from_dataset_info(info) if info else None
    spacing = np.asarray((plan and plan.target_spacing) or (1.0,) * 3,
                         np.float64)
  if spacing.shape != (3,) or np.any(spacing <= 0):
    raise ValueError(f'element_size_um: expected three positive numbers '
                     f'(Z, Y, X), got {spacing.tolist()}')
  return np.diag(list(spacing) + [1.0])


def write_prediction(path: str, labels: np.ndarray,
                     probabilities: Optional[np.ndarray],
                     attrs: Mapping[str, Any]) -> None:
  """Writes `predictions` (uint8 [Z, Y, X], or masks [Z, Y, X, K] as
  (K, Z, Y, X)) and, when given, `probabilities` float16 [Z, Y, X, K] as
  (K, Z, Y, X), atomically; `element_size_um` is copied onto both."""
  import h5py  # pylint: disable=g-import-not-at-top
  labels = labels.astype(np.uint8)
  if labels.ndim == 4:
    labels = np.moveaxis(labels, -1, 0)
  with fileio.published(path, suffix='.h5') as local:
    with h5py.File(local, 'w') as f:
      written = [f.create_dataset('predictions', data=labels,
                                  compression='gzip')]
      written[0].attrs['axis_order'] = 'ZYX' if labels.ndim == 3 else 'CZYX'
      if probabilities is not None:
        written.append(f.create_dataset(
            'probabilities', compression='gzip',
            data=np.moveaxis(probabilities.astype(np.float16), -1, 0)))
        written[1].attrs['axis_order'] = 'CZYX'
      for dataset in written:
        if 'element_size_um' in attrs:
          dataset.attrs['element_size_um'] = attrs['element_size_um']

"""A converted dataset's fingerprint, as the planner reads it from dataset.json.

The converter records the dataset (`unet3d.preprocess.dataset_json`); this
module reads the parts a plan depends on into typed values, checks them
with one-line errors naming the file and key, and hashes them, so a recipe
can say which data it was planned from. Plain Python and numpy.
"""

from __future__ import annotations

import math
import dataclasses
from dataclasses import dataclass
from typing import Any, Mapping, Optional, Sequence

import numpy as np

from unet3d import fileio
from unet3d.input import dataset_info


@dataclass(frozen=True)
class CaseFingerprint:
  """One stored case. Shapes are voxels, spacings millimetres, per array axis
  of the stored grid (canonical RAS axes when the converter reoriented)."""
  case_id: str
  split: str
  cropped_shape: tuple[int, ...]
  cropped_spacing: tuple[float, ...]
  stored_shape: tuple[int, ...]
  stored_spacing: tuple[float, ...]
  nonzero_fraction: float
  num_records: int
  # Per foreground class (mask channel for multi-label data), as strings.
  class_voxel_counts: dict[str, int]
  component_counts: dict[str, int]
  centroid_voxel: dict[str, tuple[float, ...]]
  # Voxels per axis of the box holding every labelled voxel (None: no
  # foreground, or a dataset.json from before the converters recorded it).
  foreground_extent: Optional[tuple[int, ...]] = None

  def at_spacing(self, spacing: Sequence[float]) -> 'CaseFingerprint':
    """This case as it would be stored at `spacing` (mm per axis): shapes,
    extents, centroids and voxel counts rescaled, as resampling does."""
    scale = np.asarray(self.stored_spacing, np.float64) / np.asarray(
        spacing, np.float64)
    shape = tuple(max(1, int(round(n * f)))
                  for n, f in zip(self.stored_shape, scale))
    volume = float(np.prod(scale))
    extent = (None if self.foreground_extent is None else tuple(
        max(1, int(round(n * f)))
        for n, f in zip(self.foreground_extent, scale)))
    return dataclasses.replace(
        self, stored_shape=shape,
        stored_spacing=tuple(float(s) for s in spacing),
        class_voxel_counts={k: int(round(v * volume))
                            for k, v in self.class_voxel_counts.items()},
        centroid_voxel={k: tuple(float(c * f) for c, f in zip(v, scale))
                        for k, v in self.centroid_voxel.items()},
        foreground_extent=extent)


@dataclass(frozen=True)
class Fingerprint:
  """What the planner knows of a converted dataset."""
  path: str
  sha256: str
  labels: dict[str, str]
  multi_label: bool
  modalities: dict[str, str]
  # Foreground intensity statistics per channel before normalisation.
  intensity: tuple[dict[str, float], ...]
  # dataset.json `preprocessing`: what the converter applied.
  preprocessing: dict[str, Any]
  cases: tuple[CaseFingerprint, ...]
  compressed: bool
  shards: dict[str, list[str]]

  @property
  def num_channels(self) -> int:
    return len(self.modalities)

  @property
  def num_classes(self) -> int:
    return len(self.labels)

  @property
  def reoriented(self) -> bool:
    """Array axes are the canonical RAS axes (axis 0: right-left)."""
    return self.preprocessing.get('orientation') == 'RAS'

  def training_cases(self) -> tuple[CaseFingerprint, ...]:
    """The cases of the train split (every case when none is marked)."""
    train = tuple(c for c in self.cases if c.split == 'train')
    return train or self.cases

  def stored_spacing(self) -> np.ndarray:
    """Median stored spacing per axis (mm)."""
    return np.median([c.stored_spacing for c in self.cases], axis=0)

  def stored_shape(self) -> np.ndarray:
    """Median stored shape per axis (voxels)."""
    return np.median([c.stored_shape for c in self.cases], axis=0)

  def foreground_extent_mm(self) -> tuple[np.ndarray, bool]:
    """Median extent (mm per axis) of the training cases' foreground boxes,
    and whether it is that (False: the median stored case's extent, when no
    case records a foreground box)."""
    boxes = [np.multiply(c.foreground_extent, c.stored_spacing)
             for c in self.training_cases() if c.foreground_extent]
    if boxes:
      return np.median(boxes, axis=0), True
    return np.median([np.multiply(c.stored_shape, c.stored_spacing)
                      for c in self.cases], axis=0), False

  def at_spacing(self, spacing: Sequence[float]) -> 'Fingerprint':
    """The dataset as it would be stored at `spacing` (mm per axis)."""
    return dataclasses.replace(
        self, cases=tuple(c.at_spacing(spacing) for c in self.cases))


# ----------------------------------------------------------------------------
# Checked reads: each raises _Malformed naming the key and what it expects;
# from_dataset_info adds the file and the case.
# ----------------------------------------------------------------------------


class _Malformed(ValueError):
  """A dataset.json field that is not what the converters write."""


def _describe(value: Any) -> str:
  text = repr(value)
  return text if len(text) <= 60 else text[:57] + '...'


def _expect(ok: bool, key: str, expected: str, value: Any) -> None:
  if not ok:
    raise _Malformed(f'{key} must be {expected}, got {_describe(value)}')


def _mapping(value: Any, key: str) -> Mapping[str, Any]:
  _expect(isinstance(value, Mapping), key, 'a mapping', value)
  return value


def _list(value: Any, key: str) -> list:
  _expect(isinstance(value, list), key, 'a list', value)
  return value


def _number(value: Any, key: str, low: float = -math.inf,
            high: float = math.inf) -> float:
  ok = (isinstance(value, (int, float)) and not isinstance(value, bool) and
        math.isfinite(value) and low <= value <= high)
  _expect(ok, key, 'a finite number' + (
      f' in [{low:g}, {high:g}]' if math.isfinite(low) else ''), value)
  return float(value)


def _count(value: Any, key: str, low: int = 0) -> int:
  _expect(isinstance(value, int) and not isinstance(value, bool) and
          value >= low, key, f'an integer >= {low}', value)
  return int(value)


def _index_key(key: Any, where: str) -> str:
  """A class or channel index as dataset.json writes it: '0', '1', ..."""
  _expect(isinstance(key, str) and key.isdigit(), f'{where} keys',
          'indices such as "1"', key)
  return str(int(key))


def _names(value: Any, key: str) -> dict[str, str]:
  """{index: name} with indices 0..n-1."""
  names = {_index_key(k, key): v for k, v in _mapping(value, key).items()}
  _expect(sorted(map(int, names)) == list(range(len(names))) and
          bool(names), key, 'indices 0..n-1 mapped to names', value)
  for k, v in names.items():
    _expect(isinstance(v, str), f'{key}.{k}', 'a name', v)
  return names


def _per_axis(value: Any, key: str, read) -> tuple:
  _expect(isinstance(value, list) and len(value) == 3, key,
          'a list of 3 per-axis values', value)
  return tuple(read(v, key) for v in value)


def _affine(value: Any, key: str) -> None:
  """A recorded 4x4 voxel-to-world affine: finite and invertible."""
  try:
    matrix = np.asarray(value, np.float64)
  except (TypeError, ValueError):
    matrix = None
  ok = (matrix is not None and matrix.shape == (4, 4) and
        bool(np.isfinite(matrix).all()) and
        abs(np.linalg.det(matrix[:3, :3])) > 1e-12)
  _expect(ok, key, 'a finite, invertible 4x4 matrix', value)


def _grid(entry: Mapping[str, Any], key: str) -> tuple[tuple, tuple]:
  grid = _mapping(entry[key], key)
  if grid.get('affine') is not None:
    _affine(grid['affine'], f'{key}.affine')
  shape = _per_axis(grid.get('shape'), f'{key}.shape',
                    lambda v, k: _count(v, k, 1))
  spacing = _per_axis(grid.get('spacing'), f'{key}.spacing',
                      lambda v, k: _number(v, k, 1e-6))
  return shape, spacing


_CASE_KEYS = ('case_id', 'cropped', 'stored', 'nonzero_fraction',
              'components', 'centroid_voxel')


def _case(entry: Mapping[str, Any]) -> CaseFingerprint:
  for key in _CASE_KEYS:
    if key not in entry:
      raise _Malformed(f'{key} is missing (the converters write it)')
  original = entry.get('original')
  if isinstance(original, Mapping) and original.get('affine') is not None:
    _affine(original['affine'], 'original.affine')
  cropped_shape, cropped_spacing = _grid(entry, 'cropped')
  stored_shape, stored_spacing = _grid(entry, 'stored')
  counts = _list(entry.get('class_voxel_counts') or [], 'class_voxel_counts')
  components = _mapping(entry['components'], 'components')
  centroids = _mapping(entry['centroid_voxel'], 'centroid_voxel')
  box = entry.get('foreground_box')
  extent = None
  if box is not None:
    box = _mapping(box, 'foreground_box')
    start = _per_axis(box.get('start'), 'foreground_box.start',
                      lambda v, k: _count(v, k, 0))
    stop = _per_axis(box.get('stop'), 'foreground_box.stop',
                     lambda v, k: _count(v, k, 1))
    extent = tuple(b - a for a, b in zip(start, stop))
    _expect(min(extent) > 0, 'foreground_box', 'stop > start on every axis',
            box)
  return CaseFingerprint(
      case_id=str(entry['case_id']), split=str(entry.get('split', 'train')),
      cropped_shape=cropped_shape, cropped_spacing=cropped_spacing,
      stored_shape=stored_shape, stored_spacing=stored_spacing,
      nonzero_fraction=_number(entry['nonzero_fraction'], 'nonzero_fraction',
                               0.0, 1.0),
      num_records=_count(entry.get('num_records', 1), 'num_records', 1),
      class_voxel_counts={str(k): _count(v, 'class_voxel_counts')
                          for k, v in enumerate(counts)},
      component_counts={
          _index_key(k, 'components'): _count(
              _mapping(v, f'components.{k}').get('count'),
              f'components.{k}.count') for k, v in components.items()},
      centroid_voxel={
          _index_key(k, 'centroid_voxel'): _per_axis(
              v, f'centroid_voxel.{k}', _number)
          for k, v in centroids.items()},
      foreground_extent=extent)


def _intensity(value: Any, channels: int) -> tuple[dict[str, float], ...]:
  entries = _list(value, 'intensity')
  _expect(len(entries) == channels, 'intensity',
          f'one entry per modality ({channels})', value)
  out = []
  for c, entry in enumerate(entries):
    entry = _mapping(entry, f'intensity[{c}]')
    out.append({k: _number(v, f'intensity[{c}].{k}')
                for k, v in entry.items() if v is not None})
  return tuple(out)


def _preprocessing(value: Any) -> dict[str, Any]:
  preprocessing = dict(_mapping(value, 'preprocessing'))
  norms = _list(preprocessing.get('normalization') or [],
                'preprocessing.normalization')
  for c, norm in enumerate(norms):
    _mapping(norm, f'preprocessing.normalization[{c}]')
  return preprocessing


def _shards(value: Any) -> dict[str, list[str]]:
  shards = _mapping(value or {}, 'shards')
  return {str(k): [str(f) for f in _list(v, f'shards.{k}')]
          for k, v in shards.items()}


def from_dataset_info(info: Mapping[str, Any], path: str) -> Fingerprint:
  """The fingerprint of a parsed dataset.json; one-line ValueErrors name
  `path` and the key."""
  if not isinstance(info, Mapping):
    raise ValueError(f'{path}: expected a JSON object, got '
                     f'{type(info).__name__}')
  version = info.get('fingerprint_version')
  if version != dataset_info.FINGERPRINT_VERSION:
    raise ValueError(
        f'{path}: fingerprint_version is {version!r}, expected '
        f'{dataset_info.FINGERPRINT_VERSION}; re-convert the dataset with this version of '
        'data_preprocess/ to record the fingerprint the planner reads')
  for key in ('labels', 'modalities', 'preprocessing', 'cases', 'intensity'):
    if not info.get(key):
      raise ValueError(f'{path}: no {key} (expected the dataset.json a '
                       'data_preprocess converter writes)')
  where = ''
  try:
    labels = _names(info['labels'], 'labels')
    modalities = _names(info['modalities'], 'modalities')
    intensity = _intensity(info['intensity'], len(modalities))
    preprocessing = _preprocessing(info['preprocessing'])
    shards = _shards(info.get('shards'))
    cases = []
    for i, entry in enumerate(_list(info['cases'], 'cases')):
      _mapping(entry, f'cases[{i}]')
      where = f'cases[{i}].'
      if entry.get('record_spatial_dims', 3) != 3:
        raise ValueError(f'{path}: the records are 2D slices; the planner '
                         'plans 3D recipes (convert the 3D volumes)')
      cases.append(_case(entry))
  except _Malformed as e:
    raise ValueError(f'{path}: {where}{e}') from None
  return Fingerprint(
      path=path, sha256=dataset_info.fingerprint_sha256(info),
      labels=labels, multi_label=info.get('label_type') == 'multi_label',
      modalities=modalities, intensity=intensity,
      preprocessing=preprocessing, cases=tuple(cases),
      compressed=bool(info.get('compressed', True)), shards=shards)


def read(data_dir: str) -> Fingerprint:
  """The fingerprint of the dataset.json in `data_dir` (a converter's output
  folder) or of `data_dir` itself when it names the file."""
  path = data_dir
  if not path.endswith('.json'):
    path = fileio.join(data_dir, dataset_info.DATASET_JSON)
  if not fileio.exists(path):
    raise ValueError(f'{path}: not found (--data_dir: expected the output '
                     'folder of a data_preprocess converter)')
  return from_dataset_info(dataset_info.read(path), path)

"""A converted dataset's fingerprint, as the planner reads it from dataset.json.

The converter records the dataset (`unet3d.preprocess.dataset_json`); this
module reads the parts a plan depends on into typed values, checks them
with one-line errors naming the file and key, and hashes them, so a recipe
can say which data it was planned from. Plain Python and numpy.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

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


def _case(entry: Mapping[str, Any], where: str) -> CaseFingerprint:
  try:
    stored = entry['stored']
    cropped = entry['cropped']
    classes = {str(k): int(v) for k, v in
               enumerate(entry.get('class_voxel_counts') or [])}
    return CaseFingerprint(
        case_id=str(entry['case_id']), split=str(entry.get('split', 'train')),
        cropped_shape=tuple(int(s) for s in cropped['shape']),
        cropped_spacing=tuple(float(s) for s in cropped['spacing']),
        stored_shape=tuple(int(s) for s in stored['shape']),
        stored_spacing=tuple(float(s) for s in stored['spacing']),
        nonzero_fraction=float(entry['nonzero_fraction']),
        num_records=int(entry.get('num_records', 1)),
        class_voxel_counts=classes,
        component_counts={str(k): int(v['count'])
                          for k, v in entry['components'].items()},
        centroid_voxel={str(k): tuple(float(x) for x in v)
                        for k, v in entry['centroid_voxel'].items()})
  except KeyError as e:
    raise ValueError(f'{where} has no key {e}') from None
  except (TypeError, ValueError, AttributeError) as e:
    raise ValueError(f'{where} is malformed ({e})') from None


def from_dataset_info(info: Mapping[str, Any], path: str) -> Fingerprint:
  """The fingerprint of a parsed dataset.json; one-line ValueErrors name
  `path` and the key."""
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
  if any(c.get('record_spatial_dims', 3) != 3 for c in info['cases']):
    raise ValueError(f'{path}: the records are 2D slices; the planner plans '
                     '3D recipes (convert the 3D volumes)')
  cases = tuple(_case(c, f"{path}: cases[{i}]")
                for i, c in enumerate(info['cases']))
  if len(info['intensity']) != len(info['modalities']):
    raise ValueError(f"{path}: intensity has {len(info['intensity'])} "
                     f"channels, modalities {len(info['modalities'])}")
  return Fingerprint(
      path=path, sha256=dataset_info.fingerprint_sha256(info),
      labels={str(k): str(v) for k, v in info['labels'].items()},
      multi_label=info.get('label_type') == 'multi_label',
      modalities={str(k): str(v) for k, v in info['modalities'].items()},
      intensity=tuple(dict(c) for c in info['intensity']),
      preprocessing=dict(info['preprocessing']),
      cases=cases, compressed=bool(info.get('compressed', True)),
      shards={k: list(v) for k, v in (info.get('shards') or {}).items()})


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

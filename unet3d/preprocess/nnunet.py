"""nnU-Net raw datasets: v2 `DatasetXXX_Name` and v1 `TaskXXX_Name` folders.

Both hold `dataset.json`, `imagesTr/` and `labelsTr/`, with one image file
per channel: `imagesTr/<case>_0000<file_ending>`, `_0001`, ... and the label
`labelsTr/<case><file_ending>`.

  v2  dataset.json has `channel_names` {"0": "CT"}, `labels` {name: value},
      `numTraining` and `file_ending`, and no case list: cases are found by
      listing imagesTr/. A `labels` value that is a list (BraTS:
      "whole tumor": [1, 2, 3]) makes the dataset region-based: each
      non-background entry becomes one binary mask (sigmoid training), and
      `regions_class_order` is checked and recorded (`labels_from_regions`
      turns masks back into nnU-Net's label map).
  v1  dataset.json is the Decathlon's (`modality`, `labels` {"0": name},
      `training` [{"image": "./imagesTr/case.nii.gz", ...}]) while the files
      are `case_0000.nii.gz`, ... (an unconverted 4D `case.nii.gz` is read
      as it is).

Channel names pick the normalisation as nnU-Net does (case-insensitively):
"CT" -> CT clip and dataset z-score, "noNorm" -> none, "zscore" and any
other name -> per-image z-score. imagesTs/ is not converted: predict reads
it directly. Numpy only: runs in worker processes.
"""

from __future__ import annotations

import functools
import os
import re
from typing import Any, Optional, Sequence

import numpy as np

from unet3d.preprocess import cases
from unet3d.preprocess import decathlon
from unet3d.preprocess import intensity
from unet3d.preprocess import io
from unet3d.preprocess import label_maps

FILE_ENDINGS = ('.nii.gz', '.nii')
# `<case>_<XXXX>`: a channel file's name without its file ending.
CHANNEL_NAME = re.compile(r'^(?P<case>.+)_(?P<channel>\d{4})$')
# nnU-Net channel names (casefolded) whose normalisation we have no
# equivalent for.
UNSUPPORTED_NORMS = ('rescale_to_0_1', 'rgb_to_0_1')


def read_meta(dataset_dir: str) -> tuple[str, dict[str, Any]]:
  """(path, content) of the folder's dataset.json."""
  return decathlon.read_dataset_json(
      dataset_dir, 'an nnU-Net raw dataset folder (DatasetXXX_Name or '
      'TaskXXX_Name)')


def version(meta: dict[str, Any], path: str) -> int:
  """2 for `channel_names` (nnU-Net v2), 1 for `modality` (v1 / MSD)."""
  if 'channel_names' in meta:
    return 2
  if 'modality' in meta:
    return 1
  raise ValueError(f'{path}: neither "channel_names" (nnU-Net v2) nor '
                   '"modality" (v1) found')


def file_ending(meta: dict[str, Any], path: str) -> str:
  """v2's `file_ending`, when NIfTI; a one-line error names other endings."""
  ending = meta.get('file_ending')
  if not isinstance(ending, str) or not ending:
    raise ValueError(f'{path}: "file_ending" missing (expected e.g. '
                     '".nii.gz")')
  if ending not in FILE_ENDINGS:
    raise ValueError(f'{path}: file_ending {ending!r} is not supported '
                     '(expected .nii.gz or .nii; convert the images to NIfTI)')
  return ending


def channel_norm(name: str, nonzero_mask: Optional[bool] = None,
                 ct_window: Optional[Sequence[float]] = None
                ) -> intensity.ChannelNorm:
  """nnU-Net's rule: a channel named "CT" (any case) gets CT normalisation,
  "noNorm" none, anything else a per-image z-score (within the nonzero
  mask when `nonzero_mask`; None: decided from the dataset by the
  converter)."""
  key = name.casefold()
  if key == 'ct':
    return intensity.ChannelNorm(
        'ct', window=None if ct_window is None else tuple(ct_window))
  if key == 'nonorm':
    return intensity.ChannelNorm('none')
  if key in UNSUPPORTED_NORMS:
    raise ValueError(f'channel_names: {name!r} normalisation is not '
                     'supported (expected CT, noNorm, zscore or a modality '
                     'name, which gets a z-score)')
  return intensity.ChannelNorm('zscore', nonzero_mask=nonzero_mask)


def parse_labels(meta: dict[str, Any], path: str
                ) -> tuple[dict[str, str], Optional[dict[str, tuple[int, ...]]]]:
  """(label names {"0": name}, regions {name: label values} or None).

  v2 `labels` map names to values, or to lists of values (regions); v1
  `labels` map "0" to names. Class values must number 0..K-1.
  """
  labels = meta.get('labels')
  if not isinstance(labels, dict) or not labels:
    raise ValueError(f'{path}: "labels" must be a non-empty object')
  if not any(isinstance(v, (list, tuple)) for v in labels.values()):
    return decathlon.names_by_value(meta, 'labels', path), None
  regions = {}
  for name, value in labels.items():
    values = value if isinstance(value, (list, tuple)) else [value]
    if not values or not all(isinstance(v, int) and not isinstance(v, bool)
                              and v >= 0 for v in values):
      raise ValueError(f'{path}: labels[{name!r}]: expected a label value '
                       f'or a list of them, got {value!r}')
    regions[str(name)] = tuple(sorted(set(values)))
  background = [n for n, v in regions.items() if v == (0,)]
  if len(background) != 1:
    raise ValueError(f'{path}: "labels" must name one background 0 beside '
                     'the regions')
  del regions[background[0]]
  if any(0 in v for v in regions.values()):
    raise ValueError(f'{path}: a region may not contain background 0')
  return {str(i): n for i, n in enumerate(regions)}, regions


def regions_class_order(meta: dict[str, Any], num_regions: int,
                        path: str) -> Optional[list[int]]:
  """v2's `regions_class_order` (one label value per region), or None."""
  order = meta.get('regions_class_order')
  if order is None:
    return None
  if (not isinstance(order, list) or len(order) != num_regions or
      not all(isinstance(v, int) for v in order)):
    raise ValueError(f'{path}: regions_class_order must list {num_regions} '
                     f'label values (one per region), got {order!r}')
  return order


def labels_from_regions(masks: np.ndarray, order: Sequence[int]
                       ) -> np.ndarray:
  """[X, Y, Z, R] region masks -> uint8 [X, Y, Z] labels as nnU-Net makes
  them: region r's voxels get order[r], later regions overwriting earlier."""
  labels = np.zeros(masks.shape[:-1], np.uint8)
  for r, value in enumerate(order):
    labels[masks[..., r] > 0] = value
  return labels


def _inside(dataset_dir: str, relative: str, path: str,
            allow_outside: bool) -> str:
  """dataset_dir/relative, refused when a symlink leads out of the folder."""
  return decathlon._entry_path(dataset_dir, relative, relative, path,  # pylint: disable=protected-access
                               allow_outside)


def _list_v2(dataset_dir: str, ending: str, num_channels: int, path: str,
             allow_outside: bool) -> list[cases.Case]:
  """Cases from the names in imagesTr/: `<case>_<XXXX><ending>`."""
  images_dir = os.path.join(dataset_dir, 'imagesTr')
  if not io.isdir(images_dir):
    raise ValueError(f'{dataset_dir}: no imagesTr/ folder')
  channels: dict[str, set[int]] = {}
  for name in io.listdir(images_dir):
    if not name.endswith(ending) or name.startswith('.'):
      continue
    match = CHANNEL_NAME.match(name[:-len(ending)])
    if match is None:
      raise ValueError(f'{os.path.join(images_dir, name)}: expected '
                       f'<case>_<XXXX>{ending} (a 4-digit channel index)')
    channel = int(match['channel'])
    if channel >= num_channels:
      raise ValueError(f'{os.path.join(images_dir, name)}: channel {channel}, '
                       f'but {path} lists {num_channels} channel_names')
    channels.setdefault(match['case'], set()).add(channel)
  if not channels:
    raise ValueError(f'{images_dir}: no <case>_0000{ending} files')
  found = []
  for case_id in sorted(channels):
    images = tuple(_inside(dataset_dir, f'imagesTr/{case_id}_{c:04d}{ending}',
                           path, allow_outside) for c in range(num_channels))
    found.append(cases.Case(
        case_id=case_id, image_files=images,
        label_file=_inside(dataset_dir, f'labelsTr/{case_id}{ending}', path,
                           allow_outside),
        files_root=dataset_dir))
  return found


def _channel_files(image: str, num_channels: int) -> tuple[str, ...]:
  """v1: `./imagesTr/case.nii.gz` is stored as case_0000.nii.gz, ...; an
  unconverted (MSD) file is read as it is."""
  ending = next((e for e in FILE_ENDINGS if image.endswith(e)), None)
  if ending is None:
    raise ValueError(f'{image}: file ending is not supported (expected '
                     '.nii.gz or .nii)')
  stem = image[:-len(ending)]
  files = tuple(f'{stem}_{c:04d}{ending}' for c in range(num_channels))
  if not io.isfile(files[0]) and io.isfile(image):
    return (image,)
  return files


def _list_v1(dataset_dir: str, num_channels: int, allow_outside: bool
            ) -> list[cases.Case]:
  """Cases from the `training` list, with nnU-Net v1's channel files."""
  _, _, listed = decathlon.read_task(dataset_dir, allow_outside)
  path = os.path.join(dataset_dir, 'dataset.json')
  found = []
  for c in listed:
    files = _channel_files(c.image_files[0], num_channels)
    if not allow_outside:  # the channel files' symlinks too
      files = tuple(_inside(dataset_dir, os.path.relpath(f, dataset_dir),
                            path, False) for f in files)
    found.append(cases.Case(case_id=c.case_id, image_files=files,
                            label_file=c.label_file, files_root=dataset_dir))
  return found


def read_dataset(dataset_dir: str, allow_outside_paths: bool = False
                ) -> dict[str, Any]:
  """What the folder holds: {'version', 'modalities' {"0": name},
  'labels' {"0": name}, 'regions' {name: values} or None,
  'regions_class_order', 'cases'}."""
  path, meta = read_meta(dataset_dir)
  v = version(meta, path)
  modalities = decathlon.names_by_value(
      meta, 'channel_names' if v == 2 else 'modality', path)
  labels, regions = parse_labels(meta, path)
  if v == 2:
    found = _list_v2(dataset_dir, file_ending(meta, path), len(modalities),
                     path, allow_outside_paths)
    expected = meta.get('numTraining')
    if isinstance(expected, int) and expected != len(found):
      raise ValueError(f'{path}: numTraining is {expected}, but imagesTr/ '
                       f'holds {len(found)} cases')
  else:
    found = _list_v1(dataset_dir, len(modalities), allow_outside_paths)
  return {'version': v, 'modalities': modalities, 'labels': labels,
          'regions': regions,
          'regions_class_order': (None if regions is None else
                                  regions_class_order(meta, len(regions),
                                                      path)),
          'cases': found}


def load_case(case: cases.Case, label_values: Sequence[int],
              regions: Optional[Sequence[Sequence[int]]] = None,
              multi_label: bool = False) -> cases.RawCase:
  """Image [X, Y, Z, C] from the channel files; labels checked against
  dataset.json, as region masks [X, Y, Z, R] when `regions`, as class masks
  when multi_label, else class indices."""
  missing = [f for f in case.image_files if not io.isfile(f)]
  if missing:
    raise ValueError(f'{missing[0]}: channel file missing for case '
                     f'{case.case_id} (expected {len(case.image_files)} '
                     'channel files _0000..)')
  image, affine = cases.read_images(case.image_files)
  label = cases.read_label(case.label_file, image, affine,
                           case.image_files[0])
  label = label_maps.remap_labels(label, {v: v for v in label_values},
                                  case.label_file)
  if regions is not None:
    label = np.stack([np.isin(label, r) for r in regions],
                     axis=-1).astype(np.uint8)
  elif multi_label:
    label = decathlon.masks_from_labels(label, max(label_values) + 1)
  return cases.RawCase(image, label, affine)


def source(dataset_dir: str, *, nonzero_mask: Optional[bool] = None,
           ct_window: Optional[Sequence[float]] = None,
           multi_label: bool = False,
           allow_outside_paths: bool = False) -> cases.Source:
  """The dataset for `convert.convert`.

  nonzero_mask: z-score channels within the nonzero mask; None: decided
    from the dataset by the converter, as nnU-Net does
    (`intensity.zscore_within_nonzero_mask`).
  ct_window: clip CT channels to this window instead of the foreground
    [0.5, 99.5] percentiles.
  multi_label: store labels 1..K-1 as K-1 binary masks (region datasets
    always store one mask per region).
  allow_outside_paths: accept image or label files (symlinks, v1 `training`
    paths) outside dataset_dir.
  """
  found = read_dataset(dataset_dir, allow_outside_paths)
  modalities, labels, regions = (found['modalities'], found['labels'],
                                 found['regions'])
  norms = tuple(channel_norm(modalities[str(c)], nonzero_mask, ct_window)
                for c in range(len(modalities)))
  if regions is not None:
    values = sorted({0, *(v for r in regions.values() for v in r)})
  else:
    values = sorted(int(k) for k in labels)
    if multi_label:
      if len(labels) < 2:
        raise ValueError('--multi_label: needs at least one foreground label')
      labels = {str(int(k) - 1): n for k, n in labels.items() if k != '0'}
  description = {'nnunet_version': found['version']}
  if regions is not None:
    description['regions'] = {n: list(v) for n, v in regions.items()}
    description['regions_class_order'] = found['regions_class_order']
  return cases.Source(
      name=dataset_dir, cases=tuple(found['cases']),
      load=functools.partial(
          load_case, label_values=values,
          regions=None if regions is None else tuple(regions.values()),
          multi_label=multi_label),
      geometry=cases.file_geometry, modalities=modalities, labels=labels,
      norms=norms, description=description)

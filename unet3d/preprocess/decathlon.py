"""Medical Segmentation Decathlon task folders.

A task folder holds `dataset.json` (modalities, labels and the `training`
list of {"image": "./imagesTr/x.nii.gz", "label": "./labelsTr/x.nii.gz"}),
`imagesTr/` and `labelsTr/`. 4D images (several modalities) become
channels. Numpy only: runs in worker processes.
"""

from __future__ import annotations

import functools
import json
import os
from typing import Any, Optional, Sequence

from unet3d.preprocess import cases
from unet3d.preprocess import io
from unet3d.preprocess import preprocessing as pp


def _names(meta: dict[str, Any], key: str, path: str) -> dict[str, str]:
  """{"0": name} from dataset.json; accepts nnU-Net v2's {name: 0} too."""
  values = meta.get(key)
  if not isinstance(values, dict) or not values:
    raise ValueError(f'{path}: "{key}" must be a non-empty object like '
                     '{"0": "..."}')
  try:
    if all(isinstance(v, int) for v in values.values()):
      out = {str(v): str(k) for k, v in values.items()}
    else:
      out = {str(int(k)): str(v) for k, v in values.items()}
  except ValueError:
    raise ValueError(f'{path}: "{key}" keys must be integers, got '
                     f'{list(values)}') from None
  if sorted(int(k) for k in out) != list(range(len(out))):
    raise ValueError(f'{path}: "{key}" must number 0..{len(out) - 1}, got '
                     f'{sorted(int(k) for k in out)}')
  return out


def read_task(task_dir: str) -> tuple[dict[str, str], dict[str, str],
                                      list[cases.Case]]:
  """(modalities, labels, cases) of a task folder."""
  if not os.path.isdir(task_dir):
    raise ValueError(f'{task_dir}: not a folder (expected a Decathlon task '
                     'folder)')
  path = os.path.join(task_dir, 'dataset.json')
  if not os.path.isfile(path):
    raise ValueError(f'{task_dir}: no dataset.json (expected a Medical '
                     'Segmentation Decathlon task folder with dataset.json, '
                     'imagesTr/ and labelsTr/)')
  try:
    with open(path) as f:
      meta = json.load(f)
  except (OSError, ValueError) as e:
    raise ValueError(f'{path}: cannot read ({e})') from None
  modalities = _names(meta, 'modality' if 'modality' in meta else
                      'channel_names', path)
  labels = _names(meta, 'labels', path)
  training = meta.get('training')
  if not isinstance(training, list) or not training:
    raise ValueError(f'{path}: no "training" cases listed')
  found = []
  for entry in training:
    if not isinstance(entry, dict) or 'image' not in entry:
      raise ValueError(f'{path}: a "training" entry has no "image": {entry}')
    image = os.path.normpath(os.path.join(task_dir, entry['image']))
    label = entry.get('label')
    found.append(cases.Case(
        case_id=io.strip_suffix(image), image_files=(image,),
        label_file=(None if label is None else
                    os.path.normpath(os.path.join(task_dir, label)))))
  return modalities, labels, found


def load_case(case: cases.Case, num_channels: int,
              label_values: Sequence[int]) -> cases.RawCase:
  """Image [X, Y, Z, C] and labels checked against dataset.json."""
  image, affine = cases.read_images(case.image_files)
  if image.shape[-1] != num_channels:
    raise ValueError(f'{case.image_files[0]}: {image.shape[-1]} channels, '
                     f'but dataset.json lists {num_channels} modalities')
  if case.label_file is None:
    raise ValueError(f'{case.image_files[0]}: no label file listed in '
                     'dataset.json')
  label = cases.read_label(case.label_file, image, affine,
                           case.image_files[0])
  label = pp.remap_labels(label, {v: v for v in label_values},
                          case.label_file)
  return cases.RawCase(image, label, affine)


def source(task_dir: str, *, nonzero_mask: bool = False,
           ct_window: Optional[Sequence[float]] = None) -> cases.Source:
  """The task for `convert.convert`. CT channels: clip (foreground
  percentiles or `ct_window`) and dataset z-score; other channels:
  per-image z-score (within the nonzero mask when `nonzero_mask`)."""
  modalities, labels, found = read_task(task_dir)
  norms = []
  for c in range(len(modalities)):
    if modalities[str(c)].upper() == 'CT':
      norms.append(pp.ChannelNorm(
          'ct', window=None if ct_window is None else tuple(ct_window)))
    else:
      norms.append(pp.ChannelNorm('zscore', nonzero_mask=nonzero_mask))
  return cases.Source(
      name=task_dir, cases=tuple(found),
      load=functools.partial(load_case, num_channels=len(modalities),
                             label_values=tuple(int(k) for k in labels)),
      geometry=cases.file_geometry, modalities=modalities, labels=labels,
      norms=tuple(norms))

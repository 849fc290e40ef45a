"""Medical Segmentation Decathlon task folders.

A task folder holds `dataset.json` (modalities, labels and the `training`
list of {"image": "./imagesTr/x.nii.gz", "label": "./labelsTr/x.nii.gz"}),
`imagesTr/` and `labelsTr/`. 4D images (several modalities) become
channels; `modalities` keeps some of them, picked by their dataset.json
names (Intel's 3D U-Net trains on FLAIR alone). `label_map` merges labels
(e.g. {1: 1, 2: 1, 3: 1}: whole tumour), and `multi_label` stores the
foreground classes as binary masks for sigmoid models. Numpy only: runs in
worker processes.
"""

from __future__ import annotations

import functools
import json
import os
from typing import Any, Mapping, Optional, Sequence

import numpy as np

from unet3d.preprocess import cases
from unet3d.preprocess import intensity
from unet3d.preprocess import io
from unet3d.preprocess import label_maps


def names_by_value(meta: dict[str, Any], key: str, path: str
                   ) -> dict[str, str]:
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


def _entry_path(task_dir: str, value: Any, where: str, path: str,
                allow_outside: bool) -> str:
  """A `training` entry's file, joined to task_dir; a ValueError naming the
  dataset.json, the entry and the path unless it is a relative path that
  stays inside task_dir (after symlinks), or allow_outside."""
  shown = repr(value) if len(repr(value)) <= 80 else repr(value)[:77] + '...'
  if not isinstance(value, str) or not value or '\0' in value:
    raise ValueError(f'{path}: {where}: expected a file path, got {shown}')
  joined = io.normjoin(task_dir, value)
  if allow_outside:
    return joined
  root = io.realpath(task_dir)
  real = io.realpath(joined)
  if os.path.isabs(value) or not io.is_inside(real, root):
    raise ValueError(f'{path}: {where}: {shown} is outside the task folder '
                     '(expected a path inside it, e.g. ./imagesTr/x.nii.gz; '
                     '--allow_outside_paths accepts it)')
  return joined


def read_dataset_json(folder: str, kind: str) -> tuple[str, dict[str, Any]]:
  """(path, content) of `folder/dataset.json`; the errors name the folder
  and say what it should be (`kind`, e.g. 'a ... task folder')."""
  if not io.isdir(folder):
    raise ValueError(f'{folder}: not a folder (expected {kind})')
  path = os.path.join(folder, 'dataset.json')
  if not io.isfile(path):
    raise ValueError(f'{folder}: no dataset.json (expected {kind} with '
                     'dataset.json, imagesTr/ and labelsTr/)')
  try:
    meta = json.loads(io.read_text(path))
  except (OSError, ValueError) as e:
    raise ValueError(f'{path}: cannot read ({e})') from None
  if not isinstance(meta, dict):
    raise ValueError(f'{path}: expected a JSON object')
  return path, meta


def read_task(task_dir: str, allow_outside_paths: bool = False
             ) -> tuple[dict[str, str], dict[str, str], list[cases.Case]]:
  """(modalities, labels, cases) of a task folder. Its `training` files
  must lie inside it (after symlinks) unless allow_outside_paths."""
  path, meta = read_dataset_json(
      task_dir, 'a Medical Segmentation Decathlon task folder')
  modalities = names_by_value(meta, 'modality' if 'modality' in meta else
                      'channel_names', path)
  labels = names_by_value(meta, 'labels', path)
  training = meta.get('training')
  if not isinstance(training, list) or not training:
    raise ValueError(f'{path}: no "training" cases listed')
  found = []
  for i, entry in enumerate(training):
    if not isinstance(entry, dict) or 'image' not in entry:
      raise ValueError(f'{path}: training[{i}] has no "image"')
    image = _entry_path(task_dir, entry['image'], f'training[{i}].image',
                        path, allow_outside_paths)
    label = entry.get('label')
    found.append(cases.Case(
        case_id=io.strip_suffix(image), image_files=(image,),
        label_file=(None if label is None else _entry_path(
            task_dir, label, f'training[{i}].label', path,
            allow_outside_paths)),
        files_root=task_dir))
  return modalities, labels, found


def select_channels(modalities: dict[str, str], wanted: Sequence[str],
                    path: str) -> list[int]:
  """Channel indices of `wanted` names (case-insensitive) or indices.

  Raises a ValueError naming --modalities and the task's names."""
  by_name = {name.lower(): int(k) for k, name in modalities.items()}
  chosen = []
  for item in wanted:
    item = str(item).strip()
    if item.lower() in by_name:
      chosen.append(by_name[item.lower()])
    elif item.isdigit() and item in modalities:
      chosen.append(int(item))
    else:
      shown = ', '.join(f'{k}={v}' for k, v in sorted(modalities.items()))
      raise ValueError(f'--modalities: {item!r} is not a modality of {path} '
                       f'({shown})')
  if len(set(chosen)) != len(chosen) or not chosen:
    raise ValueError(f'--modalities: expected distinct channels, got '
                     f'{list(wanted)}')
  return chosen


def merged_labels(labels: dict[str, str], label_map: Mapping[int, int],
                  names: Optional[Sequence[str]] = None
                 ) -> tuple[dict[int, int], dict[str, str]]:
  """(old -> new for every label, new label names).

  Labels not in `label_map` keep their value. The new values must number
  0..K-1 with 0 background. A new class takes the names of the labels
  merged into it joined by '+', unless `names` gives the K names.
  """
  old_values = sorted(int(k) for k in labels)
  unknown = sorted(set(label_map) - set(old_values))
  if unknown:
    raise ValueError(f'--label_map: labels {unknown} are not in dataset.json '
                     f'(its labels are {old_values})')
  mapping = {v: int(label_map.get(v, v)) for v in old_values}
  new_values = sorted(set(mapping.values()))
  if new_values != list(range(len(new_values))) or mapping[0] != 0:
    raise ValueError(f'--label_map: the new labels must be 0..K-1 with 0 '
                     f'kept for background, got {new_values} from {mapping}')
  if names is not None:
    if len(names) != len(new_values):
      raise ValueError(f'--label_names: expected {len(new_values)} names for '
                       f'labels {new_values}, got {list(names)}')
    new_names = {str(v): str(n) for v, n in zip(new_values, names)}
  else:
    new_names = {str(v): '+'.join(labels[str(o)] for o in old_values
                                  if mapping[o] == v) for v in new_values}
  return mapping, new_names


def masks_from_labels(label: np.ndarray, num_classes: int) -> np.ndarray:
  """[X, Y, Z] labels 0..K-1 -> [X, Y, Z, K-1] uint8 foreground masks."""
  return np.stack([label == k for k in range(1, num_classes)],
                  axis=-1).astype(np.uint8)


def load_case(case: cases.Case, num_channels: int,
              label_map: Mapping[int, int],
              channels: Optional[Sequence[int]] = None,
              multi_label: bool = False) -> cases.RawCase:
  """Image [X, Y, Z, C] (the chosen channels) and labels checked against
  dataset.json, mapped by label_map (as masks when multi_label)."""
  image, affine = cases.read_images(case.image_files)
  if image.shape[-1] != num_channels:
    raise ValueError(f'{case.image_files[0]}: {image.shape[-1]} channels, '
                     f'but dataset.json lists {num_channels} modalities')
  if channels is not None:
    image = image[..., list(channels)]
  if case.label_file is None:
    raise ValueError(f'{case.image_files[0]}: no label file listed in '
                     'dataset.json')
  label = cases.read_label(case.label_file, image, affine,
                           case.image_files[0])
  label = label_maps.remap_labels(label, label_map, case.label_file)
  if multi_label:
    label = masks_from_labels(label, max(label_map.values()) + 1)
  return cases.RawCase(image, label, affine)


def source(task_dir: str, *, nonzero_mask: Optional[bool] = None,
           ct_window: Optional[Sequence[float]] = None,
           modalities: Optional[Sequence[str]] = None,
           label_map: Optional[Mapping[int, int]] = None,
           label_names: Optional[Sequence[str]] = None,
           multi_label: bool = False,
           allow_outside_paths: bool = False) -> cases.Source:
  """The task for `convert.convert`. CT channels: clip (foreground
  percentiles or `ct_window`) and dataset z-score; other channels:
  per-image z-score, within the nonzero mask when `nonzero_mask`; None:
  decided from the dataset by the converter
  (`intensity.zscore_within_nonzero_mask`).

  modalities: keep only these channels (dataset.json names or indices),
    in this order.
  label_map: {old: new} label merges; other labels keep their value.
  label_names: names of the new labels 0..K-1.
  multi_label: store labels 1..K-1 as K-1 binary masks (sigmoid models).
  allow_outside_paths: accept dataset.json files outside task_dir.
  """
  all_modalities, labels, found = read_task(task_dir, allow_outside_paths)
  path = os.path.join(task_dir, 'dataset.json')
  channels = (None if not modalities else
              select_channels(all_modalities, modalities, path))
  kept = {str(i): all_modalities[str(c)] for i, c in enumerate(
      channels if channels is not None else range(len(all_modalities)))}
  mapping, new_labels = merged_labels(labels, label_map or {}, label_names)
  if multi_label:
    if len(new_labels) < 2:
      raise ValueError('--multi_label: needs at least one foreground label')
    new_labels = {str(int(k) - 1): v for k, v in new_labels.items()
                  if k != '0'}
  norms = []
  for c in range(len(kept)):
    if intensity.is_ct_modality(kept[str(c)]):
      norms.append(intensity.ChannelNorm(
          'ct', window=None if ct_window is None else tuple(ct_window)))
    else:
      norms.append(intensity.ChannelNorm('zscore', nonzero_mask=nonzero_mask))
  description = {}
  if channels is not None:
    description['input_channels'] = channels
  if label_map:
    description['label_map'] = {str(k): v for k, v in mapping.items()}
  return cases.Source(
      name=task_dir, cases=tuple(found),
      load=functools.partial(load_case, num_channels=len(all_modalities),
                             label_map=mapping, channels=channels,
                             multi_label=multi_label),
      geometry=cases.file_geometry, modalities=kept, labels=new_labels,
      norms=tuple(norms), description=description or None)

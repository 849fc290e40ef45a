"""A converted dataset -> the same records at another spacing.

The planner's coarser-spacing recipes train on these (nnU-Net's
low-resolution data, chosen for a time budget): every record of every shard
is resampled from its stored grid to the target spacing with the
converter's interpolation (the recorded spline order for images, one-hot
linear labels), each case's fingerprint entry (stored grid, class voxel
counts, components, centroids, foreground box) is recomputed on the new
grid, and dataset.json records the new spacing under
`preprocessing.resample`. Predict then replays the converter's steps
straight to that spacing and maps its output back onto the input's grid.

Images are resampled after normalisation here, where the converter
resamples before it; a linear interpolation keeps a z-score's mean and
scale, so the records differ from a re-conversion by interpolation error
only. The output is staged and renamed, like a conversion.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import re
from typing import Any, Callable, Optional, Sequence

import numpy as np
import tensorflow as tf

from unet3d import errors
from unet3d import fileio
from unet3d.input import dataset_info
from unet3d.input import schema
from unet3d.input import splits as splits_lib
from unet3d.preprocess import cases
from unet3d.preprocess import dataset_json
from unet3d.preprocess import label_maps
from unet3d.preprocess import resample
from unet3d.preprocess import runner
from unet3d.preprocess import spatial


def _image_order(info: dict[str, Any], path: str) -> int:
  match = re.fullmatch(r'spline order (\d)', str(
      info['preprocessing'].get('image_interpolation', 'spline order 3')))
  if match is None:
    raise ValueError(f'{path}: preprocessing.image_interpolation is not '
                     "'spline order N'")
  return int(match.group(1))


def _read_shard(path: str, compressed: bool) -> list[bytes]:
  """The shard's records; an unreadable shard is one line naming it."""
  try:
    return schema.read_records(path, compressed)
  except tf.errors.OpError as e:
    raise ValueError(f'{path}: cannot read the records '
                     f'({errors.first_line(e)}); re-convert the dataset'
                     ) from None


def regrid_volume(volume: schema.Volume, spacing: Sequence[float],
                  image_order: int = 3) -> schema.Volume:
  """One stored record on the grid of `spacing` (mm per axis)."""
  grid = resample.resample_grid(volume.image.shape, volume.spacing, spacing)
  if grid.is_identity() and grid.shape == volume.image.shape[:3]:
    return volume
  image = resample.resample_image(volume.image, grid, image_order)
  label = (None if volume.label is None else
           resample.resample_label(volume.label, grid, 'linear'))
  affine = resample.resampled_affine(volume.affine, grid)
  return schema.Volume(image=image.astype(volume.image.dtype), label=label,
                       spacing=np.asarray(spacing, np.float64), affine=affine,
                       case_id=volume.case_id,
                       channel_mean=volume.channel_mean,
                       channel_std=volume.channel_std)


def _case_entry(entry: dict[str, Any], volume: schema.Volume
               ) -> dict[str, Any]:
  """The case's dataset.json entry with its stored-grid keys recomputed."""
  entry = copy.deepcopy(entry)
  for key in ('foreground_box', 'components', 'centroid_voxel'):
    entry.pop(key, None)
  entry['stored'] = cases.grid_entry(volume.image.shape, volume.affine)
  counts = ([] if volume.label is None else
            label_maps.class_voxel_counts(volume.label, 0))
  entry['class_voxel_counts'] = counts
  entry.update(cases.label_shapes(volume.label, counts))
  return entry


# A record -> the (split, record) pairs written in its place.
Assign = Callable[[schema.Volume, str], list[tuple[str, schema.Volume]]]


def hold_out_cases(val_ids: Sequence[str]) -> Assign:
  """Cases in val_ids go to val, the others to train (calibration)."""
  held = set(val_ids)
  return lambda volume, split: [
      ('val' if volume.case_id in held else 'train', volume)]


def hold_out_region(fraction: float) -> Assign:
  """Every case cut along its longest axis: the last `fraction` to val, the
  rest to train (calibration on a dataset of one case)."""

  def assign(volume: schema.Volume, split: str):
    shape = volume.image.shape[:3]
    axis = int(np.argmax(shape))
    cut = max(1, min(shape[axis] - 1, int(round(shape[axis] *
                                                (1 - fraction)))))
    out = []
    for part, (a, b) in (('train', (0, cut)), ('val', (cut, shape[axis]))):
      start = [0, 0, 0]
      stop = list(shape)
      start[axis], stop[axis] = a, b
      label = (None if volume.label is None else
               spatial.crop(volume.label, start, stop))
      out.append((part, dataclasses.replace(
          volume, image=spatial.crop(volume.image, start, stop),
          label=label, affine=spatial.crop_affine(volume.affine, start))))
    return out

  return assign


def _one_shard(split: str) -> str:
  return f'{split}-00000-of-00001.tfrecord'


def regrid_dataset(data_dir: str, output_dir: str, spacing: Sequence[float],
                   reason: str, overwrite: bool = False,
                   progress: Optional[Callable[[int, int], None]] = None,
                   assign: Optional[Assign] = None) -> dict[str, Any]:
  """Writes the converter output in data_dir, resampled to `spacing`, to
  output_dir; returns its dataset.json content.

  Args:
    data_dir: a converter's output folder (dataset.json beside its shards).
    output_dir: the folder to create (replaced only when overwrite).
    spacing: the new spacing, mm per stored axis.
    reason: recorded as `preprocessing.resample.target_spacing_from`.
    overwrite: replace an existing output_dir.
    progress: called with (records done, records in all) after each shard.
    assign: re-split the records (calibration): every record's parts are
      written to one `<split>-00000-of-00001.tfrecord` shard per split;
      by default the shards keep their names and records.
  """
  path = fileio.join(data_dir, dataset_info.DATASET_JSON)
  if not fileio.exists(path):
    raise ValueError(f'{path}: not found (expected a converter\'s output)')
  info = dataset_info.read(path)
  if any(c.get('record_spatial_dims', 3) != 3 for c in info.get('cases', [])):
    raise ValueError(f'{path}: the records are 2D slices; only 3D records '
                     'can be resampled')
  order = _image_order(info, path)
  compressed = bool(info.get('compressed', True))
  entries = {c['case_id']: c for c in info['cases']}
  shards = info.get('shards') or {}
  total = sum(int(n) for n in (info.get('num_records') or {}).values()) or 1
  done = 0
  new_entries: dict[str, dict[str, Any]] = {}
  reassigned: dict[str, list[schema.Volume]] = {}
  with runner.staged_output(output_dir, overwrite, ()) as tmp_dir:
    for split in splits_lib.SPLIT_NAMES:
      for name in shards.get(split, []):
        volumes = []
        for record in _read_shard(fileio.join(data_dir, name), compressed):
          volume = regrid_volume(schema.decode_volume(record), spacing, order)
          done += 1
          parts = [(split, volume)] if assign is None else assign(volume,
                                                                  split)
          for part_split, part in parts:
            volumes.append(part)
            reassigned.setdefault(part_split, []).append(part)
            if part.case_id in entries and part.case_id not in new_entries:
              new_entries[part.case_id] = _case_entry(
                  entries[part.case_id], part)
              if assign is not None:
                new_entries[part.case_id].update(
                    split=part_split, shard=_one_shard(part_split))
        if assign is None:
          schema.write_records(os.path.join(tmp_dir, name),
                               (schema.encode_volume(v) for v in volumes),
                               compressed)
        if progress is not None:
          progress(min(done, total), total)
    out = copy.deepcopy(info)
    if assign is not None:
      out['shards'] = {}
      for split, volumes in reassigned.items():
        name = _one_shard(split)
        schema.write_records(os.path.join(tmp_dir, name),
                             (schema.encode_volume(v) for v in volumes),
                             compressed)
        out['shards'][split] = [name]
    out['cases'] = [new_entries.get(c['case_id'], c) for c in info['cases']]
    out['class_voxel_counts'] = dataset_json.class_count_totals(
        out['cases'], out['labels'])
    out['preprocessing']['resample'] = {
        'target_spacing': [float(s) for s in spacing],
        'target_spacing_from': reason}
    out['resampled_from'] = {'dataset_json': path,
                             'fingerprint_sha256':
                                 dataset_info.fingerprint_sha256(info)}
    splits_file = fileio.join(data_dir, info.get('splits_file') or
                              splits_lib.SPLITS_JSON)
    if assign is None and fileio.exists(splits_file):
      with open(os.path.join(tmp_dir, splits_lib.SPLITS_JSON), 'w') as f:
        f.write(fileio.read_text(splits_file))
    with open(os.path.join(tmp_dir, dataset_info.DATASET_JSON), 'w') as f:
      json.dump(out, f, indent=1)
  return out

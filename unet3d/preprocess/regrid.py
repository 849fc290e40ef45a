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
import json
import os
import re
from typing import Any, Callable, Optional, Sequence

import numpy as np

from unet3d import fileio
from unet3d.input import dataset_info
from unet3d.input import schema
from unet3d.input import splits as splits_lib
from unet3d.preprocess import cases
from unet3d.preprocess import label_maps
from unet3d.preprocess import resample
from unet3d.preprocess import runner


def _image_order(info: dict[str, Any], path: str) -> int:
  match = re.fullmatch(r'spline order (\d)', str(
      info['preprocessing'].get('image_interpolation', 'spline order 3')))
  if match is None:
    raise ValueError(f'{path}: preprocessing.image_interpolation is not '
                     "'spline order N'")
  return int(match.group(1))


def regrid_volume(volume: schema.Volume, spacing: Sequence[float],
                  image_order: int = 3) -> schema.Volume:
  """One stored record on the grid of `spacing` (mm per axis)."""
  grid = resample.resample_grid(volume.image.shape, volume.spacing, spacing)
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


def regrid_dataset(data_dir: str, output_dir: str, spacing: Sequence[float],
                   reason: str, overwrite: bool = False,
                   progress: Optional[Callable[[int, int], None]] = None
                  ) -> dict[str, Any]:
  """Writes the converter output in data_dir, resampled to `spacing`, to
  output_dir; returns its dataset.json content.

  Args:
    data_dir: a converter's output folder (dataset.json beside its shards).
    output_dir: the folder to create (replaced only when overwrite).
    spacing: the new spacing, mm per stored axis.
    reason: recorded as `preprocessing.resample.target_spacing_from`.
    overwrite: replace an existing output_dir.
    progress: called with (records done, records in all) after each shard.
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
  with runner.staged_output(output_dir, overwrite, ()) as tmp_dir:
    for split in splits_lib.SPLIT_NAMES:
      for name in shards.get(split, []):
        volumes = []
        for record in schema.read_records(fileio.join(data_dir, name),
                                          compressed):
          volume = regrid_volume(schema.decode_volume(record), spacing, order)
          volumes.append(volume)
          if volume.case_id in entries and volume.case_id not in new_entries:
            new_entries[volume.case_id] = _case_entry(
                entries[volume.case_id], volume)
        schema.write_records(os.path.join(tmp_dir, name),
                             (schema.encode_volume(v) for v in volumes),
                             compressed)
        done += len(volumes)
        if progress is not None:
          progress(done, total)
    out = copy.deepcopy(info)
    out['cases'] = [new_entries.get(c['case_id'], c) for c in info['cases']]
    counts = np.zeros(len(out['labels']), np.int64)
    for c in out['cases']:
      n = c.get('class_voxel_counts') or []
      counts[:len(n)] += np.asarray(n, np.int64)[:len(counts)]
    out['class_voxel_counts'] = {k: int(counts[int(k)])
                                 for k in out['labels']}
    out['preprocessing']['resample'] = {
        'target_spacing': [float(s) for s in spacing],
        'target_spacing_from': reason}
    out['resampled_from'] = {'dataset_json': path,
                             'fingerprint_sha256':
                                 dataset_info.fingerprint_sha256(info)}
    splits_file = fileio.join(data_dir, info.get('splits_file') or
                              splits_lib.SPLITS_JSON)
    if fileio.exists(splits_file):
      with open(os.path.join(tmp_dir, splits_lib.SPLITS_JSON), 'w') as f:
        f.write(fileio.read_text(splits_file))
    with open(os.path.join(tmp_dir, dataset_info.DATASET_JSON), 'w') as f:
      json.dump(out, f, indent=1)
  return out

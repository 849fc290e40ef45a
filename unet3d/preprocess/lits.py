"""LiTS (Liver Tumor Segmentation): finding, loading and cropping cases.

Files are `volume-N` (CT, Hounsfield units) and `segmentation-N` (0
background, 1 liver, 2 tumour) as `.nii`, `.nii.gz`, or `.npy` with a
geometry sidecar (see `io.save_npy`). `source` describes 3D records;
`slice_source` 2D axial slices for 2D models (UNet 3+'s LiTS setup). Numpy
only: runs in worker processes.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import re
from typing import Any, Optional, Sequence

import numpy as np

from unet3d.input import splits
from unet3d.preprocess import cases
from unet3d.preprocess import intensity
from unet3d.preprocess import io
from unet3d.preprocess import label_maps
from unet3d.preprocess import resample
from unet3d.preprocess import spatial

LABELS = {'0': 'background', '1': 'liver', '2': 'tumor'}
# Checked and stored as uint8; the values stay.
LABEL_MAP = {int(k): int(k) for k in LABELS}
# --label_map: the stored labels. 'liver' merges tumour into liver, as the
# UNet 3+ repository's LiTS preprocessing does (one liver mask).
LABEL_MAPS = {
    'liver_tumour': (LABEL_MAP, LABELS),
    'liver': ({0: 0, 1: 1, 2: 1}, {'0': 'background', '1': 'liver'}),
}
# The window UNet 3+ uses for the liver (Hounsfield units).
HU_WINDOW = (-200.0, 250.0)


def _pattern_regex(pattern: str, flag: str) -> re.Pattern:
  if pattern.count('{}') != 1:
    raise ValueError(f'{flag}: {pattern!r} must contain one {{}} where the '
                     'case number goes, e.g. /data/volume-{}.nii')
  prefix, suffix = pattern.split('{}')
  return re.compile(re.escape(prefix) + r'(\d+)' + re.escape(suffix) + '$')


def find_cases(image_file_pattern: str, label_file_pattern: str,
               shard_start: int = 0, shard_stride: int = 1
              ) -> list[cases.Case]:
  """Cases numbered shard_start, shard_start + shard_stride, ...

  Args:
    image_file_pattern: e.g. `/data/volume-{}.nii`; `{}` is the number.
    label_file_pattern: e.g. `/data/segmentation-{}.nii`.
    shard_start, shard_stride: the Model Garden's way to split the work
      between machines: only numbers shard_start + n * shard_stride.

  A missing label file is reported when its case is loaded.
  """
  regex = _pattern_regex(image_file_pattern, '--image_file_pattern')
  _pattern_regex(label_file_pattern, '--label_file_pattern')
  if shard_stride < 1 or shard_start < 0:
    raise ValueError('--shard_start/--shard_stride: need shard_start >= 0 '
                     f'and shard_stride >= 1, got {shard_start}, '
                     f'{shard_stride}')
  found = []
  for path in io.glob(image_file_pattern.replace('{}', '*')):
    match = regex.match(path)
    if match:
      number = int(match.group(1))
      if number >= shard_start and (number - shard_start) % shard_stride == 0:
        found.append((number, match.group(1), path))
  if not found:
    raise ValueError(f'{image_file_pattern}: no LiTS volumes match (with '
                     f'shard_start={shard_start}, shard_stride={shard_stride})')
  return [cases.Case(case_id=f'volume-{text}', image_files=(path,),
                     label_file=label_file_pattern.replace('{}', text))
          for _, text, path in sorted(found)]


def find_nifti_cases(input_path: str) -> list[cases.Case]:
  """`volume-N.nii[.gz]` with `segmentation-N.nii[.gz]` in one folder."""
  if not io.isdir(input_path):
    raise ValueError(f'{input_path}: not a folder (expected LiTS '
                     'volume-N.nii and segmentation-N.nii files)')
  found = []
  for suffix in ('.nii', '.nii.gz'):
    pattern = os.path.join(input_path, 'volume-{}' + suffix)
    if io.glob(pattern.replace('{}', '*')):
      found += find_cases(pattern, os.path.join(input_path,
                                                'segmentation-{}' + suffix))
  if not found:
    raise ValueError(f'{input_path}: no LiTS volume-N.nii or volume-N.nii.gz '
                     'files found')
  return found


def nifti_to_npy(case: cases.Case, output_dir: str) -> dict[str, Any]:
  """Writes `volume-N.npy` (the file's dtype) and `segmentation-N.npy`
  (uint8), each with its geometry sidecar `.json`, after checking that they
  match and that the labels are {0, 1, 2}."""
  image, affine, _ = io.load_nifti(case.image_files[0])
  label = cases.read_label(case.label_file, image, affine,
                           case.image_files[0], load=io.load_nifti)
  label = label_maps.remap_labels(label, LABEL_MAP, case.label_file)
  number = case.case_id[len('volume-'):]
  for name, array, path in (('volume', image, case.image_files[0]),
                            ('segmentation', label, case.label_file)):
    io.save_npy(os.path.join(output_dir, f'{name}-{number}.npy'), array,
                affine, extra={'source': os.path.basename(path)})
  return {'case_id': case.case_id, 'shape': list(image.shape),
          'spacing': io.spacing_of(affine).tolist()}


def check_label_map(label_map: str) -> None:
  if label_map not in LABEL_MAPS:
    raise ValueError(f'--label_map: {label_map!r} is not one of '
                     f'{sorted(LABEL_MAPS)}')


def load_case(case: cases.Case, label_map: str = 'liver_tumour'
             ) -> cases.RawCase:
  """CT [X, Y, Z, 1] in HU and labels {0, 1, 2} (`liver_tumour`) or
  {0, 1} (`liver`: tumour merged into liver); errors name the file."""
  image, affine = cases.read_images(case.image_files)
  if image.shape[-1] != 1:
    raise ValueError(f'{case.image_files[0]}: expected one CT channel, got '
                     f'shape {image.shape[:3] + (image.shape[-1],)}')
  label = cases.read_label(case.label_file, image, affine,
                           case.image_files[0])
  label = label_maps.remap_labels(label, LABEL_MAPS[label_map][0],
                                  case.label_file)
  return cases.RawCase(image, label, affine)


def _crop_record(record: cases.Processed, start, stop,
                 case_id: Optional[str] = None) -> cases.Processed:
  return cases.Processed(
      case_id or record.case_id, spatial.crop(record.image, start, stop),
      spatial.crop(record.label, start, stop),
      spatial.crop_affine(record.affine, start),
      record.channel_mean, record.channel_std)


def _intensity_change(image: np.ndarray, rng: np.random.Generator
                     ) -> np.ndarray:
  # The Model Garden's colour augmentation: 90% of crops are scaled by a
  # factor ~ N(1, 0.05) clipped to [0.9, 1.1].
  if rng.random() < 0.1:
    return image
  return image * np.float32(np.clip(rng.normal(1.0, 0.05), 0.9, 1.1))


def finish(record: cases.Processed, is_train: bool, rng: np.random.Generator,
           *, crop_liver_region: bool, output_size: int, augment_times: int
          ) -> list[cases.Processed]:
  """The LiTS-specific last step, after resampling and normalisation.

  crop_liver_region: crop to the liver's bounding box (label > 0), grown to
    at least output_size voxels per axis where the volume allows.
  augment_times: for training cases, add this many random crops of
    output_size^3 (around the liver when cropping to it), each with the
    Model Garden's random intensity scaling, as records
    `<case_id>#aug<k>` (`splits.part_id`). 0: none.
  """
  shape = np.array(record.image.shape[:3])
  size = np.full(3, output_size)
  liver = record.label > 0
  if crop_liver_region and liver.any():
    start, stop = spatial.nonzero_bbox(liver)
    start, stop = spatial.box_around(start, stop, size, shape)
    record = _crop_record(record, start, stop)
    shape = stop - start
    liver = record.label > 0
  out = [record]
  if not is_train or augment_times <= 0:
    return out
  crop_size = np.minimum(size, shape)
  if crop_liver_region and liver.any():
    lo, hi = spatial.nonzero_bbox(liver)
    centre = (lo + hi - 1) // 2
  else:
    centre = None
  for k in range(augment_times):
    if centre is None:
      start = np.array([rng.integers(0, s - c + 1)
                        for s, c in zip(shape, crop_size)])
    else:
      # Jittered around the liver centre, as the Model Garden did.
      jitter = np.clip(rng.normal(0, output_size / 6, 3), -output_size / 4,
                       output_size / 4)
      start = np.clip(np.round(centre + jitter - crop_size // 2).astype(int),
                      0, shape - crop_size)
    crop = _crop_record(record, start, start + crop_size,
                        splits.part_id(record.case_id, f'aug{k:02d}'))
    crop.image = _intensity_change(crop.image, rng)
    out.append(crop)
  return out


def source(image_file_pattern: str, label_file_pattern: str, *,
           hu_window: Optional[Sequence[float]] = HU_WINDOW,
           crop_liver_region: bool = True, output_size: int = 128,
           apply_data_aug: bool = False, augment_times: int = 8,
           shard_start: int = 0, shard_stride: int = 1,
           label_map: str = 'liver_tumour') -> cases.Source:
  """The LiTS dataset for `convert.convert`.

  label_map: `liver_tumour` (0 background, 1 liver, 2 tumour) or `liver`
    (tumour merged into liver), recorded in dataset.json's labels.

  hu_window: CT is clipped to this HU window, then z-scored with the
    dataset's foreground mean and std; None: clip to the foreground
    [0.5, 99.5] percentiles instead.
  """
  if output_size < 1:
    raise ValueError(f'--output_size: must be >= 1, got {output_size}')
  window = None if hu_window is None else tuple(float(v) for v in hu_window)
  if window is not None and (len(window) != 2 or window[0] >= window[1]):
    raise ValueError(f'--hu_window: expected low,high with low < high, got '
                     f'{list(hu_window)}')
  times = augment_times if apply_data_aug else 0
  check_label_map(label_map)
  return cases.Source(
      name=image_file_pattern,
      cases=tuple(find_cases(image_file_pattern, label_file_pattern,
                             shard_start, shard_stride)),
      load=functools.partial(load_case, label_map=label_map),
      geometry=cases.file_geometry,
      modalities={'0': 'CT'}, labels=dict(LABEL_MAPS[label_map][1]),
      norms=(intensity.ChannelNorm('ct', window=window),),
      finish=functools.partial(finish, crop_liver_region=crop_liver_region,
                               output_size=output_size, augment_times=times),
      description={'liver_crop': ({'min_size': output_size} if
                                  crop_liver_region else None),
                   'augmented_crops_per_train_case': times,
                   'label_map': label_map})


# ----------------------------------------------------------------------------
# 2D slices (UNet 3+)
# ----------------------------------------------------------------------------


def to_slices(record: cases.Processed, is_train: bool,
              rng: np.random.Generator, *, slice_size: int,
              context_slices: int, skip_empty_slices: bool,
              image_order: int = 3, label_interpolation: str = 'linear'
             ) -> list[cases.Processed]:
  """One 2D record per axial slice of a (RAS) case record.

  Each record's image is [X', Y', 2 * context_slices + 1]: the slice and its
  neighbours below and above as channels (edge slices repeat), as UNet 3+
  feeds the slice to segment with its upper and lower slices. With
  slice_size > 0 each slice is resized in-plane to slice_size^2 (cubic
  image, one-hot linear labels by default); the affine of record `k` maps
  (i, j, 0) to the world point of that voxel of slice k. With
  skip_empty_slices, training cases keep only slices with a label
  (validation cases keep every slice, so eval counts false positives).
  """
  del rng
  image, label, affine = record.image[..., 0], record.label, record.affine
  if slice_size > 0:
    grid = resample.resample_grid(image.shape, io.spacing_of(affine),
                                  target_shape=(slice_size, slice_size,
                                                image.shape[2]))
    image = resample.resample_image(image[..., None], grid, image_order)[..., 0]
    label = resample.resample_label(label, grid, label_interpolation)
    affine = resample.resampled_affine(affine, grid)
  depth = image.shape[2]
  out = []
  for k in range(depth):
    if skip_empty_slices and is_train and not label[..., k].any():
      continue
    neighbours = np.clip(np.arange(k - context_slices,
                                   k + context_slices + 1), 0, depth - 1)
    out.append(cases.Processed(
        splits.part_id(record.case_id, f'z{k:04d}'),
        np.ascontiguousarray(image[..., neighbours]),
        np.ascontiguousarray(label[..., k]),
        spatial.crop_affine(affine, [0, 0, k]),
        np.repeat(record.channel_mean, len(neighbours)),
        np.repeat(record.channel_std, len(neighbours))))
  return out


def slice_source(image_file_pattern: str, label_file_pattern: str, *,
                 hu_window: Optional[Sequence[float]] = HU_WINDOW,
                 slice_size: int = 320, context_slices: int = 1,
                 skip_empty_slices: bool = False, image_order: int = 3,
                 label_interpolation: str = 'linear', shard_start: int = 0,
                 shard_stride: int = 1, label_map: str = 'liver_tumour'
                ) -> cases.Source:
  """LiTS as 2D axial slices for `convert.convert` (see `to_slices`).

  The CT is clipped to `hu_window` and z-scored with the dataset's
  foreground statistics, as the 3D records; splits stay per case.
  """
  if slice_size < 0:
    raise ValueError(f'--slice_size: must be >= 0, got {slice_size}')
  if context_slices < 0:
    raise ValueError(f'--context_slices: must be >= 0, got {context_slices}')
  base = source(image_file_pattern, label_file_pattern, hu_window=hu_window,
                crop_liver_region=False, shard_start=shard_start,
                shard_stride=shard_stride, label_map=label_map)
  channels = 2 * context_slices + 1
  offsets = range(-context_slices, context_slices + 1)
  return dataclasses.replace(
      base, finish=None,
      parts=functools.partial(to_slices, slice_size=slice_size,
                              context_slices=context_slices,
                              skip_empty_slices=skip_empty_slices,
                              image_order=image_order,
                              label_interpolation=label_interpolation),
      modalities={str(c): f'CT slice {o:+d}' if o else 'CT'
                  for c, o in enumerate(offsets)} if channels > 1 else
      {'0': 'CT'},
      description={'label_map': label_map, 'slices': {
          'axis': 2, 'in_plane_size': slice_size or None,
          'context_slices': context_slices,
          'skip_empty_training_slices': skip_empty_slices}})

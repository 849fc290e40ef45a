"""One converter entry point per dataset: its cases as a `cases.Source`,
then `convert.convert`. The command-line tools in data_preprocess/ call
these.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from typing import Any, Mapping, Optional, Sequence

from unet3d import fileio
from unet3d.preprocess import brats
from unet3d.preprocess import convert
from unet3d.preprocess import decathlon
from unet3d.preprocess import hdf5
from unet3d.preprocess import lits
from unet3d.preprocess import nnunet
from unet3d.preprocess import png_slices
from unet3d.preprocess import runner
from unet3d.preprocess.convert import Options


def convert_decathlon(task_dir: str, output_dir: str, *,
                      nonzero_mask: Optional[bool] = None,
                      ct_window: Optional[Sequence[float]] = None,
                      modalities: Optional[Sequence[str]] = None,
                      label_map: Optional[Mapping[int, int]] = None,
                      label_names: Optional[Sequence[str]] = None,
                      multi_label: bool = False,
                      allow_outside_paths: bool = False,
                      progress=None, **options) -> dict[str, Any]:
  """A Medical Segmentation Decathlon task folder -> TFRecords.

  Args:
    task_dir: holds dataset.json, imagesTr/ and labelsTr/.
    output_dir: the output folder.
    nonzero_mask: MRI channels are z-scored within the nonzero mask (True)
      or over the whole image (False); None: nnU-Net's rule decides from
      the cases (within the mask when they have a zero background,
      `intensity.zscore_within_nonzero_mask`).
    ct_window: clip CT channels to this window instead of the foreground
      [0.5, 99.5] percentiles.
    modalities, label_map, label_names, multi_label, allow_outside_paths:
      see `decathlon.source`.
    progress: see `convert`.
    **options: fields of `Options` (num_shards=4, compressed=True,
      overwrite=False, validation_fraction=0.2, seed=0, num_folds,
      fold, num_processes, on_error, target_spacing, ...).
  """
  source = decathlon.source(task_dir, nonzero_mask=nonzero_mask,
                            ct_window=ct_window, modalities=modalities,
                            label_map=label_map, label_names=label_names,
                            multi_label=multi_label,
                            allow_outside_paths=allow_outside_paths)
  return convert.convert(source, output_dir, Options(**options), progress)


def convert_lits(image_file_pattern: str, label_file_pattern: str,
                 output_dir: str, *, hu_window=lits.HU_WINDOW,
                 crop_liver_region: bool = True, output_size: int = 128,
                 apply_data_aug: bool = False, augment_times: int = 8,
                 shard_start: int = 0, shard_stride: int = 1,
                 label_map: str = 'liver_tumour', progress=None,
                 **options) -> dict[str, Any]:
  """LiTS volume-N / segmentation-N (.nii, .nii.gz or .npy) -> TFRecords.

  See `lits.source` for the dataset arguments and `Options` for options.
  """
  source = lits.source(image_file_pattern, label_file_pattern,
                       hu_window=hu_window,
                       crop_liver_region=crop_liver_region,
                       output_size=output_size, apply_data_aug=apply_data_aug,
                       augment_times=augment_times, shard_start=shard_start,
                       shard_stride=shard_stride, label_map=label_map)
  return convert.convert(source, output_dir, Options(**options), progress)


def convert_lits_2d(image_file_pattern: str, label_file_pattern: str,
                    output_dir: str, *, hu_window=lits.HU_WINDOW,
                    slice_size: int = 320, context_slices: int = 1,
                    skip_empty_slices: bool = False, shard_start: int = 0,
                    shard_stride: int = 1, label_map: str = 'liver_tumour',
                    progress=None, **options) -> dict[str, Any]:
  """LiTS volumes -> 2D axial-slice TFRecords for 2D models (UNet 3+).

  See `lits.slice_source` for the dataset arguments and `Options` for
  options; `target_spacing` defaults to None here (slices keep the scan's
  grid, resized in-plane to slice_size^2).
  """
  options.setdefault('target_spacing', None)
  opts = Options(**options)
  source = lits.slice_source(
      image_file_pattern, label_file_pattern, hu_window=hu_window,
      slice_size=slice_size, context_slices=context_slices,
      skip_empty_slices=skip_empty_slices, image_order=opts.image_order,
      label_interpolation=opts.label_interpolation, shard_start=shard_start,
      shard_stride=shard_stride, label_map=label_map)
  return convert.convert(source, output_dir, opts, progress)


def convert_lits_to_npy(input_path: str, output_dir: str, *,
                       num_processes: int = 1, overwrite: bool = False,
                       on_error: str = 'stop', progress=None
                      ) -> dict[str, Any]:
  """LiTS `volume-N.nii[.gz]` / `segmentation-N.nii[.gz]` -> `.npy` pairs.

  Each `.npy` gets a `.json` sidecar with its affine and spacing; the
  folder gets `npy_summary.json` (converted and skipped cases). Written to
  a temporary folder and renamed when complete, like `convert`.
  """
  convert.check_options(Options(num_processes=num_processes, on_error=on_error))
  case_list = lits.find_nifti_cases(input_path)
  errors = runner.Errors(on_error)
  start_time = time.perf_counter()
  converted = []
  output_dir = fileio.normpath(output_dir)
  with runner.staged_output(output_dir, overwrite, case_list) as tmp_dir:
    with runner.worker_pool(num_processes) as pool:
      jobs = [(lits.nifti_to_npy, c.case_id, (c, tmp_dir), {})
              for c in case_list]
      with contextlib.closing(runner.progress_bar(progress, len(jobs),
                                            'nii -> npy')) as bar:
        for outcome in runner.ordered_outcomes(pool, jobs, 2 * num_processes):
          bar.update(1)
          if errors.ok(outcome, 'convert'):
            converted.append(outcome.value)
    if not converted:
      raise ValueError(f'{input_path}: every case failed (see the warnings '
                       'above)')
    summary = {'num_cases': len(converted), 'cases': converted,
               'skipped': errors.skipped,
               'seconds': round(time.perf_counter() - start_time, 2)}
    with open(os.path.join(tmp_dir, 'npy_summary.json'), 'w') as f:
      json.dump(summary, f, indent=1)
  return summary


def convert_brats(input_path: str, output_dir: str, *,
                  modalities: Sequence[str] = brats.MODALITIES,
                  regions: bool = False, single_data_dir: bool = False,
                  progress=None, **options) -> dict[str, Any]:
  """BraTS case folders (or HGG/ and LGG/ of them) -> TFRecords; see
  `brats.source`."""
  source = brats.source(input_path, modalities=modalities, regions=regions,
                        single_data_dir=single_data_dir)
  return convert.convert(source, output_dir, Options(**options), progress)


def convert_hdf5(input_path: str, output_dir: str, *, raw_key: str = 'raw',
                 label_key: str = 'label',
                 spacing: Optional[Sequence[float]] = None,
                 class_names: Optional[Sequence[str]] = None,
                 normalization: str = 'zscore', progress=None,
                 **options) -> dict[str, Any]:
  """pytorch-3dunet HDF5 files -> TFRecords; see `hdf5.source`."""
  source = hdf5.source(input_path, raw_key=raw_key, label_key=label_key,
                       spacing=spacing, class_names=class_names,
                       normalization=normalization)
  return convert.convert(source, output_dir, Options(**options), progress)


def convert_nnunet(dataset_dir: str, output_dir: str, *,
                   nonzero_mask: Optional[bool] = None,
                   ct_window: Optional[Sequence[float]] = None,
                   multi_label: bool = False,
                   allow_outside_paths: bool = False,
                   progress=None, **options) -> dict[str, Any]:
  """An nnU-Net raw dataset (v2 DatasetXXX_Name or v1 TaskXXX_Name) ->
  TFRecords; see `nnunet.source` and `Options`."""
  source = nnunet.source(dataset_dir, nonzero_mask=nonzero_mask,
                         ct_window=ct_window, multi_label=multi_label,
                         allow_outside_paths=allow_outside_paths)
  return convert.convert(source, output_dir, Options(**options), progress)


def convert_png_slices(input_path: str, output_dir: str, *,
                       label_names=png_slices.LABEL_NAMES, progress=None,
                       **options) -> dict[str, Any]:
  """The UNet 3+ repository's PNG slice folders -> 2D TFRecords, split by
  volume; see `png_slices`. The slices keep their grid and values."""
  for key, value in (('target_spacing', None), ('reorient', False),
                     ('crop_nonzero', False)):
    options.setdefault(key, value)
  source = png_slices.source(input_path, label_names)
  return convert.convert(source, output_dir, Options(**options), progress)

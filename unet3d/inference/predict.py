"""The predict mode: NIfTI volumes in, segmentations with their geometry out.

```
input.nii.gz ──preprocess_for_inference (the converter's steps, read from
its dataset.json)──▶ stored grid ──predict_volume (sliding window)──▶
probabilities ──segmentation──▶ labels ──restore_original──▶ input grid
──▶ <output_dir>/<input name>_seg.nii.gz with the input's affine and header
```

Each input file is one case: a 3D volume (one channel) or a 4D [X, Y, Z, C]
volume holding every channel. Softmax models write uint8 class indices
[X, Y, Z]; sigmoid (multi-label) models write uint8 masks [X, Y, Z, K]
(probability > 0.5), the same outputs as the exported SavedModel.

Dataset-specific converter steps that need the label (LiTS's liver crop,
augmented crops) cannot be replayed: prediction covers the whole volume.
"""

from __future__ import annotations

import glob
import os
from typing import Any, Mapping, Optional

from absl import logging
import nibabel as nib
import numpy as np

from unet3d import fileio
from unet3d import run_dir
from unet3d.config import Config, ConfigError
from unet3d.inference import whole_volume
from unet3d.inference.whole_volume import PredictFn
from unet3d.input import dataset_info
from unet3d.preprocess import cases
from unet3d.preprocess import dataset_json
from unet3d.preprocess import io
from unet3d.preprocess import preprocessing as pp

SEG_SUFFIX = '_seg.nii.gz'


# ----------------------------------------------------------------------------
# The core: numpy in, numpy out
# ----------------------------------------------------------------------------


def preprocess_for_inference(image: np.ndarray, affine: np.ndarray,
                             dataset_info: Mapping[str, Any]
                            ) -> tuple[np.ndarray, np.ndarray, dict]:
  """Applies the converter's preprocessing to one unlabelled volume.

  The same `cases.to_stored_grid` (reorient -> crop to nonzero -> resample)
  and `preprocessing.normalize` the converter ran, with the plan read from
  its dataset.json: CT channels use the dataset's clip/mean/std, z-score
  channels this image's own statistics.

  Args:
    image: float32 [X, Y, Z, C] in the input file's voxel order.
    affine: the input's 4x4 voxel-to-world matrix (mm).
    dataset_info: the converter's parsed dataset.json.

  Returns:
    (float32 [X', Y', Z', C] on the stored grid, its affine, case_record):
    case_record is {'original': {'shape', 'affine'}, 'stored': {'affine'}},
    what `preprocessing.restore_original` needs to map a prediction back.
  """
  plan = dataset_json.plan_from_dataset_info(dataset_info)
  if len(plan.norms) != image.shape[-1]:
    raise ValueError(f'dataset.json normalises {len(plan.norms)} channels, '
                     f'the image has {image.shape[-1]}')
  affine = np.asarray(affine, np.float64)
  grid = cases.to_stored_grid(image, None, affine, plan)
  normalized, _, _ = pp.normalize(grid.image, plan.norms, grid.mask)
  record = {'original': {'shape': [int(s) for s in image.shape[:3]],
                         'affine': affine.tolist()},
            'stored': {'affine': grid.affine.tolist()}}
  return normalized, grid.affine, record


def segment(image: np.ndarray, affine: np.ndarray, predict_fn: PredictFn,
            cfg: Config, dataset_info: Optional[Mapping[str, Any]]
           ) -> np.ndarray:
  """The segmentation of one input volume on its own grid.

  Args:
    image: float32 [X, Y, Z, C] as read from the file.
    affine: its voxel-to-world matrix.
    predict_fn: patch batch [b, *input_image_size, C] -> probabilities
      [b, *input_image_size, K].
    cfg: patch size, overlap, batch size, output activation.
    dataset_info: the converter's dataset.json, or None when the input is
      already preprocessed (`predict.preprocessing: none`).

  Returns uint8 [X, Y, Z] (or [X, Y, Z, K] masks), see
  `whole_volume.segmentation`.
  """
  activation = cfg.model.output_activation
  if dataset_info is None:
    return whole_volume.segmentation(
        whole_volume.predict_volume(predict_fn, image, cfg), activation)
  stored, _, record = preprocess_for_inference(image, affine, dataset_info)
  labels = whole_volume.segmentation(
      whole_volume.predict_volume(predict_fn, stored, cfg), activation)
  return pp.restore_original(labels, record, order=0)


# ----------------------------------------------------------------------------
# Files
# ----------------------------------------------------------------------------


def input_files(pattern: str) -> list[str]:
  """The sorted .nii/.nii.gz files of a (comma-separated) glob.

  Raises a one-line ValueError naming the missing file or the pattern.
  """
  found = []
  for part in (p.strip() for p in pattern.split(',')):
    if not part:
      continue
    if not glob.has_magic(part):
      if not os.path.isfile(part):
        raise ValueError(f'{part}: file not found (predict.input_pattern)')
      found.append(part)
      continue
    matches = sorted(p for p in glob.glob(part) if os.path.isfile(p))
    if not matches:
      raise ValueError(f'{part}: no files match predict.input_pattern '
                       '(expected .nii or .nii.gz volumes)')
    found.extend(matches)
  for path in found:
    if not path.endswith(io.NIFTI_SUFFIXES):
      raise ValueError(f'{path}: expected a .nii or .nii.gz volume')
  return sorted(set(found))


def output_path(output_dir: str, input_path: str) -> str:
  """`<output_dir>/<input name without .nii(.gz)>_seg.nii.gz`."""
  return os.path.join(output_dir, io.strip_suffix(input_path) + SEG_SUFFIX)


def check_input(path: str, num_channels: int) -> None:
  """Header-only check: a 3D volume or 4D [X, Y, Z, C] with num_channels."""
  shape, _ = io.nifti_geometry(path)
  channels = 1 if len(shape) == 3 else shape[3] if len(shape) == 4 else None
  if channels is None:
    raise ValueError(f'{path}: expected a 3D volume or a 4D [X, Y, Z, C] '
                     f'volume, got shape {tuple(shape)}')
  if channels != num_channels:
    raise ValueError(f'{path}: {channels} channel(s), but the model expects '
                     f'num_channels={num_channels} (a 3D volume, or 4D '
                     '[X, Y, Z, C])')


def load_dataset_info(cfg: Config) -> Optional[dict[str, Any]]:
  """The converter's dataset.json for `predict.preprocessing: dataset_json`
  (None for `none`), checked against the model's num_channels."""
  if cfg.predict.preprocessing == 'none':
    return None
  path = (cfg.predict.dataset_json or
          dataset_info.path_beside(cfg.training_file_pattern))
  if not path:
    raise ConfigError(
        'predict.dataset_json: required to replay the converter\'s '
        'preprocessing (no dataset.json beside training_file_pattern); set '
        'predict.preprocessing=none for inputs that are already preprocessed')
  if not fileio.exists(path):
    raise ConfigError(f'predict.dataset_json: {path} not found')
  info = dataset_info.read(path)
  plan = dataset_json.plan_from_dataset_info(info, source=path)
  if len(plan.norms) != cfg.num_channels:
    raise ValueError(f'{path}: preprocessing.normalization lists '
                     f'{len(plan.norms)} channel(s), but the model has '
                     f'num_channels={cfg.num_channels}')
  skipped = sorted(k for k, v in info['preprocessing'].items()
                   if k not in dataset_json.REPLAYED_PREPROCESSING and v)
  if skipped:
    logging.warning('%s: dataset-specific preprocessing %s is not replayed; '
                    'predicting on the whole volume', path, skipped)
  return info


def write_segmentation(path: str, labels: np.ndarray, input_path: str) -> None:
  """Saves labels (atomically) with the input file's affine and header,
  as uint8 without intensity scaling or display window."""
  reference = nib.load(input_path)
  header = reference.header.copy()
  header.set_data_dtype(np.uint8)
  header.set_intent('none')
  header['cal_min'] = header['cal_max'] = 0
  io.save_nifti(path, labels.astype(np.uint8), reference.affine, header)


def predict_file(input_path: str, out_path: str, predict_fn: PredictFn,
                 cfg: Config, dataset_info: Optional[Mapping[str, Any]]
                ) -> str:
  """Reads one volume, segments it, writes `out_path`; returns out_path."""
  image, affine = cases.read_images([input_path])
  if image.shape[-1] != cfg.num_channels:
    raise ValueError(f'{input_path}: {image.shape[-1]} channel(s), but the '
                     f'model expects num_channels={cfg.num_channels}')
  labels = segment(image, affine, predict_fn, cfg, dataset_info)
  write_segmentation(out_path, labels, input_path)
  return out_path


# ----------------------------------------------------------------------------
# The mode
# ----------------------------------------------------------------------------


def _plan_outputs(cfg: Config) -> list[tuple[str, str]]:
  """[(input, output)] after checking every input's header."""
  if not cfg.predict.input_pattern:
    raise ConfigError('predict.input_pattern: required for predict')
  if not cfg.predict.output_dir:
    raise ConfigError('predict.output_dir: required for predict')
  if os.path.exists(cfg.predict.output_dir) and not os.path.isdir(
      cfg.predict.output_dir):
    raise ConfigError(f'predict.output_dir: {cfg.predict.output_dir} is not '
                      'a folder')
  if cfg.model.spatial_dims != 3:
    raise ConfigError('model.spatial_dims: predict segments 3D volumes, got '
                      f'{cfg.model.spatial_dims}')
  files = input_files(cfg.predict.input_pattern)
  pairs, inputs, seen = [], {os.path.realpath(p) for p in files}, {}
  for path in files:
    check_input(path, cfg.num_channels)
    out = output_path(cfg.predict.output_dir, path)
    if out in seen:
      raise ValueError(f'{path}: same output name {os.path.basename(out)} as '
                       f'{seen[out]}')
    if os.path.realpath(out) in inputs:
      raise ValueError(f'{out}: is an input and would be overwritten; choose '
                       'another predict.output_dir')
    seen[out] = path
    pairs.append((path, out))
  return pairs


def predict_files(cfg: Config, checkpoint: str = 'latest') -> dict[str, Any]:
  """Segments every `predict.input_pattern` file with a checkpoint of
  model_dir ('latest' or a path; the predict mode).

  Inputs, dataset.json and the checkpoint are checked before the model is
  built. Each output is written atomically, so a bad file stops the run
  with the earlier outputs complete and nothing half-written.

  Returns {'step', 'output_dir', 'files': [{'input', 'output'}]}.
  """
  pairs = _plan_outputs(cfg)
  info = load_dataset_info(cfg)
  run_dir.find_checkpoint(cfg.model_dir, checkpoint)  # fail before building
  model, step = run_dir.restore_model(cfg, checkpoint)
  predict_fn = whole_volume.probabilities_fn(cfg, model)
  written = []
  for input_path, out in pairs:
    logging.info('predicting %s', input_path)
    predict_file(input_path, out, predict_fn, cfg, info)
    written.append({'input': input_path, 'output': out})
  return {'step': step, 'output_dir': cfg.predict.output_dir,
          'files': written}

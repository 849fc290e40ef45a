"""The predict mode: NIfTI volumes in, segmentations with their geometry out
(HDF5 files: `hdf5_io`, pytorch-3dunet's `_predictions.h5`).

```
input.nii.gz ──preprocess_for_inference (the converter's steps, read from
its dataset.json)──▶ stored grid ──whole_volume (sliding window, mirroring,
ensemble)──▶ probabilities ──segmentation──▶ labels ──restore_original──▶
input grid ──largest component (optional)──▶
<output_dir>/<input name>_seg.nii.gz with the input's affine and header
(+ <name>_probabilities.nii.gz or .h5, optional)
```

Each input file is one case: a 3D volume (one channel) or a 4D [X, Y, Z, C]
volume holding every channel; nnU-Net's `<case>_0000.nii.gz`, `_0001`, ...
files are one case's channels, written as `<case>_seg.nii.gz`
(`channel_files`). Softmax models write uint8 class indices
[X, Y, Z]; sigmoid (multi-label) models write uint8 masks [X, Y, Z, K]
(probability > 0.5), the same outputs as the exported SavedModel. A file
that cannot be read, or has the wrong channels, fails alone: the others
still run, and the run reports every failure at the end.

Non-finite voxels (NaN, +-inf) are replaced before any preprocessing by the
converters' `--nan_to_num` rule (`cases.replace_nonfinite`: NaN and -inf ->
the channel's smallest finite value, +inf -> its largest), with a one-line
warning naming the file and the count, also kept in the file's report entry
(`nonfinite_voxels`). A channel without any finite voxel fails that file.

Dataset-specific converter steps that need the label (LiTS's liver crop,
augmented crops) cannot be replayed: prediction covers the whole volume.

Quality control (`predict.quality_control`) compares each segmentation, on
the stored grid before it is mapped back, with the training cases of
dataset.json (`quality_control`): implausible ones get a warning line and
their flags in the file's report entry; the outputs stay as predicted.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Mapping, Optional, Sequence

import numpy as np
from scipy import ndimage
import tensorflow as tf
import tqdm

from unet3d import fileio
from unet3d.config import Config, ConfigError
from unet3d.inference import channel_files
from unet3d.inference import ensemble
from unet3d.inference import hdf5_io
from unet3d.inference import prediction_files as files
from unet3d.inference import predict_report as report
from unet3d.inference import preprocessing_info
from unet3d.inference import quality_control as qc
from unet3d.inference import restore
from unet3d.inference import slices
from unet3d.inference import whole_volume
from unet3d.inference.whole_volume import PredictFn
from unet3d.input import dataset_info
from unet3d.preprocess import cases
from unet3d.preprocess import dataset_json
from unet3d.preprocess import io
from unet3d.preprocess import preprocessing as pp

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


@dataclasses.dataclass
class Prediction:
  """One volume's prediction on its input grid.

  labels: uint8 [X, Y, Z] class indices, or [X, Y, Z, K] masks (sigmoid);
  probabilities: [X, Y, Z, K] (float16 from the slab-by-slab window, float32
  once restored to an input grid), or None when not asked for;
  quality_control: `qc.check_prediction`'s flags, None when not checked.
  """
  labels: np.ndarray
  probabilities: Optional[np.ndarray] = None
  quality_control: Optional[list[dict[str, Any]]] = None


def _restore_probabilities(probabilities: np.ndarray, record: Mapping,
                           activation: str) -> np.ndarray:
  """Probabilities back on the input grid (linear). Outside the stored box
  (the nonzero crop) softmax models get background 1, as nnU-Net."""
  restored = pp.restore_original(probabilities, record, order=1).astype(
      np.float32)
  if activation == 'softmax':
    missing = np.clip(1.0 - restored.sum(axis=-1), 0.0, 1.0)
    restored[..., 0] += missing
  return restored


def segment(image: np.ndarray, affine: np.ndarray,
            volume: whole_volume.VolumeFn, cfg: Config,
            dataset_info: Optional[Mapping[str, Any]],
            with_probabilities: bool = False,
            reference: Optional[qc.Reference] = None) -> Prediction:
  """The segmentation of one input volume on its own grid.

  Args:
    image: float32 [X, Y, Z, C] as read from the file.
    affine: its voxel-to-world matrix.
    volume: the sliding window, slab by slab (`whole_volume.segmenter`), or
      any image [*spatial, C] -> probabilities [*spatial, K].
    cfg: output activation and `predict.largest_component`.
    dataset_info: the converter's dataset.json, or None when the input is
      already preprocessed (`predict.preprocessing: none`).
    with_probabilities: also return the probabilities on the input grid.
    reference: the training ranges to check the labels against, on the
      stored grid (`qc.check_prediction`); None: no check.
  """
  activation = cfg.model.output_activation
  classes = largest_component_classes(cfg)
  stored, grid_affine, record = image, affine, None
  if dataset_info is not None:
    stored, grid_affine, record = preprocess_for_inference(image, affine,
                                                           dataset_info)
  labels, probabilities = whole_volume.segment_volume(
      volume, stored, activation, with_probabilities)
  del stored
  flags = None if reference is None else qc.check_prediction(
      labels, io.spacing_of(grid_affine), reference, classes)
  if record is not None:
    labels = pp.restore_original(labels, record, order=0)
    if with_probabilities:
      probabilities = _restore_probabilities(probabilities, record,
                                             activation)
  if classes:
    labels = keep_largest_component(labels, classes)
  return Prediction(labels, probabilities if with_probabilities else None,
                    flags)


def largest_component_classes(cfg: Config) -> list[int]:
  """The classes (or mask channels) `predict.largest_component` names."""
  setting = cfg.predict.largest_component
  if setting is True:
    first = 0 if cfg.model.output_activation == 'sigmoid' else 1
    return list(range(first, cfg.num_classes))
  return list(setting) if setting else []


def keep_largest_component(labels: np.ndarray, classes: Sequence[int]
                          ) -> np.ndarray:
  """Keeps the largest face-connected component of each class (index
  labels [X, Y, Z]: other components become background 0) or of each mask
  channel ([X, Y, Z, K]: set to 0), nnU-Net's post-processing."""
  labels = labels.copy()
  structure = ndimage.generate_binary_structure(3, 1)
  for c in classes:
    mask = labels[..., c] > 0 if labels.ndim == 4 else labels == c
    components, count = ndimage.label(mask, structure)
    if count < 2:
      continue
    sizes = np.bincount(components.reshape(-1))
    sizes[0] = 0
    removed = mask & (components != int(np.argmax(sizes)))
    if labels.ndim == 4:
      labels[..., c][removed] = 0
    else:
      labels[removed] = 0
  return labels


# ----------------------------------------------------------------------------
# One file
# ----------------------------------------------------------------------------


def read_input(input_path: str | Sequence[str], num_channels: int,
               expected: Optional[str] = None
              ) -> tuple[np.ndarray, np.ndarray, int]:
  """(float32 image [X, Y, Z, C] with every voxel finite, affine, how many
  non-finite voxels `cases.replace_nonfinite` replaced).

  input_path: one 3D/4D file, or a case's channel files (in order); the
  affine is the first file's. Raises a ValueError naming the file for the
  wrong channel count (`expected` words what the model takes) or a channel
  without any finite voxel.
  """
  paths = [input_path] if isinstance(input_path, str) else list(input_path)
  image, affine = cases.read_images(paths)
  if image.shape[-1] != num_channels:
    raise ValueError(f'{paths[0]}: {image.shape[-1]} channel(s), but the '
                     'model expects '
                     f'{expected or f"num_channels={num_channels}"}')
  try:
    image, count = cases.replace_nonfinite(image)
  except ValueError as e:
    raise ValueError(f'{paths[0]}: {e}; nothing to predict') from None
  return image, affine, count


def predict_file(input_path: str | Sequence[str], out_path: str,
                 predict_fn: PredictFn,
                 cfg: Config, dataset_info: Optional[Mapping[str, Any]],
                 volume: Optional[whole_volume.VolumeFn] = None,
                 probabilities_out: Optional[str] = None,
                 class_names: Sequence[str] = (),
                 notes: Optional[dict[str, Any]] = None,
                 reference: Optional[qc.Reference] = None) -> str:
  """Reads one volume, segments it, writes `out_path` (and the
  probabilities to `probabilities_out` when given); returns out_path.

  predict_fn: window batch -> probabilities; `volume` (the sliding window
  around it, built once for many files) is built here when not given.
  The probabilities are written first: a segmentation marks a finished file.
  input_path: one 3D/4D file, or a case's channel files (in order); the
  outputs take the first file's geometry.
  notes: when given, gets `nonfinite_voxels` (the count replaced, `read_input`)
  for an input that had any, and `quality_control` (the flags, [] when
  plausible) when `reference` (the training ranges) is given.
  """
  image, affine, nonfinite = read_input(
      input_path, slices.volume_channels(cfg, dataset_info),
      slices.expected_channels(cfg, dataset_info))
  if not isinstance(input_path, str):
    input_path = list(input_path)[0]
  if nonfinite and notes is not None:
    notes['nonfinite_voxels'] = nonfinite
  volume = volume or slices.volume_fn(cfg, predict_fn, dataset_info)
  prediction = segment(image, affine, volume, cfg, dataset_info,
                       with_probabilities=probabilities_out is not None,
                       reference=reference)
  _note_flags(notes, prediction)
  if probabilities_out is not None:
    names = list(class_names) or [f'class_{c}' for c in
                                  range(prediction.probabilities.shape[-1])]
    files.write_probabilities(probabilities_out, prediction.probabilities,
                        input_path, names)
  files.write_segmentation(out_path, prediction.labels, input_path)
  return out_path


def predict_hdf5_file(input_path: str, out_path: str,
                      volume: whole_volume.VolumeFn, cfg: Config,
                      info: Optional[Mapping[str, Any]],
                      with_probabilities: bool = False,
                      notes: Optional[dict[str, Any]] = None,
                      reference: Optional[qc.Reference] = None) -> str:
  """`predict_file` for an HDF5 input (pytorch-3dunet's layout, see
  `hdf5_io`): reads `predict.hdf5_dataset`, replaces non-finite voxels by
  the same rule, and writes the `predictions` (and `probabilities`)
  datasets to out_path; returns out_path. notes and reference: as there."""
  key = cfg.predict.hdf5_dataset
  hdf5_io.check_input(input_path, key, cfg.num_channels)
  image, attrs = hdf5_io.read_volume(input_path, key)
  try:
    image, nonfinite = cases.replace_nonfinite(image)
  except ValueError as e:
    raise ValueError(f'{input_path}: {e}; nothing to predict') from None
  if nonfinite and notes is not None:
    notes['nonfinite_voxels'] = nonfinite
  prediction = segment(image, hdf5_io.grid_affine(attrs, info), volume, cfg,
                       info, with_probabilities=with_probabilities,
                       reference=reference)
  _note_flags(notes, prediction)
  hdf5_io.write_prediction(out_path, prediction.labels,
                           prediction.probabilities, attrs)
  return out_path


def _note_flags(notes: Optional[dict[str, Any]], prediction: Prediction
               ) -> None:
  if notes is not None and prediction.quality_control is not None:
    notes['quality_control'] = prediction.quality_control


# ----------------------------------------------------------------------------
# The mode
# ----------------------------------------------------------------------------


def _plan_outputs(cfg: Config
                 ) -> list[tuple[channel_files.InputCase, str]]:
  """[(case, output)] of every input case (`channel_files`); the output
  names are checked (no two alike, none overwriting an input)."""
  if not cfg.predict.input_pattern:
    raise ConfigError('predict.input_pattern: required for predict (or '
                      '--input)')
  if not cfg.predict.output_dir:
    raise ConfigError('predict.output_dir: required for predict (or '
                      '--output_dir)')
  if fileio.exists(cfg.predict.output_dir) and not fileio.isdir(
      cfg.predict.output_dir):
    raise ConfigError(f'predict.output_dir: {cfg.predict.output_dir} is not '
                      'a folder')
  inputs = channel_files.input_cases(cfg.predict.input_pattern)
  pairs, seen = [], {}
  realpaths = {os.path.realpath(p) for case in inputs for p in case.files}
  for case in inputs:
    out = (hdf5_io.output_path(cfg.predict.output_dir, case.path)
           if hdf5_io.is_hdf5(case.path) else
           files.output_path(cfg.predict.output_dir, case.name))
    if out in seen:
      raise ValueError(f'{case.path}: same output name '
                       f'{os.path.basename(out)} as {seen[out]}')
    if os.path.realpath(out) in realpaths:
      raise ValueError(f'{out}: is an input and would be overwritten; choose '
                       'another predict.output_dir')
    seen[out] = case.path
    pairs.append((case, out))
  return pairs


def predict_files(cfg: Config, checkpoint: str = 'latest',
                  strategy: Optional[tf.distribute.Strategy] = None
                 ) -> dict[str, Any]:
  """Segments every `predict.input_pattern` file with a checkpoint of
  model_dir, or the `inference.ensemble` members ('latest', 'best' or a
  path; the predict mode). Window batches run under `strategy` (the
  default strategy when None: a run trained on a TPU predicts on a CPU).

  Every input's header is checked, and predict.output_dir is created and
  written to, before the model is built; dataset.json and the checkpoints
  must be sound. A file that cannot be read or has the
  wrong channels is reported on one line (`failed: <file>: <problem>` on
  stderr) and the others still run; outputs are written atomically. A
  progress bar with ETA runs on a terminal.

  Each segmentation is checked against the training fingerprint
  (`predict.quality_control`, `preprocessing_info.quality_reference`): a
  flagged file gets one `warning: <file>: implausible segmentation ...` line
  on stderr.

  Returns {'step', 'output_dir', 'files': [{'input', 'output',
  'quality_control': [flags] when checked}], 'failed': [{'input',
  'error'}], 'ensemble'}; `predict_report.format_summary` prints it and
  `predict_report.raise_for_failures` turns failures into a one-line error.
  """
  pairs = _plan_outputs(cfg)
  fileio.check_writable(cfg.predict.output_dir, 'predict.output_dir')
  info = preprocessing_info.load_dataset_info(cfg)
  reference = preprocessing_info.quality_reference(cfg, info)
  # One input's failure is the run's one error line; no live line as well.
  report_failure = (report.report_failure if len(pairs) > 1 else
                    lambda _: None)
  failed, runnable = [], []
  for case, out in pairs:
    try:
      if hdf5_io.is_hdf5(case.path):
        hdf5_io.check_input(case.path, cfg.predict.hdf5_dataset,
                            cfg.num_channels)
      else:
        channel_files.check_case(case, slices.volume_channels(cfg, info))
      runnable.append((case, out))
    except ValueError as e:
      failed.append({'input': case.path,
                     'error': report.one_line(e, case.path)})
      report_failure(failed[-1]['error'])
  planned = ensemble.members(cfg, checkpoint)  # fail before building
  written, step, members = [], None, None
  if runnable:
    strategy = strategy or tf.distribute.get_strategy()
    restored = restore.restore_for_inference(cfg, checkpoint, strategy,
                                             planned=planned)
    step, members = restored.step, restored.members
    volume = slices.volume_fn(cfg, restored.probabilities, info, strategy)
    kind = cfg.predict.save_probabilities
    names = dataset_info.class_names(
        [cfg.training_file_pattern, cfg.eval_file_pattern], cfg.num_classes)
    progress = tqdm.tqdm(runnable, desc='predict', unit='file', disable=None)
    for case, out in progress:
      input_path = case.path
      progress.set_postfix_str(os.path.basename(input_path))
      probabilities_out = (None if kind == 'none' else
                           files.probabilities_path(cfg.predict.output_dir,
                                                    case.name, kind))
      notes = {}
      try:
        if hdf5_io.is_hdf5(input_path):  # probabilities in the same file
          predict_hdf5_file(input_path, out, volume, cfg, info,
                            with_probabilities=bool(probabilities_out),
                            notes=notes, reference=reference)
          probabilities_out = out if probabilities_out else None
        else:
          predict_file(case.files, out, None, cfg, info, volume=volume,
                       probabilities_out=probabilities_out,
                       class_names=names or (), notes=notes,
                       reference=reference)
      except (ValueError, OSError, MemoryError,
              tf.errors.ResourceExhaustedError) as e:
        failed.append({'input': input_path,
                       'error': report.one_line(e, input_path)})
        report_failure(failed[-1]['error'])
        continue
      if notes.get('nonfinite_voxels'):
        report.report_warning(report.nonfinite_warning(
            input_path, notes['nonfinite_voxels']))
      if notes.get('quality_control'):
        report.report_warning(qc.warning_line(input_path,
                                              notes['quality_control']))
      entry = {'input': input_path, 'output': out, **notes}
      if probabilities_out:
        entry['probabilities'] = probabilities_out
      written.append(entry)
  order = {c.path: i for i, (c, _) in enumerate(pairs)}
  failed.sort(key=lambda f: order[f['input']])
  return {'step': step, 'output_dir': cfg.predict.output_dir,
          'files': written, 'failed': failed, 'ensemble': members}

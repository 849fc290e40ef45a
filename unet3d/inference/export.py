"""Exports a trained model (or an ensemble) as a TensorFlow SavedModel that
segments raw volumes of any size; serving needs only TensorFlow.

Signatures:

- `serving_default`: `image` float32 [X, Y, Z, C], one raw (not normalised)
  volume, channels last, any size. Inside the graph, as `--mode=predict`
  does on the stored grid:
  ```
  image ──crop to the nonzero box (when the converter cropped)──▶
  normalisation recorded in dataset.json (CT clip/mean/std, z-score in the
  nonzero mask, none) ──▶ Gaussian sliding window of input_image_size
  (inference.overlap, inference.mirror_axes; ensemble mean) ──▶ back into
  the full box
  ```
  Returns `probabilities` float32 [X, Y, Z, K] (outside the nonzero box:
  background 1 for softmax, 0 for sigmoid), and `classes` int32 [X, Y, Z]
  (argmax; 0 outside the box) or, for sigmoid models, `masks` uint8
  [X, Y, Z, K] (probability > 0.5), and `nonfinite_voxels` int32 []: how
  many NaN or inf voxels were replaced, first of all, by the converters'
  rule (NaN and -inf -> the channel's smallest finite value, +inf -> its
  largest), so a server can flag the volume. A channel with no finite
  voxel, another rank or another channel count fails with an
  InvalidArgumentError whose message starts with `image: `.
  Not in the graph: reorientation and resampling. The volume must be in
  the converter's stored voxel order (RAS when dataset.json's
  preprocessing.orientation is RAS) at the training spacing
  (export_info.json `spacing`).
- `patches`: `image` float32 [B, *spatial, C] already preprocessed, any
  size divisible by the model's stride; returns the model's own
  `probabilities` and `classes` / `masks` (no window), for callers that
  tile themselves.

Beside saved_model.pb: `export_info.json` (input channels, classes,
spacing, orientation, normalisation, patch size, window settings, the
signatures) and the run's `params.yaml`.
"""

from __future__ import annotations

from typing import Any, Mapping, Optional, Sequence, Union

import keras
import tensorflow as tf

from unet3d import config as config_lib
from unet3d import errors
from unet3d import fileio
from unet3d import run_dir
from unet3d.config import Config
from unet3d.inference import ensemble
from unet3d.inference import export_formats
from unet3d.inference import graph_preprocess
from unet3d.inference import preprocessing_info
from unet3d.inference import restore
from unet3d.inference import sliding_window
from unet3d.inference import whole_volume
from unet3d.input import dataset_info as dataset_info_lib
from unet3d.preprocess import cases
from unet3d.preprocess import dataset_json

EXPORT_INFO_FILE = 'export_info.json'


class _Serving(tf.Module):
  """The models and the two serving functions."""

  def __init__(self, models: Sequence[keras.Model], cfg: Config,
               plan: Optional[cases.Plan]):
    super().__init__()
    self.models = list(models)
    self._cfg = cfg
    # What the serving graph replays of the converter's preprocessing.
    self._crop_nonzero = bool(plan and plan.crop_nonzero)
    self._norms = tuple(plan.norms) if plan else ()
    self._activation = cfg.model.output_activation
    self._probabilities = whole_volume.probabilities_fn(cfg, self.models)
    self._window = sliding_window.WindowOptions.from_config(cfg)
    # Shapes unknown: the graph checks rank and channels itself and says
    # what it expected (graph_preprocess.check_image).
    volume = tf.TensorSpec(None, tf.float32, name='image')
    patches = tf.TensorSpec(None, tf.float32, name='image')
    self.serve = tf.function(self._serve, input_signature=[volume])
    self.serve_patches = tf.function(self._serve_patches,
                                     input_signature=[patches])

  def _outputs(self, probabilities):
    key = 'masks' if self._activation == 'sigmoid' else 'classes'
    return {'probabilities': probabilities,
            key: whole_volume.segmentation_tensor(
                probabilities, self._activation, class_dtype=tf.int32)}

  def _check(self, image, batch: bool):
    dims, channels = self._cfg.model.spatial_dims, self._cfg.num_channels
    layout = '[' + ', '.join(['B'] * batch + list('XYZ'[:dims]) +
                             [str(channels)]) + ']'
    return graph_preprocess.check_image(image, dims + 1 + batch, channels,
                                        layout)

  def _serve_patches(self, image):
    return self._outputs(self._probabilities(self._check(image, True)))

  def _serve(self, image):
    dims = self._cfg.model.spatial_dims
    image, nonfinite = graph_preprocess.replace_nonfinite(
        self._check(image, False))
    shape = tf.shape(image)
    if self._crop_nonzero:
      start, stop = graph_preprocess.nonzero_box(image)
    else:
      start, stop = tf.zeros([dims], tf.int32), shape[:dims]
    box = tf.slice(image, tf.concat([start, [0]], 0),
                   tf.concat([stop - start, [-1]], 0))
    if self._norms:
      box = graph_preprocess.normalize(box, self._norms)
    probabilities = sliding_window.sliding_window_inference(
        self._probabilities, box, self._window)
    # Back into the full volume: outside the box nothing was predicted.
    paddings = tf.concat([tf.stack([start, shape[:dims] - stop], 1),
                          [[0, 0]]], 0)
    classes = probabilities.shape[-1]
    probabilities = tf.pad(probabilities, paddings)
    if self._activation == 'softmax':
      inside = tf.pad(tf.ones(tf.shape(box)[:dims]), paddings[:dims])
      probabilities += ((1.0 - inside)[..., None] *
                        tf.one_hot(0, classes, dtype=tf.float32))
    outputs = self._outputs(tf.ensure_shape(probabilities,
                                            [None] * dims + [classes]))
    outputs['nonfinite_voxels'] = nonfinite
    return outputs


def export_info(cfg: Config, info: Optional[Mapping[str, Any]],
                steps: Sequence[int]) -> dict[str, Any]:
  """What a server needs to know, for export_info.json."""
  section = (info or {}).get('preprocessing') or {}
  resample = section.get('resample') or {}
  names = (dataset_info_lib.names_from(info, cfg.num_classes) or
           [f'class_{c}' for c in range(cfg.num_classes)])
  outputs = {'probabilities': 'float32 [X, Y, Z, K]'}
  if cfg.model.output_activation == 'sigmoid':
    outputs['masks'] = 'uint8 [X, Y, Z, K]'
  else:
    outputs['classes'] = 'int32 [X, Y, Z]'
  volume_outputs = {**outputs, 'nonfinite_voxels': (
      'int32 [], NaN or inf voxels replaced before preprocessing: '
      f'{cases.NONFINITE_RULE}; a channel without finite voxels is an '
      'InvalidArgument error')}
  return {
      'signatures': {
          'serving_default': {
              'inputs': {'image': f'float32 [X, Y, Z, {cfg.num_channels}], '
                                  'raw intensities, any size'},
              'outputs': volume_outputs},
          'patches': {
              'inputs': {'image': f'float32 [B, X, Y, Z, {cfg.num_channels}]'
                                  ', preprocessed, sizes divisible by the '
                                  'model stride'},
              'outputs': outputs}},
      'input_channels': cfg.num_channels,
      'modalities': (info or {}).get('modalities'),
      'num_classes': cfg.num_classes,
      'classes': names,
      'output_activation': cfg.model.output_activation,
      'spacing': resample.get('target_spacing'),
      'orientation': section.get('orientation'),
      'resampling': ('not in the graph: give volumes at `spacing` mm in the '
                     '`orientation` voxel order'),
      'crop_to_nonzero': bool(section.get('crop_to_nonzero', False)),
      'normalization': section.get('normalization'),
      'nonfinite_voxels': cases.NONFINITE_RULE,
      'patch_size': list(cfg.input_image_size),
      'overlap': cfg.inference.overlap,
      'weighting': cfg.inference.weighting,
      'mirror_axes': list(cfg.inference.mirror_axes),
      'windows_per_step': cfg.predict_batch_size,
      'step': steps[0] if len(steps) == 1 else None,
      'ensemble': list(cfg.inference.ensemble) or None,
      'tensorflow': tf.__version__,
  }


def export_saved_model(model: Union[keras.Model, Sequence[keras.Model]],
                       cfg: Config, export_dir: str, overwrite: bool = False,
                       dataset_info: Optional[Mapping[str, Any]] = None,
                       steps: Sequence[int] = ()) -> str:
  """Writes the SavedModel, export_info.json and params.yaml to export_dir.

  Args:
    model: the model, or an ensemble's models (probabilities averaged).
    cfg: window, activation and channel settings.
    export_dir: the folder to create (local or a TensorFlow filesystem).
    overwrite: replace an existing folder; otherwise it is an error.
    dataset_info: the converter's dataset.json, whose nonzero crop and
      normalisation go into the graph; None: the graph takes preprocessed
      volumes.
    steps: the checkpoint step of each model, for export_info.json.

  Written under a temporary name and renamed when complete. A failed write
  (read-only or full disk) is a one-line ValueError naming export_dir and
  the cause, and leaves nothing behind: not the temporary folder, nor the
  parent folders this export created.
  """
  if fileio.exists(export_dir):
    if not overwrite:
      raise ValueError(f'{export_dir}: export folder exists; remove it or '
                       'export to another folder')
    fileio.remove(export_dir)
  models = list(model) if isinstance(model, (list, tuple)) else [model]
  tmp = export_dir.rstrip('/') + '.tmp-incomplete'
  fileio.remove(tmp)
  module = _Serving(models, cfg, dataset_json.plan_from_dataset_info(
      dataset_info) if dataset_info is not None else None)
  created = _missing_parents(export_dir)
  try:
    tf.saved_model.save(module, tmp, signatures={
        'serving_default': module.serve, 'patches': module.serve_patches})
    fileio.write_text(fileio.join(tmp, run_dir.PARAMS_FILE),
                      config_lib.to_yaml(cfg))
    fileio.write_json(fileio.join(tmp, EXPORT_INFO_FILE),
                      export_info(cfg, dataset_info, steps))
    fileio.publish_dir(tmp, export_dir)
  except (OSError, tf.errors.OpError) as e:
    fileio.remove(tmp)
    for folder in created:  # innermost first; only when left empty
      if fileio.isdir(folder) and not fileio.listdir(folder):
        fileio.remove(folder)
    cause = ' '.join(errors.first_line(e).split())
    raise ValueError(f'{export_dir}: cannot write the export ({cause}); '
                     'nothing was kept') from None
  finally:
    fileio.remove(tmp)
  return export_dir


def _missing_parents(path: str) -> list[str]:
  """The folders above `path` that do not exist yet, innermost first."""
  missing = []
  parent = fileio.dirname(fileio.normpath(path))
  while parent and not fileio.exists(parent):
    missing.append(parent)
    up = fileio.dirname(parent)
    if up == parent:
      break
    parent = up
  return missing


def export_model(cfg: Config, checkpoint: str = 'latest',
                 export_dir: str | None = None) -> str:
  """Exports a checkpoint of cfg.model_dir, or an ensemble (the export
  mode), with the preprocessing of `predict.dataset_json` (or the
  dataset.json beside the training records; `predict.preprocessing: none`
  for a graph that takes preprocessed volumes).

  `export.format` onnx / openvino adds the converted `patches` model
  (export_formats). export_dir defaults to `model_dir/saved_model/<step>`
  (`model_dir/saved_model/ensemble` for an ensemble).
  """
  planned = ensemble.members(cfg, checkpoint)  # fail before building
  info = preprocessing_info.load_dataset_info(cfg)
  restored = restore.restore_for_inference(cfg, checkpoint, planned=planned)
  name = ('ensemble' if ensemble.is_ensemble(cfg) else
          str(restored.steps[0]))
  export_dir = export_dir or fileio.join(ensemble.home_dir(cfg),
                                         'saved_model', name)
  export_saved_model(restored.models, cfg, export_dir, overwrite=True,
                     dataset_info=info, steps=restored.steps)
  export_formats.write_formats(restored.models, cfg, export_dir)
  return export_dir


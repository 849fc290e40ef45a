"""ONNX and OpenVINO IR beside the SavedModel (`export.format`,
`--export_format`), for Intel Decathlon users and other runtimes.

```
models ──the `patches` computation: image [B, X, Y, Z, C] preprocessed ──▶
probabilities [B, X, Y, Z, K]──▶ tf2onnx ──▶ <export_dir>/model.onnx
                             └──▶ openvino.convert_model ──▶ model.xml/.bin
```

Only the `patches` signature converts: `serving_default`'s sliding window
writes each window into the output with TensorStridedSliceUpdate inside a
while loop, an op neither tf2onnx 1.17 nor OpenVINO 2026.4 converts. The
caller tiles the volume (or runs `unet3d.inference.sliding_window` with the
runtime as the window function) and normalises as export_info.json says.
Spatial sizes are free but must divide by the model's stride; the
probabilities are float32 (OpenVINO IR keeps float32 weights).

The converters are the optional `export` extra:
`pip install 'unet3d-tf[export]'` (tf2onnx, onnxruntime, openvino).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from typing import Any, Sequence

import keras
import tensorflow as tf

from unet3d import fileio
from unet3d.inference import whole_volume

FORMATS = ('saved_model', 'onnx', 'openvino')
ONNX_FILE = 'model.onnx'
OPENVINO_FILES = ('model.xml', 'model.bin')
ONNX_OPSET = 17
BLOCKED = ('serving_default (the sliding window) does not convert: its '
           'while loop writes windows with TensorStridedSliceUpdate, which '
           'tf2onnx and OpenVINO do not support')


def patch_function(models: Sequence[keras.Model], cfg) -> tf.function:
  """image float32 [B, *spatial, C] -> {'probabilities': float32
  [B, *spatial, K]}: the `patches` signature's probabilities (ensemble
  mean, mirroring as configured), for the converters."""
  probabilities = whole_volume.probabilities_fn(cfg, list(models))
  spec = tf.TensorSpec([None] * (cfg.model.spatial_dims + 1) +
                       [cfg.num_channels], tf.float32, name='image')
  return tf.function(lambda image: {'probabilities': probabilities(image)},
                     input_signature=[spec])


def _require(module: str, fmt: str):
  try:
    return __import__(module)
  except ImportError:
    raise ValueError(f"export.format: {fmt} needs the export extra (pip "
                     f"install 'unet3d-tf[export]'); {module} is not "
                     'installed') from None


def _publish(local_dir: str, names: Sequence[str], export_dir: str) -> None:
  for name in names:
    with fileio.published(fileio.join(export_dir, name)) as target:
      shutil.copyfile(os.path.join(local_dir, name), target)


def to_onnx(fn: tf.function, local_dir: str) -> dict[str, Any]:
  """Writes local_dir/model.onnx; returns its export_info entry."""
  tf2onnx = _require('tf2onnx', 'onnx')
  import tf2onnx.convert  # pylint: disable=g-import-not-at-top,redefined-outer-name
  tf2onnx.convert.from_function(
      fn, input_signature=fn.input_signature, opset=ONNX_OPSET,
      output_path=os.path.join(local_dir, ONNX_FILE))
  return {'files': [ONNX_FILE],
          'converter': f'tf2onnx {tf2onnx.__version__}, opset {ONNX_OPSET}'}


def to_openvino(fn: tf.function, local_dir: str) -> dict[str, Any]:
  """Writes local_dir/model.xml and .bin; returns its export_info entry."""
  ov = _require('openvino', 'openvino')
  model = ov.convert_model(fn.get_concrete_function())
  ov.save_model(model, os.path.join(local_dir, OPENVINO_FILES[0]),
                compress_to_fp16=False)
  return {'files': list(OPENVINO_FILES),
          'converter': f'openvino {ov.__version__}'}


def write_formats(models: Sequence[keras.Model], cfg,
                  export_dir: str) -> dict[str, Any]:
  """Converts the `patches` computation to `cfg.export.format` (nothing for
  saved_model) into export_dir, and records each file's signature in
  export_info.json under `formats`. Returns that section."""
  fmt = cfg.export.format
  if fmt == 'saved_model':
    return {}
  fn = patch_function(models, cfg)
  with tempfile.TemporaryDirectory() as local_dir:
    entry = (to_onnx if fmt == 'onnx' else to_openvino)(fn, local_dir)
    _publish(local_dir, entry['files'], export_dir)
  k, c = cfg.num_classes, cfg.num_channels
  entry.update({
      'signature': 'patches',
      'inputs': {'image': f'float32 [B, X, Y, Z, {c}], preprocessed, sizes '
                          'divisible by the model stride'},
      'outputs': {'probabilities': f'float32 [B, X, Y, Z, {k}]'},
      'not_converted': BLOCKED})
  info_path = fileio.join(export_dir, 'export_info.json')
  info = fileio.read_json(info_path)
  info['formats'] = {fmt: entry}
  fileio.write_json(info_path, info)
  return info['formats']

"""Exports a trained model as a TensorFlow SavedModel for serving.

The serving signature `serving_default` takes `image`: float32
[B, *spatial, C] of any spatial size divisible by the model's total stride,
already preprocessed like the training records, and returns
`probabilities` float32 [B, *spatial, K] (softmax or sigmoid as configured,
CGM-gated when the model has that head) and `classes` int32 [B, *spatial]
(argmax; for sigmoid models, the probabilities > 0.5 as uint8 masks in
`masks`).
"""

from __future__ import annotations

import keras
import tensorflow as tf

from unet3d import config as config_lib
from unet3d import fileio
from unet3d import run_dir
from unet3d.config import Config
from unet3d.models import heads


class _Serving(tf.Module):
  """A tf.Module holding the model and its serving function."""

  def __init__(self, model: keras.Model, cfg: Config):
    super().__init__()
    self.model = model
    self._activation = cfg.model.output_activation
    self._sigmoid = self._activation == 'sigmoid'
    spec = tf.TensorSpec([None] * (cfg.model.spatial_dims + 1) +
                         [cfg.num_channels], tf.float32, name='image')
    self.serve = tf.function(self._serve, input_signature=[spec])

  def _serve(self, image):
    logits = tf.cast(heads.inference_logits(self.model(image, training=False),
                                           self._activation), tf.float32)
    if self._sigmoid:
      probabilities = tf.sigmoid(logits)
      return {'probabilities': probabilities,
              'masks': tf.cast(probabilities > 0.5, tf.uint8)}
    return {'probabilities': tf.nn.softmax(logits),
            'classes': tf.argmax(logits, axis=-1, output_type=tf.int32)}


def export_saved_model(model: keras.Model, cfg: Config, export_dir: str,
                       overwrite: bool = False) -> str:
  """Writes the SavedModel (and the run's params.yaml) to export_dir.

  Written under a temporary name and renamed when complete.
  """
  if fileio.exists(export_dir):
    if not overwrite:
      raise ValueError(f'{export_dir}: export folder exists; remove it or '
                       'export to another folder')
    fileio.remove(export_dir)
  tmp = export_dir.rstrip('/') + '.tmp-incomplete'
  fileio.remove(tmp)
  module = _Serving(model, cfg)
  try:
    tf.saved_model.save(module, tmp,
                        signatures={'serving_default': module.serve})
    fileio.write_text(fileio.join(tmp, run_dir.PARAMS_FILE),
                      config_lib.to_yaml(cfg))
    fileio.publish_dir(tmp, export_dir)
  finally:
    fileio.remove(tmp)
  return export_dir


def export_model(cfg: Config, checkpoint: str = 'latest',
                 export_dir: str | None = None) -> str:
  """Exports a checkpoint of cfg.model_dir (the export mode).

  export_dir defaults to `model_dir/saved_model/<step>`.
  """
  run_dir.find_checkpoint(cfg.model_dir, checkpoint)
  model, step = run_dir.restore_model(cfg, checkpoint)
  export_dir = export_dir or fileio.join(cfg.model_dir, 'saved_model',
                                         str(step))
  return export_saved_model(model, cfg, export_dir, overwrite=True)

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

import os
import shutil

import keras
import tensorflow as tf

from unet3d import config as config_lib
from unet3d import models
from unet3d.config import Config


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
    logits = tf.cast(models.inference_logits(self.model(image, training=False),
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
  if os.path.exists(export_dir):
    if not overwrite:
      raise ValueError(f'{export_dir}: export folder exists; remove it or '
                       'export to another folder')
    shutil.rmtree(export_dir)
  tmp = export_dir.rstrip('/') + '.tmp-incomplete'
  shutil.rmtree(tmp, ignore_errors=True)
  module = _Serving(model, cfg)
  try:
    tf.saved_model.save(module, tmp,
                        signatures={'serving_default': module.serve})
    config_lib.save(cfg, os.path.join(tmp, 'params.yaml'))
    os.replace(tmp, export_dir)
  finally:
    shutil.rmtree(tmp, ignore_errors=True)
  return export_dir


def export_latest(cfg: Config, export_dir: str | None = None) -> str:
  """Exports the latest checkpoint of cfg.model_dir (the export mode).

  export_dir defaults to `model_dir/saved_model/<step>`.
  """
  from unet3d import distribute  # pylint: disable=g-import-not-at-top
  from unet3d.training import loop  # pylint: disable=g-import-not-at-top
  if not cfg.model_dir or not tf.train.latest_checkpoint(cfg.model_dir):
    raise config_lib.ConfigError(
        f'model_dir: no checkpoint in {cfg.model_dir!r} to export')
  state = loop.build_state(cfg, distribute.build_strategy(cfg),
                           with_optimizer=False)
  export_dir = export_dir or os.path.join(cfg.model_dir, 'saved_model',
                                          str(state.step))
  return export_saved_model(state.model, cfg, export_dir, overwrite=True)

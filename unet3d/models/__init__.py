"""The model zoo: one registry from `model.name` to a builder."""

from __future__ import annotations

import difflib

import keras
import tensorflow as tf

from unet3d.config import Config, ConfigError
from unet3d.models import unet

_REGISTRY = {
    'unet3d': unet.build_unet,
}
MODEL_NAMES = tuple(_REGISTRY)


def build_model(cfg: Config) -> keras.Model:
  """Builds the model named by `cfg.model.name`; outputs float32 logits."""
  name = cfg.model.name
  if name not in _REGISTRY:
    guess = difflib.get_close_matches(name, MODEL_NAMES, n=1)
    hint = f"; did you mean '{guess[0]}'?" if guess else ''
    raise ConfigError(f"model.name: unknown model '{name}'{hint}")
  return _REGISTRY[name](cfg)


def inference_logits(outputs):
  """The main head's logits; a CGM head, when present, gates them."""
  if not isinstance(outputs, dict):
    return outputs
  logits = outputs['logits']
  if 'classification' not in outputs:
    return logits
  present = tf.argmax(outputs['classification'], axis=-1) > 0
  rank = logits.shape.rank
  present = tf.reshape(present, [-1] + [1] * (rank - 1))
  num_classes = logits.shape[-1]
  background_only = tf.one_hot(tf.zeros(tf.shape(logits)[:-1], tf.int32),
                               num_classes, on_value=1e4, off_value=-1e4,
                               dtype=logits.dtype)
  return tf.where(present, logits, background_only)

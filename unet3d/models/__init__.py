"""The model zoo: one registry from `model.name` to a builder.

Every builder maps a config to a keras.Model on [B, *spatial, num_channels]
inputs of any spatial size divisible by the total stride. Outputs are float32
logits [B, *spatial, num_classes], or for multi-head models a dict:
  'logits':           the main full-resolution head
  'deep_supervision': the other heads, up-sampled to full resolution,
                      finest first
  'classification':   [B, 2] CGM logits (index 1: organ present), cgm only
"""

from __future__ import annotations

import difflib
import functools

import keras
import tensorflow as tf

from unet3d.config import Config, ConfigError, total_stride
from unet3d.models import unet
from unet3d.models import unet3plus

_REGISTRY = {
    'unet3d': unet.build_unet,
    'unet3plus': unet3plus.build_unet3plus,
    'unet3plus_deepsup': functools.partial(unet3plus.build_unet3plus,
                                           deep_supervision=True),
    'unet3plus_deepsup_cgm': functools.partial(unet3plus.build_unet3plus,
                                               deep_supervision=True,
                                               cgm=True),
}
MODEL_NAMES = tuple(_REGISTRY)

# A logit margin that decides softmax and sigmoid outright, yet is finite in
# float16 (max 65504).
_GATE_LOGIT = 1e4


def check_model_config(cfg: Config) -> None:
  """Raises ConfigError (one line naming the key) for configs no builder
  can honour."""
  name = cfg.model.name
  if name not in _REGISTRY:
    guess = difflib.get_close_matches(name, MODEL_NAMES, n=1)
    hint = f"; did you mean '{guess[0]}'?" if guess else ''
    raise ConfigError(f"model.name: unknown model '{name}'{hint} (expected "
                      f"one of {', '.join(MODEL_NAMES)})")
  if cfg.data_format != 'channels_last':
    raise ConfigError(f"data_format: only 'channels_last' is supported, got "
                      f'{cfg.data_format!r}')
  for key in ('num_classes', 'num_channels', 'num_base_filters', 'depth',
              'num_segmentation_levels'):
    if getattr(cfg, key) < 1:
      raise ConfigError(f'{key}: must be >= 1, got {getattr(cfg, key)}')
  if not 0.0 <= cfg.dropout_rate < 1.0:
    raise ConfigError(f'dropout_rate: must be in [0, 1), got '
                      f'{cfg.dropout_rate}')
  if cfg.model.downsampling not in ('maxpool', 'strided_conv'):
    raise ConfigError(f'model.downsampling: expected maxpool or strided_conv, '
                      f'got {cfg.model.downsampling!r}')
  if cfg.model.filters is not None and any(f < 1 for f in cfg.model.filters):
    raise ConfigError(f'model.filters: must be positive, got '
                      f'{cfg.model.filters}')
  stride = total_stride(cfg)
  levels = stride.bit_length()
  for key, sizes in (('input_image_size', cfg.input_image_size),
                     ('data.eval_image_size', cfg.data.eval_image_size)):
    if sizes is None:
      continue
    if len(sizes) != cfg.model.spatial_dims:
      raise ConfigError(f'{key}: expected {cfg.model.spatial_dims} sizes for '
                        f'model.spatial_dims={cfg.model.spatial_dims}, got '
                        f'{sizes}')
    if any(s < stride or s % stride for s in sizes):
      raise ConfigError(
          f'{key}: {sizes} is too small or not divisible for {levels} '
          f'levels of {name} (total stride {stride}); use multiples of '
          f'{stride} or fewer levels (depth / model.filters)')


def build_model(cfg: Config) -> keras.Model:
  """Builds the model named by `cfg.model.name`; outputs float32 logits."""
  check_model_config(cfg)
  return _REGISTRY[cfg.model.name](cfg)


def inference_logits(outputs, output_activation: str = 'softmax'):
  """The main head's logits [B, *spatial, C]; a CGM head gates them.

  Where the CGM argmax says "absent" (index 0), every voxel becomes
  background: with softmax, class 0 gets +1e4 and the others -1e4; with
  sigmoid (multi-label, no background channel) every channel gets -1e4.
  """
  if not isinstance(outputs, dict):
    return outputs
  logits = outputs['logits']
  if 'classification' not in outputs:
    return logits
  logits = tf.convert_to_tensor(logits)
  present = tf.argmax(outputs['classification'], axis=-1) > 0
  rank = logits.shape.rank
  present = tf.reshape(present, [-1] + [1] * (rank - 1))
  if output_activation == 'sigmoid':
    absent = tf.fill(tf.shape(logits), tf.cast(-_GATE_LOGIT, logits.dtype))
  else:
    absent = tf.one_hot(tf.zeros(tf.shape(logits)[:-1], tf.int32),
                        logits.shape[-1], on_value=_GATE_LOGIT,
                        off_value=-_GATE_LOGIT, dtype=logits.dtype)
  return tf.where(present, logits, absent)

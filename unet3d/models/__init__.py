"""The model zoo: `model.name` -> a builder, and every check of the model keys.

Every builder maps a validated config to a keras.Model on
[B, *spatial, num_channels] inputs of any spatial size divisible, axis by
axis, by `axis_strides`; its outputs follow `unet3d.models.heads`.

`check_model_config` is the one place where model keys are checked; config
validation calls it, so a bad model config fails before anything runs.
Functions here and in the builders take `cfg`, a `unet3d.config.Config`;
they do not import that module, because config validation imports this
registry.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import keras

from unet3d.errors import ConfigError, unknown_name
from unet3d.models import blocks
from unet3d.models import heads
from unet3d.models import levels
from unet3d.models import unet
from unet3d.models import unet3plus


class ModelEntry(NamedTuple):
  """A registered model: its family module (build, num_levels, check) and
  the builder's options."""
  family: Any
  options: dict
  description: str


MODELS = {
    'unet3d': ModelEntry(
        unet, {}, 'TF Model Garden 3D U-Net (also 2D); '
        'num_segmentation_levels > 1 adds deep supervision'),
    'unet3plus': ModelEntry(
        unet3plus, {}, 'UNet 3+ with full-scale skip connections'),
    'unet3plus_deepsup': ModelEntry(
        unet3plus, {'deep_supervision': True},
        'UNet 3+ with deep supervision on every decoder stage'),
    'unet3plus_deepsup_cgm': ModelEntry(
        unet3plus, {'deep_supervision': True, 'cgm': True},
        'UNet 3+ with deep supervision and the classification-guided module'),
}
MODEL_NAMES = tuple(MODELS)
SPATIAL_DIMS = (2, 3)

# Config keys that change a model's variables: a checkpoint restores only
# into a model built with the same values.
ARCHITECTURE_KEYS = (
    'num_channels', 'num_classes', 'num_base_filters', 'depth',
    'deconvolution', 'use_batch_norm', 'num_segmentation_levels',
    'model.name', 'model.spatial_dims', 'model.normalization',
    'model.num_groups', 'model.activation', 'model.residual',
    'model.downsampling', 'model.filters', 'model.max_filters',
    'model.pool_sizes', 'model.kernel_sizes', 'model.cat_channels',
    'model.output_activation')


def num_levels(cfg) -> int:
  """Resolution levels of the model, bottleneck included."""
  return MODELS[cfg.model.name].family.num_levels(cfg)


def axis_strides(cfg) -> list[int]:
  """The factor each spatial input size must divide by, per axis: the
  product of that axis' pool factors (2**(levels - 1) on every axis
  without model.pool_sizes)."""
  rank = cfg.model.spatial_dims
  pools = levels.pool_sizes(cfg, num_levels(cfg))
  return list(levels.cumulative(pools, rank)[-1])


def _check_sizes(cfg) -> None:
  dims = cfg.model.spatial_dims
  strides = axis_strides(cfg)
  for key, sizes in (('input_image_size', cfg.input_image_size),
                     ('data.eval_image_size', cfg.data.eval_image_size)):
    if sizes is None:
      continue
    if len(sizes) != dims:
      raise ConfigError(f'{key}: expected {dims} sizes for '
                        f'model.spatial_dims={dims}, got {sizes}')
    if any(s < 1 for s in sizes):
      raise ConfigError(f'{key}: sizes must be positive, got {sizes}')
    bad = [a for a, (s, t) in enumerate(zip(sizes, strides)) if s % t]
    if bad:
      raise ConfigError(_indivisible_message(cfg, key, sizes, strides,
                                             bad[0]))


def _indivisible_message(cfg, key: str, sizes: list[int],
                         strides: list[int], axis: int) -> str:
  """The one-line error for sizes that some axis' stride does not divide."""
  where = f'axis {axis}: {sizes[axis]} % {strides[axis]} != 0'
  of_levels = f'the {num_levels(cfg)} levels of {cfg.model.name}'
  if len(set(strides)) == 1:
    stride = strides[0]
    return (f'{key}: {sizes} is not divisible by {stride} (the stride '
            f'{stride} of {of_levels} on every axis; {where}); use multiples '
            f'of {stride} or fewer levels (depth / model.filters)')
  return (f'{key}: {sizes} is not divisible by the strides {strides} per '
          f'axis ({where}; {of_levels} with model.pool_sizes); use '
          f'multiples of {strides} per axis, fewer levels (depth / '
          f'model.filters) or other model.pool_sizes')


# Model keys -> the values the builders accept (None: the key may be empty).
MODEL_CHOICES = {
    'model.spatial_dims': SPATIAL_DIMS,
    'model.normalization': (None,) + blocks.NORMALIZATIONS,
    'model.activation': blocks.ACTIVATIONS,
    'model.downsampling': blocks.DOWNSAMPLINGS,
    'model.output_activation': heads.OUTPUT_ACTIVATIONS,
}


def check_model_config(cfg) -> None:
  """Raises ConfigError (one line naming the key) for any model key no
  builder can honour."""
  m = cfg.model
  if m.name not in MODELS:
    raise unknown_name('model.name', m.name, MODEL_NAMES, 'model')
  for key, allowed in MODEL_CHOICES.items():
    value = getattr(m, key.split('.', 1)[1])
    if value not in allowed:
      shown = ', '.join(str(a) for a in allowed if a is not None)
      raise ConfigError(f'{key}: expected one of {shown}, got {value!r}')
  if cfg.data_format != 'channels_last':
    raise ConfigError(
        f'data_format: {cfg.data_format} is not supported (TF\'s CPU conv '
        'kernels are channels_last); remove it or set channels_last — '
        'records and models are channels_last, and XLA/TPU picks its own '
        'layout')
  for key in ('num_classes', 'num_channels', 'num_base_filters', 'depth',
              'num_segmentation_levels'):
    if getattr(cfg, key) < 1:
      raise ConfigError(f'{key}: must be >= 1, got {getattr(cfg, key)}')
  if not 0.0 <= cfg.dropout_rate < 1.0:
    raise ConfigError(f'dropout_rate: must be in [0, 1), got '
                      f'{cfg.dropout_rate}')
  if m.filters is not None and any(f < 1 for f in m.filters):
    raise ConfigError(f'model.filters: must be positive, got {m.filters}')
  if m.max_filters is not None and m.max_filters < 1:
    raise ConfigError(f'model.max_filters: must be >= 1, got {m.max_filters}')
  if m.layer_order is not None:
    blocks.parse_layer_order(m.layer_order)
  if m.num_groups < 1:
    raise ConfigError(f'model.num_groups: must be >= 1, got {m.num_groups}')
  normalization = blocks.block_spec(cfg).normalization
  if m.sync_batch_norm and normalization != 'batch':
    raise ConfigError(f'model.sync_batch_norm: only batch norm is '
                      f'synchronised, the model uses {normalization!r}')
  MODELS[m.name].family.check_config(cfg)
  levels.check_config(cfg, num_levels(cfg))
  _check_sizes(cfg)


def build_model(cfg) -> keras.Model:
  """Builds the model named by `cfg.model.name`; outputs float32 logits."""
  check_model_config(cfg)
  entry = MODELS[cfg.model.name]
  return entry.family.build(cfg, **entry.options)

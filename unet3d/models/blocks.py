"""Rank-generic conv units: conv + norm + activation, plain or residual.

A conv "unit" is one or two conv + norm + act layers on channels-last
tensors [B, *spatial, C], the pytorch-3dunet "cr"/"cbr" idea in function
form:

  single unit:   convk -> norm -> act
  double unit:   convk -> norm -> act -> convk -> norm -> act
  residual unit: convk -> norm -> act -> convk -> norm, + shortcut -> act
                 (shortcut: identity, or conv1 + norm when shape changes)

k is the level's kernel size (3 by default). `BlockSpec.order` (from
`model.layer_order`, see `block_spec`) reorders conv, norm and activation
inside each conv layer; in a residual unit the last activation still comes
after the addition.

Units are composed from plain Keras layers, so a model stays an ordinary
functional graph. With `recompute` the same layers live inside a
`RecomputeUnit` layer whose forward pass is re-run during back-propagation
(tf.recompute_grad): activations inside the unit are not kept.

The models build with this module alone: it re-exports the spec
(`block_spec`), the rank-generic layers (`layers`) and the norm and
activation factories (`norm_act`).
"""

from __future__ import annotations

import dataclasses

import keras
import tensorflow as tf

from unet3d.models.block_spec import (ACTIVATIONS, DOWNSAMPLINGS,
                                      LAYER_ORDER_LETTERS,
                                      NORMALIZATIONS, BlockSpec, block_spec,
                                      parse_layer_order)
from unet3d.models.layers import (LinearUpsample, Size,
                                  compact_size, conv, conv_transpose,
                                  global_max_pool, max_pool, spatial_dropout,
                                  upsample_linear, upsample_nearest)
from unet3d.models.norm_act import FusedBatchNormalization, activation, norm


# Generic order letter -> layer key.
_KEYS = {'c': 'conv', 'n': 'norm', 'a': 'act', 'd': 'drop', 'D': 'drop'}


def _dropout(spec: BlockSpec, name: str):
  """layer_order's d (voxel dropout) or D (whole channels), or None."""
  if 'D' in spec.order:
    return spatial_dropout(spec.rank, spec.dropout_rate, name=name)
  if 'd' in spec.order:
    return keras.layers.Dropout(spec.dropout_rate, name=name)
  return None


def _sequence(spec: BlockSpec, num_convs: int) -> list[str]:
  """Layer keys in call order, e.g. ['conv1', 'norm1', 'act1', ...]; in a
  residual unit 'add' comes before the last activation."""
  keys = []
  for i in range(1, num_convs + 1):
    keys += [_KEYS[ch] + str(i) for ch in spec.order]
  if spec.residual and num_convs == 2:
    last_act = f'act{num_convs}'
    if last_act in keys:
      keys.remove(last_act)
      keys += ['add', last_act]
    else:
      keys.append('add')
  return keys


def _unit_layers(spec: BlockSpec, in_channels: int, filters: list[int],
                 strides: Size, name: str, kernel_size: Size = 3) -> dict:
  """Creates the layers of a unit with len(filters) (1 or 2) convs."""
  layers = {}
  norm_first = spec.order.index('n') < spec.order.index('c') if (
      'n' in spec.order) else False
  channels_in = in_channels
  for i, f in enumerate(filters, start=1):
    layers[f'conv{i}'] = conv(spec.rank, f, kernel_size,
                              strides if i == 1 else 1, name=f'{name}_conv{i}')
    if 'n' in spec.order:
      layers[f'norm{i}'] = norm(spec, channels_in if norm_first else f,
                                f'{name}_norm{i}')
    if 'a' in spec.order:
      layers[f'act{i}'] = activation(spec, f'{name}_act{i}')
    layers[f'drop{i}'] = _dropout(spec, f'{name}_drop{i}')
    channels_in = f
  if spec.residual and len(filters) == 2:
    if in_channels != filters[-1] or compact_size(strides) != 1:
      layers['proj'] = conv(spec.rank, filters[-1], 1, strides,
                            name=f'{name}_proj')
      if 'n' in spec.order:
        layers['proj_norm'] = norm(spec, filters[-1], f'{name}_proj_norm')
    layers['add'] = keras.layers.Add(name=f'{name}_add')
  layers['sequence'] = _sequence(spec, len(filters))
  return layers


def _apply_unit(layers: dict, x, training=None):
  """Runs a unit's layers on a symbolic or eager tensor.

  `training` reaches the norms explicitly: the backward-pass recomputation
  of RecomputeUnit runs outside Keras' call context, where batch norm would
  otherwise fall back to its inference mode.
  """
  shortcut = x
  for key in layers['sequence']:
    if key == 'add':
      if 'proj' in layers:
        shortcut = layers['proj'](shortcut)
        if layers.get('proj_norm') is not None:
          shortcut = layers['proj_norm'](shortcut, training=training)
      x = layers['add']([x, shortcut])
      continue
    layer = layers[key]
    if layer is None:  # normalization 'none'
      continue
    x = (layer(x, training=training) if key.startswith(('norm', 'drop'))
         else layer(x))
  return x


@keras.saving.register_keras_serializable(package='unet3d')
class RecomputeUnit(keras.layers.Layer):
  """A conv unit whose activations are recomputed in the backward pass.

  The forward pass runs inside tf.recompute_grad, so only the unit's input
  is kept for back-propagation. Batch-norm moving statistics are updated a
  second time by the recomputation (a small bias of the running averages).
  """

  def __init__(self, spec: dict, in_channels: int, filters: list[int],
               strides: Size = 1, kernel_size: Size = 3, **kwargs):
    super().__init__(**kwargs)
    self.spec = dict(spec)
    self.in_channels = in_channels
    self.filters = list(filters)
    self.strides = compact_size(strides)
    self.kernel_size = compact_size(kernel_size)
    self.unit = _unit_layers(BlockSpec(**self.spec), in_channels,
                             self.filters, self.strides, self.name,
                             self.kernel_size)

  def build(self, input_shape):
    shape = tuple(input_shape)
    for key in self.unit['sequence']:
      layer = self.unit.get(key)
      if layer is None or key == 'add':
        continue
      if not layer.built:
        layer.build(shape)
      shape = layer.compute_output_shape(shape)
    if 'proj' in self.unit:
      self.unit['proj'].build(tuple(input_shape))
      proj_shape = self.unit['proj'].compute_output_shape(tuple(input_shape))
      if self.unit.get('proj_norm') is not None:
        self.unit['proj_norm'].build(proj_shape)
    self.built = True

  def call(self, x, training=None):
    training = bool(training)

    @tf.recompute_grad
    def forward(t):
      return _apply_unit(self.unit, t, training=training)
    return forward(x)

  def compute_output_shape(self, input_shape):
    shape = tuple(input_shape)
    shape = self.unit['conv1'].compute_output_shape(shape)
    return shape[:-1] + (self.filters[-1],)

  def leaf_layers(self, input_shape) -> list:
    """[(layer, [input shapes], output_shape)] of the inner layers."""
    out, shape = [], tuple(input_shape)
    start = shape
    for key in self.unit['sequence']:
      layer = self.unit.get(key)
      if layer is None:
        continue
      if key == 'add':
        if 'proj' in self.unit:
          new = self.unit['proj'].compute_output_shape(start)
          out.append((self.unit['proj'], [start], new))
          if self.unit.get('proj_norm') is not None:
            out.append((self.unit['proj_norm'], [new], new))
        out.append((layer, [shape, shape], shape))
        continue
      new = layer.compute_output_shape(shape)
      out.append((layer, [shape], new))
      shape = new
    return out

  def get_config(self):
    config = super().get_config()
    config.update(spec=self.spec, in_channels=self.in_channels,
                  filters=self.filters, strides=self.strides,
                  kernel_size=self.kernel_size)
    return config


def conv_unit(x, spec: BlockSpec, filters: list[int], name: str,
              strides: Size = 1, kernel_size: Size = 3):
  """One (len(filters) == 1) or two conv + norm + act layers.

  Args:
    x: [B, *spatial, Cin].
    filters: output channels of each conv.
    strides: per-axis stride of the first conv (and of a residual unit's
      projection shortcut); 2: strided-conv down-sampling.
    kernel_size: per-axis kernel of every conv of the unit.
  Returns:
    [B, *spatial / strides, filters[-1]].
  """
  in_channels = x.shape[-1]
  if spec.recompute:
    return RecomputeUnit(dataclasses.asdict(spec), in_channels, filters,
                         strides, kernel_size, name=name)(x)
  return _apply_unit(_unit_layers(spec, in_channels, filters, strides, name,
                                  kernel_size), x)

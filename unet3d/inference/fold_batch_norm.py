"""Batch norm folded into the preceding convolution, for inference.

At inference a batch norm is a per-channel affine map with its moving
statistics, y = (x - mean) * gamma / sqrt(var + eps) + beta, so a
convolution that feeds it and nothing else can absorb it:

  kernel' = kernel * s,  bias' = (bias - mean) * s + beta,
  s = gamma / sqrt(var + eps)  (per output channel).

The clone's conv is tf.nn.convolution + tf.nn.bias_add, the pattern
grappler's remapper fuses with the following ReLU into one oneDNN
convolution (_FusedConv3D: Conv3D + BiasAdd + Relu), where the original runs
Conv3D, Add, a reshape, FusedBatchNormV3 and Relu as separate ops, each a
pass over the activations.

The clone shares every other layer (and weight) with the model; its
outputs equal the model's at inference (training=False) up to float32
rounding (~1e-6 relative). Only for inference: the folded layers have no
batch statistics to train.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
import tensorflow as tf


@keras.saving.register_keras_serializable(package='unet3d')
class FoldedConv(keras.layers.Layer):
  """A channels-last convolution with a bias and no activation: [B, *S, Cin]
  -> [B, *S', Cout] by tf.nn.convolution + tf.nn.bias_add (so grappler can
  fuse it with a following ReLU)."""

  def __init__(self, kernel_shape, strides, padding: str, dilations,
               **kwargs):
    super().__init__(**kwargs)
    self.kernel_shape = tuple(int(k) for k in kernel_shape)
    self.strides = tuple(int(s) for s in strides)
    self.padding = padding.upper()
    self.dilations = tuple(int(d) for d in dilations)
    self.kernel = self.add_weight(name='kernel', shape=self.kernel_shape,
                                  trainable=False)
    self.bias = self.add_weight(name='bias', shape=self.kernel_shape[-1:],
                                initializer='zeros', trainable=False)

  def call(self, x):
    y = tf.nn.convolution(x, self.kernel, strides=self.strides,
                          padding=self.padding, dilations=self.dilations)
    return tf.nn.bias_add(y, self.bias)

  def compute_output_spec(self, x):
    rank = len(self.kernel_shape) - 2
    spatial = []
    for i in range(rank):
      size = x.shape[1 + i]
      if size is None:
        spatial.append(None)
        continue
      span = (self.kernel_shape[i] - 1) * self.dilations[i] + 1
      if self.padding == 'SAME':
        spatial.append(-(-size // self.strides[i]))
      else:
        spatial.append((size - span) // self.strides[i] + 1)
    return keras.KerasTensor((x.shape[0], *spatial, self.kernel_shape[-1]),
                             dtype=self.compute_dtype)

  def get_config(self):
    return {**super().get_config(), 'kernel_shape': self.kernel_shape,
            'strides': self.strides, 'padding': self.padding,
            'dilations': self.dilations}


def _is_foldable_conv(layer: Any) -> bool:
  """A plain channels-last Conv (1-3D), no activation, no groups."""
  if type(layer) not in (keras.layers.Conv1D, keras.layers.Conv2D,
                         keras.layers.Conv3D):
    return False
  config = layer.get_config()
  return (config.get('activation') in (None, 'linear') and
          config.get('groups', 1) == 1 and
          config.get('data_format', 'channels_last') == 'channels_last')


def _is_foldable_norm(layer: Any) -> bool:
  if not isinstance(layer, keras.layers.BatchNormalization):
    return False
  axis = layer.axis if isinstance(layer.axis, int) else None
  return (axis in (-1, len(layer.input.shape) - 1) and not layer.renorm and
          not getattr(layer, 'synchronized', False))


def folded_weights(conv: keras.layers.Layer, norm: keras.layers.Layer
                  ) -> tuple[np.ndarray, np.ndarray]:
  """(kernel' [*k, Cin, Cout], bias' [Cout]) of conv followed by norm at
  inference (float64 arithmetic, returned as float32)."""
  kernel = np.asarray(conv.kernel, np.float64)
  bias = (np.asarray(conv.bias, np.float64) if conv.use_bias
          else np.zeros(kernel.shape[-1]))
  channels = kernel.shape[-1]
  gamma = (np.asarray(norm.gamma, np.float64) if norm.scale
           else np.ones(channels))
  beta = (np.asarray(norm.beta, np.float64) if norm.center
          else np.zeros(channels))
  mean = np.asarray(norm.moving_mean, np.float64)
  variance = np.asarray(norm.moving_variance, np.float64)
  scale = gamma / np.sqrt(variance + norm.epsilon)
  return ((kernel * scale).astype(np.float32),
          ((bias - mean) * scale + beta).astype(np.float32))


def _consumers(model: keras.Model) -> dict[int, list]:
  """{id(tensor): [layers that take it]} over the model's graph."""
  consumers = {}
  for nodes in model._nodes_by_depth.values():  # pylint: disable=protected-access
    for node in nodes:
      if node.operation is None or node.is_input:
        continue
      for t in node.input_tensors:
        consumers.setdefault(id(t), []).append(node.operation)
  return consumers


def _pairs(model: keras.Model) -> dict[int, keras.layers.Layer]:
  """{id(conv): the batch norm it alone feeds} for every foldable pair."""
  consumers = _consumers(model)
  outputs = {id(t) for t in model.outputs}
  pairs = {}
  for layer in model.layers:
    if not _is_foldable_conv(layer) or len(layer._inbound_nodes) != 1:  # pylint: disable=protected-access
      continue
    out = layer.output
    users = consumers.get(id(out), [])
    if (len(users) == 1 and _is_foldable_norm(users[0]) and
        id(out) not in outputs and len(users[0]._inbound_nodes) == 1):  # pylint: disable=protected-access
      pairs[id(layer)] = users[0]
  return pairs


def fold_batch_norm(model: keras.Model) -> keras.Model:
  """A functional clone of `model` for inference with every batch norm
  that follows a convolution (and only it) folded into that convolution.

  Other layers are shared with the model. A model that is not functional
  (subclassed), or has nothing to fold, is returned as it is.
  """
  if not hasattr(model, '_nodes_by_depth'):
    return model
  pairs = _pairs(model)
  if not pairs:
    return model
  folded_norms = {id(norm) for norm in pairs.values()}
  replacements = {}
  for layer in model.layers:
    if id(layer) not in pairs:
      continue
    norm = pairs[id(layer)]
    config = layer.get_config()
    conv = FoldedConv(layer.kernel.shape, config['strides'],
                      config['padding'], config['dilation_rate'],
                      name=f'{layer.name}_folded', dtype=layer.dtype_policy)
    kernel, bias = folded_weights(layer, norm)
    conv.kernel.assign(kernel)
    conv.bias.assign(bias)
    replacements[id(layer)] = conv

  def identity(x, *args, **kwargs):
    del args, kwargs  # training=...
    return x

  def operation(op):
    if id(op) in replacements:
      conv = replacements[id(op)]
      return lambda x, *a, **k: conv(x)
    if id(op) in folded_norms:
      return identity
    return op

  inputs = [keras.Input(batch_shape=t.shape, dtype=t.dtype, name=t.name)
            for t in model.inputs]
  outputs = model._run_through_graph(  # pylint: disable=protected-access
      inputs if len(inputs) > 1 else inputs[0], operation_fn=operation)
  return keras.Model(inputs if len(inputs) > 1 else inputs[0], outputs,
                     name=f'{model.name}_folded')

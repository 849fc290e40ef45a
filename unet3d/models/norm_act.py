"""Normalization and activation layers of a conv unit, chosen by its
`BlockSpec`: batch (one fused op), instance, group or no norm; relu, leaky
relu, elu or prelu.

All work on channels-last tensors [B, *spatial, C], over the channel axis.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from unet3d.errors import ConfigError
from unet3d.models.block_spec import BlockSpec

@keras.saving.register_keras_serializable(package='unet3d')
class FusedBatchNormalization(keras.layers.BatchNormalization):
  """keras.layers.BatchNormalization computed by one FusedBatchNormV3 op.

  Keras 3 expresses batch norm as tf.nn.moments + tf.nn.batch_normalization:
  on a 5D tensor that is ~20 small ops forward and ~17 backward per layer.
  FusedBatchNormV3 does it in one kernel each way, and with oneDNN on a 4D
  NHWC input it runs oneDNN's batch norm; on 5D it falls back to a slower
  generic kernel, so channels-last 5D input [B, D, H, W, C] is viewed as
  [B, D*H, W, C] (the statistics are per channel either way).

  Same weights, checkpoint layout, momentum and epsilon as the base class;
  the moving variance is updated with the biased batch variance, as Keras
  does. Masks, renorm and synchronized BN, other axes and ranks go through
  the base class.
  """

  def call(self, inputs, training=None, mask=None):
    rank = inputs.shape.rank
    if (mask is not None or self.renorm or self.synchronized or
        rank not in (4, 5) or self.axis not in (-1, rank - 1) or
        not self.scale or not self.center):
      return super().call(inputs, training=training, mask=mask)
    x = tf.cast(inputs, tf.float32)
    shape = tf.shape(x)
    if rank == 5:
      x = tf.reshape(x, [shape[0], shape[1] * shape[2], shape[3], shape[4]])
    gamma = tf.cast(self.gamma, tf.float32)
    beta = tf.cast(self.beta, tf.float32)
    if training and self.trainable:
      y, mean, variance, _, _, _ = tf.raw_ops.FusedBatchNormV3(
          x=x, scale=gamma, offset=beta, mean=tf.zeros([0]),
          variance=tf.zeros([0]), epsilon=self.epsilon, data_format='NHWC',
          is_training=True)
      # The op returns the Bessel-corrected variance; Keras averages the
      # biased one.
      n = tf.cast(tf.size(x) // tf.shape(x)[-1], tf.float32)
      variance = variance * ((n - 1.0) / n)
      self.moving_mean.assign(self.moving_mean * self.momentum +
                              mean * (1.0 - self.momentum))
      self.moving_variance.assign(self.moving_variance * self.momentum +
                                  variance * (1.0 - self.momentum))
    else:
      y, _, _, _, _, _ = tf.raw_ops.FusedBatchNormV3(
          x=x, scale=gamma, offset=beta,
          mean=tf.cast(self.moving_mean, tf.float32),
          variance=tf.cast(self.moving_variance, tf.float32),
          epsilon=self.epsilon, data_format='NHWC', is_training=False)
    if rank == 5:
      y = tf.reshape(y, shape)
    return tf.cast(y, self.compute_dtype)


def norm(spec: BlockSpec, channels: int, name: str):
  """The normalisation layer over the channel axis (-1), or None.

  Group norm uses min(num_groups, channels) groups; instance norm is group
  norm with one group per channel. Batch norm with `spec.sync_batch_norm`
  all-reduces its batch statistics across replicas in training (outside a
  multi-replica strategy it is plain batch norm).
  """
  if spec.normalization == 'none':
    return None
  if spec.normalization == 'batch':
    # The Model Garden normalised axis 1 of channels-last data; -1 is right.
    return FusedBatchNormalization(
        axis=-1, synchronized=spec.sync_batch_norm, name=name)
  if spec.normalization == 'instance':
    return keras.layers.GroupNormalization(groups=-1, name=name)
  groups = min(spec.num_groups, channels)
  if channels % groups:
    raise ConfigError(f'model.num_groups: {spec.num_groups} groups do not '
                      f'divide the {channels} channels of layer {name}')
  return keras.layers.GroupNormalization(groups=groups, name=name)


def activation(spec: BlockSpec, name: str) -> keras.layers.Layer:
  if spec.activation == 'relu':
    return keras.layers.ReLU(name=name)
  if spec.activation == 'leaky_relu':
    return keras.layers.LeakyReLU(negative_slope=spec.leaky_relu_alpha,
                                  name=name)
  if spec.activation == 'elu':
    return keras.layers.ELU(name=name)
  # One slope per channel, starting at PyTorch's 0.25.
  return keras.layers.PReLU(
      alpha_initializer=keras.initializers.Constant(0.25),
      shared_axes=list(range(1, spec.rank + 1)), name=name)

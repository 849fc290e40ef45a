"""Rank-generic layers: conv, transposed conv, pooling, nearest and linear
up-sampling, spatial dropout.

Every function takes `rank` (2 or 3) and works on channels-last tensors
[B, *spatial, C]. Sizes, strides and factors (`Size`) are one int for every
spatial axis or a tuple with one per axis (anisotropic levels).
"""

from __future__ import annotations

from typing import Optional, Sequence, Union

import keras
import tensorflow as tf

# One int for every spatial axis, or one int per spatial axis.
Size = Union[int, Sequence[int]]


def compact_size(size: Size) -> Union[int, tuple[int, ...]]:
  """An int, or a tuple of per-axis ints that differ: a uniform size keeps
  the int spelling that saved layer configs have always had."""
  if isinstance(size, int):
    return size
  size = tuple(int(v) for v in size)
  return size[0] if len(set(size)) == 1 else size


def axis_sizes(size: Size, rank: int) -> tuple[int, ...]:
  """The per-axis ints of `size` for `rank` spatial axes."""
  if isinstance(size, int):
    return (size,) * rank
  if len(size) != rank:
    raise ValueError(f'{tuple(size)}: expected {rank} sizes, one per '
                     'spatial axis')
  return tuple(size)


def conv(rank: int, filters: int, kernel_size: Size, strides: Size = 1,
         name: Optional[str] = None, dtype=None) -> keras.layers.Layer:
  """Conv2D/Conv3D, 'same' padding, with bias (as the Model Garden)."""
  cls = {2: keras.layers.Conv2D, 3: keras.layers.Conv3D}[rank]
  return cls(filters, kernel_size, strides=strides, padding='same', name=name,
             dtype=dtype)


def conv_transpose(rank: int, filters: int, factor: Size = 2,
                   name: Optional[str] = None):
  """Transposed conv with kernel = strides = factor: multiplies each
  spatial size by its axis' factor (2: doubles every size)."""
  cls = {2: keras.layers.Conv2DTranspose, 3: keras.layers.Conv3DTranspose}
  return cls[rank](filters, factor, strides=factor, name=name)


def max_pool(rank: int, size: Size, name: Optional[str] = None):
  """Max-pool with strides = size: divides each spatial size by its axis'
  factor."""
  cls = {2: keras.layers.MaxPool2D, 3: keras.layers.MaxPool3D}[rank]
  dtype = None
  if (rank == 3 and
      keras.mixed_precision.global_policy().compute_dtype == 'float16' and
      not tf.config.list_physical_devices('GPU')):
    # TF has no float16 MaxPool3D kernel on CPU: pool in float32 there.
    dtype = 'float32'
  return cls(size, name=name, dtype=dtype)


def upsample_nearest(rank: int, size: Size, name: Optional[str] = None):
  """Repeats each voxel `size` times along each axis."""
  cls = {2: keras.layers.UpSampling2D, 3: keras.layers.UpSampling3D}[rank]
  return cls(size, name=name)


def spatial_dropout(rank: int, rate: float, name: Optional[str] = None):
  """Drops whole channels (feature maps), as nnU-Net's Dropout3d."""
  cls = {2: keras.layers.SpatialDropout2D, 3: keras.layers.SpatialDropout3D}
  return cls[rank](rate, name=name)


def global_max_pool(rank: int, name: Optional[str] = None, dtype=None):
  cls = {2: keras.layers.GlobalMaxPool2D, 3: keras.layers.GlobalMaxPool3D}
  return cls[rank](name=name, dtype=dtype)


def _linear_axis(x, axis: int, factor: int):
  """Linear interpolation along `axis` by an integer factor, half-pixel
  centres with edge clamping (tf.image.resize 'bilinear' per axis)."""
  n = tf.shape(x)[axis]
  coords = (tf.cast(tf.range(n * factor), tf.float32) + 0.5) / factor - 0.5
  coords = tf.maximum(coords, 0.0)
  lo = tf.cast(tf.floor(coords), tf.int32)
  hi = tf.minimum(lo + 1, n - 1)
  w = coords - tf.cast(lo, tf.float32)
  shape = [1] * x.shape.rank
  shape[axis] = -1
  w = tf.cast(tf.reshape(w, shape), x.dtype)
  lo_v = tf.gather(x, lo, axis=axis)
  hi_v = tf.gather(x, hi, axis=axis)
  return lo_v + w * (hi_v - lo_v)


@keras.saving.register_keras_serializable(package='unet3d')
class LinearUpsample(keras.layers.Layer):
  """Bi/trilinear up-sampling by integer factors, one per spatial axis or
  one for all.

  [B, *spatial, C] -> [B, *(spatial * factor), C]. Keras has no trilinear
  UpSampling3D; this matches tf.image.resize(method='bilinear') per axis.
  Axes with factor 1 are left as they are.
  """

  def __init__(self, factor: Size, **kwargs):
    super().__init__(**kwargs)
    # An int for a uniform factor: the saved config of every model built
    # before per-axis factors.
    self.factor = compact_size(factor)

  def axis_factors(self, rank: int) -> tuple[int, ...]:
    """The factor of each of `rank` spatial axes."""
    return axis_sizes(self.factor, rank)

  def call(self, x):
    factors = self.axis_factors(x.shape.rank - 2)
    for axis, factor in enumerate(factors, start=1):
      if factor > 1:
        x = _linear_axis(x, axis, factor)
    return x

  def compute_output_shape(self, input_shape):
    factors = self.axis_factors(len(input_shape) - 2)
    return ((input_shape[0],) +
            tuple(None if s is None else s * f
                  for s, f in zip(input_shape[1:-1], factors)) +
            (input_shape[-1],))

  def get_config(self):
    config = super().get_config()
    config.update(factor=self.factor)
    return config


def upsample_linear(x, factor: Size, name: str, dtype=None):
  """`x` up-sampled by LinearUpsample(factor); `x` itself when every factor
  is 1."""
  if compact_size(factor) == 1:
    return x
  return LinearUpsample(factor, name=name, dtype=dtype)(x)

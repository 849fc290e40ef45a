"""The converter's nonzero crop and intensity normalisation as TensorFlow
ops, for the SavedModel's serving graph (no Python from this project at
serving time).

They mirror `unet3d.preprocess.preprocessing.nonzero_bbox` and `normalize`
on one volume [X, Y, Z, C]; tests compare them. Reorientation and
resampling stay outside the graph: a served volume must already be in the
stored voxel order at the training spacing (see `unet3d.inference.export`).
"""

from __future__ import annotations

from typing import Sequence

import tensorflow as tf

from unet3d.preprocess import preprocessing as pp


def nonzero_box(image: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
  """int32 (start [n], stop [n]) of the smallest box holding every voxel
  where any channel is nonzero; the whole extent when there is none.

  image: [*spatial, C].
  """
  ndim = image.shape.rank - 1
  mask = tf.reduce_any(tf.not_equal(image, 0), axis=-1)
  shape = tf.shape(mask, out_type=tf.int32)
  starts, stops = [], []
  for axis in range(ndim):
    others = [a for a in range(ndim) if a != axis]
    hits = tf.cast(tf.where(tf.reduce_any(mask, axis=others))[:, 0],
                   tf.int32)
    found = tf.size(hits) > 0
    first = tf.reduce_min(tf.concat([hits, [shape[axis]]], 0))
    last = tf.reduce_max(tf.concat([hits, [-1]], 0))
    starts.append(tf.where(found, first, 0))
    stops.append(tf.where(found, last + 1, shape[axis]))
  return tf.stack(starts), tf.stack(stops)


def _zscore(channel: tf.Tensor, mask) -> tf.Tensor:
  """(x - mean) / max(std, 1e-8) with statistics in float64 over the mask
  (all voxels when None, or when the mask is empty); 0 outside the mask."""
  values = tf.cast(channel, tf.float64)
  if mask is None:
    inside = tf.reshape(values, [-1])
  else:
    inside = tf.boolean_mask(values, mask)
    inside = tf.cond(tf.size(inside) > 0, lambda: inside,
                     lambda: tf.reshape(values, [-1]))
  mean = tf.reduce_mean(inside)
  std = tf.math.reduce_std(inside)
  out = tf.cast((tf.cast(channel, tf.float32) - tf.cast(mean, tf.float32)) /
                tf.cast(tf.maximum(std, 1e-8), tf.float32), tf.float32)
  if mask is not None:
    out = tf.where(mask, out, tf.zeros_like(out))
  return out


def normalize(image: tf.Tensor, norms: Sequence[pp.ChannelNorm]
             ) -> tf.Tensor:
  """float32 [*spatial, C]: each channel normalised by its ChannelNorm.

  ct: (clip(x, clip_low, clip_high) - mean) / max(std, 1e-8) with the
  dataset's values; zscore: this volume's statistics (within its nonzero
  mask, any channel nonzero, when `nonzero_mask`); none: unchanged.
  """
  if image.shape[-1] is not None and image.shape[-1] != len(norms):
    raise ValueError(f'{len(norms)} channel normalisations for '
                     f'{image.shape[-1]} channels')
  image = tf.cast(image, tf.float32)
  mask = tf.reduce_any(tf.not_equal(image, 0), axis=-1)
  channels = []
  for c, norm in enumerate(norms):
    channel = image[..., c]
    if norm.scheme == 'ct':
      if norm.mean is None:
        raise ValueError('CT normalisation: parameters not resolved')
      out = (tf.clip_by_value(channel, norm.clip_low, norm.clip_high) -
             norm.mean) / max(norm.std, 1e-8)
    elif norm.scheme == 'zscore':
      out = _zscore(channel, mask if norm.nonzero_mask else None)
    elif norm.scheme == 'none':
      out = channel
    else:
      raise ValueError(f'normalisation scheme {norm.scheme!r}: expected ct, '
                       'zscore or none')
    channels.append(out)
  return tf.stack(channels, axis=-1)


def check_image(image: tf.Tensor, rank: int, channels: int,
                layout: str) -> tf.Tensor:
  """`image` with its static shape [None] * (rank - 1) + [channels], after
  an in-graph check that fails with InvalidArgumentError
  `image: expected float32 <layout> (rank <rank>, <channels> channel(s)),
  got shape [...]` for any other rank or channel count.

  image: float32 of any shape (a signature of unknown shape, so that the
  check, not TensorFlow's shape matching, words the error).
  """
  shape = tf.shape(image, out_type=tf.int64)
  ok = tf.logical_and(tf.equal(tf.rank(image), rank),
                      tf.reduce_all(tf.equal(shape[-1:], channels)))
  message = tf.strings.format(
      f'image: expected float32 {layout} (rank {rank}, {channels} '
      'channel(s)), got shape {}', shape, summarize=-1)
  check = tf.debugging.Assert(ok, [message])
  with tf.control_dependencies([check]):
    image = tf.reshape(image, tf.shape(image))
  # Static only: an ensure_shape op could fail before the check does.
  image.set_shape([None] * (rank - 1) + [channels])
  return image


def replace_nonfinite(image: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
  """(image with its non-finite voxels replaced, int32 count replaced), as
  `unet3d.preprocess.cases.replace_nonfinite`: per channel, NaN and -inf
  become the channel's smallest finite value and +inf its largest. A
  channel without any finite voxel fails with InvalidArgumentError
  `image: channel(s) [..] have no finite voxel (all NaN or inf)`.

  image: float32 [*spatial, C].
  """
  spatial = list(range(image.shape.rank - 1))
  finite = tf.math.is_finite(image)
  has_finite = tf.reduce_any(finite, axis=spatial)
  empty = tf.where(tf.logical_not(has_finite))[:, 0]
  check = tf.debugging.Assert(tf.reduce_all(has_finite), [tf.strings.format(
      'image: channel(s) {} have no finite voxel (all NaN or inf)', empty,
      summarize=-1)])
  inf = tf.constant(float('inf'), image.dtype)
  low = tf.reduce_min(tf.where(finite, image, inf), axis=spatial)
  high = tf.reduce_max(tf.where(finite, image, -inf), axis=spatial)
  with tf.control_dependencies([check]):
    replaced = tf.where(finite, image,
                        tf.where(tf.equal(image, inf), high, low))
  count = tf.reduce_sum(tf.cast(tf.logical_not(finite), tf.int64))
  return replaced, tf.cast(tf.minimum(count, tf.int32.max), tf.int32)

"""Sliding-window segmentation slab by slab: memory bounded by the volume,
not by the volume times the classes.

The whole-volume window (`sliding_window`) keeps float32 probabilities
[*S, K] for every voxel until the last window is added. Predict and eval
only want labels, so here the windows are taken a row at a time along the
volume's longest axis (the slab axis `a`), and only the planes the current
row touches are held at full class depth:

```
image [*S, C] ──pad each axis to >= patch──▶ row starts along axis a
  (nnU-Net placement, the same windows as the whole volume)
  for each row start s (ascending):
    pending (the earlier rows' sums over planes [s, s_prev + P)) ──zero-pad
    to P planes──▶ float32 slab [.., P, .., K] ──the row's windows added in
    place (`sliding_window.accumulate_batches`: the same TF loop, weighting,
    mirroring, strategy)──▶ planes [s, s_next) are final: / weight sum ──▶
    uint8 labels (argmax, or > 0.5 for sigmoid; in the graph, 4 planes at a
    time), float16 probabilities if asked ──▶ the host copies them into the
    volume's labels; planes [s_next, s + P) become the next pending (kept
    in variables, so the old pending is freed once it is in the new slab)
```

Every voxel receives the same window outputs in the same order as in the
whole volume when the slab axis is axis 0 (the rows are the whole volume's
outer loop), so the labels are bitwise equal; on another slab axis the
additions into a voxel come in another order, and the probabilities differ
by float32 rounding (a few ulp; a label can only change at an exact tie).

Memory: the image, the labels (1 byte a voxel), and at most one slab of
P planes plus the pending planes (P - step, half a slab at overlap 0.5) in
float32 with K + 1 channels (`slab_bytes`): 1.5 P / S_a of the whole-volume
accumulator, 96 / 512 for 64^3 windows on a 512-long axis. Probabilities,
when asked for, are float16 [*S, K] (half the whole-volume float32),
allocated once the first row tells K.
"""

from __future__ import annotations

import dataclasses
import itertools
from typing import Optional

import numpy as np
import tensorflow as tf

from unet3d.inference import sliding_window
from unet3d.inference import window_placement
from unet3d.inference.sliding_window import PredictFn, WindowOptions

# Finished planes turned into labels at once: bounds the float32
# temporary of the division.
_PLANES_PER_CHUNK = 4


@dataclasses.dataclass
class Segmentation:
  """labels: uint8 [*S] class indices (softmax) or [*S, K] masks (sigmoid);
  probabilities: float16 [*S, K], or None when not asked for."""
  labels: np.ndarray
  probabilities: Optional[np.ndarray] = None


def slab_axis(spatial_shape) -> int:
  """The longest spatial axis (the first of equals): the fewest voxels per
  plane, so the smallest slab."""
  return int(np.argmax(np.asarray(spatial_shape)))


def _row_corners(padded_shape, options: WindowOptions, axis: int
                ) -> tuple[list[int], np.ndarray]:
  """(row starts along `axis`, int32 [M, n] corners of one row with 0 on
  `axis`, the other axes in the whole volume's order: last axis
  fastest)."""
  starts = [window_placement.window_starts(s, p, options.overlap)
            for s, p in zip(padded_shape, options.patch_size)]
  rows = starts[axis]
  starts[axis] = [0]
  corners = np.asarray(list(itertools.product(*starts)), np.int32)
  return rows, corners


def _planes(axis: int, ndim: int, begin: int, end: int) -> tuple:
  """The index of planes [begin, end) along axis."""
  return (slice(None),) * axis + (slice(begin, end),) + (slice(None),) * (
      ndim - axis - 1)


class SlabSegmenter:
  """image [*spatial, C] -> `Segmentation`, slab by slab along the longest
  axis (see the module docstring). Build once for many volumes: the row
  step is one `tf.function`, traced once."""

  def __init__(self, predict_fn: PredictFn, options: WindowOptions,
               num_channels: int, activation: str,
               strategy: Optional[tf.distribute.Strategy] = None):
    if activation not in ('softmax', 'sigmoid'):
      raise ValueError(f"activation: expected 'softmax' or 'sigmoid', got "
                       f'{activation!r}')
    if strategy is None and not sliding_window.runs_on_device(predict_fn):
      predict_fn = sliding_window.on_host(predict_fn)
    self.options = options
    self.activation = activation
    self._pending = _Pending()
    self._row = _make_row_fn(predict_fn, options, int(num_channels),
                             activation, self._pending, strategy)

  def __call__(self, image, with_probabilities: bool = False
              ) -> Segmentation:
    options = self.options
    ndim = len(options.patch_size)
    image = np.asarray(image, np.float32)
    if image.ndim != ndim + 1:
      raise ValueError(f'image: expected [*spatial, C] with {ndim} spatial '
                       f'axes, got shape {image.shape}')
    spatial = image.shape[:ndim]
    padded = _pad_to_patch(image, options)
    axis = slab_axis(padded.shape[:ndim])
    rows, corners = _row_corners(padded.shape[:ndim], options, axis)
    patch = options.patch_size[axis]
    pending_shape = list(padded.shape[:ndim])
    pending_shape[axis] = 0
    # No planes and no classes yet: the first row learns K from the model.
    self._pending.reset(pending_shape)
    corners = tf.constant(corners)
    labels = probabilities = None
    for r, start in enumerate(rows):
      end = rows[r + 1] if r + 1 < len(rows) else padded.shape[axis]
      finished, finished_p, classes = self._row(
          padded[_planes(axis, ndim + 1, start, start + patch)], corners,
          axis, end - start, with_probabilities)
      if labels is None:
        labels, probabilities = self._outputs(spatial, int(classes),
                                              with_probabilities)
      # Planes [start, end) cropped to the volume (padding dropped).
      count = min(end, spatial[axis]) - start
      if count <= 0:
        continue
      crop = tuple(slice(0, count if i == axis else s)
                   for i, s in enumerate(spatial))
      out = _planes(axis, ndim, start, start + count)
      labels[out] = finished.numpy()[crop]
      if probabilities is not None:
        probabilities[out] = finished_p.numpy()[crop]
    self._pending.reset([0] * ndim)
    return Segmentation(labels, probabilities)

  def _outputs(self, spatial: tuple[int, ...], classes: int,
               with_probabilities: bool
              ) -> tuple[np.ndarray, Optional[np.ndarray]]:
    """Empty uint8 labels [*S] (softmax) or [*S, K] (sigmoid), and float16
    probabilities [*S, K] when asked for."""
    mask_shape = (classes,) if self.activation == 'sigmoid' else ()
    labels = np.empty(spatial + mask_shape, np.uint8)
    probabilities = (np.empty(spatial + (classes,), np.float16)
                     if with_probabilities else None)
    return labels, probabilities


def _pad_to_patch(image: np.ndarray, options: WindowOptions) -> np.ndarray:
  """image padded at each axis's end with pad_value to at least the patch
  (the image itself, not a copy, when it is large enough)."""
  ndim = len(options.patch_size)
  extra = [max(p - s, 0) for s, p in zip(image.shape[:ndim],
                                         options.patch_size)]
  if not any(extra):
    return image
  return np.pad(image, [(0, e) for e in extra] + [(0, 0)],
                constant_values=options.pad_value)


class _Pending:
  """The planes that the next rows still add to, kept in two variables of
  any shape between row calls: sums [*S'_a=m, K] and weights [*S'_a=m].

  In variables, not passed in and out: an argument stays alive until the
  call returns, so the old pending, the new slab and the new pending would
  all be alive at once; a variable lets the row drop the old pending as
  soon as it is in the slab.
  """

  def __init__(self):
    self.sums = tf.Variable(tf.zeros([0], tf.float32), trainable=False,
                            shape=tf.TensorShape(None))
    self.weights = tf.Variable(tf.zeros([0], tf.float32), trainable=False,
                               shape=tf.TensorShape(None))

  def reset(self, shape) -> None:
    """No planes (0 along the slab axis in `shape`) and no classes."""
    self.sums.assign(tf.zeros(list(shape) + [0], tf.float32))
    self.weights.assign(tf.zeros(shape, tf.float32))


def _make_row_fn(predict_fn: PredictFn, options: WindowOptions,
                 num_channels: int, activation: str, pending: _Pending,
                 strategy: Optional[tf.distribute.Strategy]):
  """A tf.function (rows [*S'_a=P, C], corners int32 [M, n], axis, step,
  with_probabilities) -> (uint8 labels [*S'_a=step] (sigmoid: [.., K]),
  float16 probabilities [*S'_a=step, K] (no voxels unless asked), K).

  The row's slab is `pending` zero-padded to P planes along the slab axis
  plus the weighted outputs of the row's windows at corners (0 on the slab
  axis). Its planes [0, step) are final: divided by their weight sum and
  turned into labels, as the whole volume does; planes [step, P) become
  the new pending (a copy). Only the labels leave the function, so the
  slab is freed inside it. The first row's pending has no planes and no
  classes: K comes from the model's outputs.
  """
  ndim = len(options.patch_size)
  weights = tf.constant(window_placement.importance_map(
      options.patch_size, options.weighting, options.sigma_scale))
  specs = [tf.TensorSpec([None] * ndim + [num_channels], tf.float32),
           tf.TensorSpec([None, ndim], tf.int32),
           tf.TensorSpec([], tf.int32), tf.TensorSpec([], tf.int32),
           tf.TensorSpec([], tf.bool)]

  @tf.function(input_signature=specs, autograph=False)
  def row(rows, corners, axis, step, with_probabilities):
    predict_batch = sliding_window.batch_predictor(predict_fn, rows, corners,
                                                   options, strategy)
    # The first batch outside the loop: it tells the number of classes.
    outputs, count = predict_batch(tf.constant(0))
    classes = tf.shape(outputs)[-1]
    slab_shape = tf.shape(rows)[:ndim]
    old_sums = pending.sums.read_value()
    old_weights = pending.weights.read_value()
    paddings = tf.stack([tf.zeros([ndim], tf.int32),
                         slab_shape - tf.shape(old_weights)], 1)
    # A new buffer of one slab: the loops below update it in place.
    weight_sum = tf.pad(old_weights, paddings)
    accumulated = tf.pad(old_sums, tf.concat(
        [paddings, [[0, classes - tf.shape(old_sums)[-1]]]], 0))
    # The old pending is in the slab now: let it go.
    with tf.control_dependencies([weight_sum, accumulated]):
      pending.sums.assign(tf.zeros([0], tf.float32))
      pending.weights.assign(tf.zeros([0], tf.float32))
    accumulated = tf.reshape(accumulated, tf.concat(
        [slab_shape[:-1], [slab_shape[-1] * classes]], 0))
    accumulated, weight_sum = sliding_window.add_windows(
        accumulated, weight_sum, outputs, corners[:count], weights)
    accumulated, weight_sum = sliding_window.accumulate_batches(
        predict_batch, corners, weights, accumulated, weight_sum, first=count)
    accumulated = tf.reshape(accumulated,
                             tf.concat([slab_shape, [classes]], 0))
    labels, probabilities = _finish(accumulated, weight_sum, axis, step,
                                    activation, with_probabilities)
    on_axis = tf.one_hot(axis, ndim, dtype=tf.int32)
    begin = step * on_axis
    size = slab_shape - begin
    # After the labels: at most one slab and the pending half alive.
    # DeepCopy: a slice along the first axis would share the slab's buffer.
    with tf.control_dependencies([labels, probabilities]):
      sums = tf.raw_ops.DeepCopy(x=tf.slice(
          accumulated, tf.concat([begin, [0]], 0),
          tf.concat([size, [-1]], 0)))
      weights_left = tf.raw_ops.DeepCopy(x=tf.slice(weight_sum, begin, size))
    pending.sums.assign(sums)
    pending.weights.assign(weights_left)
    return labels, probabilities, classes

  return row


def _finish(sums: tf.Tensor, weight_sum: tf.Tensor, axis: tf.Tensor,
            count: tf.Tensor, activation: str, with_probabilities: tf.Tensor
           ) -> tuple[tf.Tensor, tf.Tensor]:
  """(uint8 labels, float16 probabilities or an empty tensor) of the
  finished planes [0, count) along axis of sums [*s, K] / weight_sum [*s]:
  argmax (the first of equal maxima, as numpy) or > 0.5, as
  `whole_volume.segmentation`. A few planes at a time, so the division's
  float32 temporary stays small."""
  ndim = weight_sum.shape.rank
  on_axis = tf.one_hot(axis, ndim, dtype=tf.int32)
  shape = tf.shape(weight_sum) * (1 - on_axis) + count * on_axis
  classes = tf.shape(sums)[-1]
  sigmoid = activation == 'sigmoid'
  labels = tf.zeros(tf.concat([shape, [classes]], 0) if sigmoid else shape,
                    tf.uint8)
  halves = tf.zeros(tf.concat([shape, [classes]], 0) * tf.cast(
      with_probabilities, tf.int32), tf.float16)
  ones = tf.ones([ndim + 1], tf.int32)

  def body(first, labels, halves):
    size = shape * (1 - on_axis) + tf.minimum(_PLANES_PER_CHUNK,
                                              count - first) * on_axis
    begin = first * on_axis
    begin_k = tf.concat([begin, [0]], 0)
    size_k = tf.concat([size, [classes]], 0)
    p = (tf.slice(sums, begin_k, size_k) /
         tf.slice(weight_sum, begin, size)[..., None])
    if sigmoid:
      new = tf.cast(p > 0.5, tf.uint8)
      labels = tf.raw_ops.TensorStridedSliceUpdate(
          input=labels, begin=begin_k, end=begin_k + size_k, strides=ones,
          value=new)
    else:
      new = tf.cast(tf.argmax(p, axis=-1, output_type=tf.int32), tf.uint8)
      labels = tf.raw_ops.TensorStridedSliceUpdate(
          input=labels, begin=begin, end=begin + size, strides=ones[1:],
          value=new)
    halves = tf.cond(
        with_probabilities,
        lambda: tf.raw_ops.TensorStridedSliceUpdate(
            input=halves, begin=begin_k, end=begin_k + size_k, strides=ones,
            value=tf.cast(p, tf.float16)),
        lambda: halves)
    return first + _PLANES_PER_CHUNK, labels, halves

  _, labels, halves = tf.while_loop(
      lambda first, *_: first < count, body, (0, labels, halves),
      parallel_iterations=1)
  return labels, halves


def slab_bytes(spatial_shape, options: WindowOptions, num_classes: int
              ) -> int:
  """Bytes of the float32 slab and pending planes at their largest: the
  part of the peak that grows with the classes."""
  axis = slab_axis([max(s, p) for s, p in zip(spatial_shape,
                                                options.patch_size)])
  plane = int(np.prod([max(s, p) for i, (s, p) in enumerate(
      zip(spatial_shape, options.patch_size)) if i != axis]))
  patch = options.patch_size[axis]
  step = window_placement.step_size(patch, options.overlap)
  return 4 * (num_classes + 1) * plane * (patch + patch - min(step, patch))

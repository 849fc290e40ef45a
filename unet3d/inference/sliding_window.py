"""Sliding-window inference over whole volumes, with Gaussian importance
weights and test-time mirroring: the one function that eval (whole_volume
mode), predict and the exported SavedModel share.

The loop is TensorFlow ops on the image's dynamic shape, so the same code
runs eagerly, inside any `tf.function`, and in a SavedModel signature whose
input is [*spatial, C] of unknown size:

```
image [*S, C] ──pad each axis to >= patch (pad_value)──▶ window corners [N, n]
  (nnU-Net placement per axis, computed from tf.shape)
  tf.while_loop over batches of `batch_size` windows:
    tf.slice the windows ──▶ predict_fn (each flip of mirror_axes, flipped
    back and averaged; split over a tf.distribute strategy's replicas when
    one is given) ──▶ × importance map ──▶ added in place into float32
    accumulators [*S', K] and [*S']
  ──▶ accumulated / weight sum ──crop the padding──▶ float32 [*S, K]
```

Eval and predict want labels, not probabilities: they run the same loop
slab by slab (`slab_aggregation`), holding a slab of planes at full class
depth instead of the whole volume.

The static settings (window, overlap, batch, weighting, mirroring) are one
`WindowOptions` value, checked when built; `WindowOptions.from_config(cfg)`
gives a run's.

Memory: besides the image, the loop holds the two accumulators (the
volume's probabilities once, plus 1/K of that for the weights) and one batch
of windows; the accumulator is updated in place and the division reuses its
buffer.

Where `predict_fn` runs:
- device path (TF ops): a `tf.function` or Keras model, any call inside a
  `tf.function`, or any call with a `strategy`;
- host path: any other callable is called with numpy batches through
  `tf.numpy_function` and may return numpy (tests, non-TF models). The
  placement, weighting, mirroring and accumulation are the same code.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Optional, Sequence

import keras
import numpy as np
import tensorflow as tf

from unet3d.config import Config
from unet3d.inference import window_placement

# batch [b, *patch, C] -> per-voxel outputs [b, *patch, K] (probabilities).
PredictFn = Callable[[Any], Any]


def mirrored(predict_fn: PredictFn, mirror_axes: Sequence[int], ndim: int
            ) -> Callable[[tf.Tensor], tf.Tensor]:
  """Test-time mirroring of a batch model: batch [b, *spatial, C] ->
  float32 [b, *spatial, K], the mean over every flip of mirror_axes of
  flip(predict_fn(flip(batch))). Without axes, predict_fn cast to float32.
  """
  flips = window_placement.mirror_flips(mirror_axes, ndim)

  def predict(batch):
    total = None
    for axes in flips:
      flip = [a + 1 for a in axes]
      # One flip after the other: in a graph the passes are independent,
      # and running them at once would hold every pass's activations.
      with tf.control_dependencies([] if total is None else [total]):
        x = tf.reverse(batch, flip) if flip else tf.identity(batch)
      y = tf.cast(predict_fn(x), tf.float32)
      y = tf.reverse(y, flip) if flip else y
      total = y if total is None else total + y
    return total / float(len(flips)) if len(flips) > 1 else total

  return predict


def distributed(predict_fn: Callable[[tf.Tensor], tf.Tensor],
                strategy: tf.distribute.Strategy
               ) -> Callable[[tf.Tensor, Any], tf.Tensor]:
  """(batch [B, ...], count) -> predict_fn of the first `count` rows,
  computed by `strategy.run` on every replica and gathered in order.

  B must be a multiple of num_replicas_in_sync; each replica gets an equal
  share (rows past `count` are padding, dropped afterwards). Call inside a
  `tf.function`; build predict_fn's model under `strategy.scope()`.
  """
  replicas = strategy.num_replicas_in_sync

  def run(batch, count):
    per_replica = (tf.cast(count, tf.int32) + replicas - 1) // replicas

    def replica_slice(context):
      start = context.replica_id_in_sync_group * per_replica
      return batch[start:start + per_replica]

    inputs = strategy.experimental_distribute_values_from_function(
        replica_slice)
    outputs = strategy.run(predict_fn, args=(inputs,))
    return strategy.gather(outputs, axis=0)[:count]

  return run


# ----------------------------------------------------------------------------
# The settings
# ----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class WindowOptions:
  """The static settings of the sliding window, checked when built.

  patch_size: the window, one size per spatial axis (voxels).
  overlap: fraction of a window shared with its neighbour, in [0, 1) (at
    least: windows are spread evenly so that the last ends at the edge).
  batch_size: windows per predict_fn call; with a strategy, windows per
    step, rounded up to a multiple of num_replicas_in_sync.
  weighting: 'gaussian' (sigma = sigma_scale * patch per axis, max 1,
    positive floor) or 'constant'.
  mirror_axes: spatial axes (0-based) for test-time mirroring: each of the
    2^len subsets is flipped, predicted and flipped back, and the outputs
    averaged. () for none, (0, 1, 2) as nnU-Net.
  pad_value: image value where the volume is smaller than the patch.
  sigma_scale: the Gaussian's sigma as a fraction of the patch size.
  """
  patch_size: tuple[int, ...]
  overlap: float = 0.5
  batch_size: int = 1
  weighting: str = 'gaussian'
  mirror_axes: tuple[int, ...] = ()
  pad_value: float = 0.0
  sigma_scale: float = 0.125

  def __post_init__(self):
    patch_size = tuple(int(p) for p in self.patch_size)
    if not patch_size or any(p < 1 for p in patch_size):
      raise ValueError(f'patch_size: expected positive sizes, got '
                       f'{patch_size}')
    if int(self.batch_size) < 1:
      raise ValueError(f'batch_size: must be >= 1, got {self.batch_size}')
    window_placement.importance_map(patch_size, self.weighting)
    mirror_axes = tuple(int(a) for a in self.mirror_axes)
    window_placement.mirror_flips(mirror_axes, len(patch_size))
    window_placement.step_size(patch_size[0], self.overlap)
    # Normalised types: hashable, and ints where the loop needs them.
    object.__setattr__(self, 'patch_size', patch_size)
    object.__setattr__(self, 'mirror_axes', mirror_axes)
    object.__setattr__(self, 'batch_size', int(self.batch_size))

  @classmethod
  def from_config(cls, cfg: Config) -> WindowOptions:
    """The window of cfg: `input_image_size`, `inference.overlap`,
    `inference.weighting`, `inference.mirror_axes`, `predict_batch_size`
    windows per step."""
    return cls(tuple(cfg.input_image_size), overlap=cfg.inference.overlap,
               batch_size=cfg.predict_batch_size,
               weighting=cfg.inference.weighting,
               mirror_axes=tuple(cfg.inference.mirror_axes))


def _check_arguments(options: WindowOptions,
                     strategy: Optional[tf.distribute.Strategy]) -> None:
  if not isinstance(options, WindowOptions):
    raise ValueError(f'options: expected a WindowOptions, got '
                     f'{type(options).__name__}')
  if strategy is not None and not isinstance(strategy,
                                             tf.distribute.Strategy):
    raise ValueError(f'strategy: expected a tf.distribute.Strategy, got '
                     f'{type(strategy).__name__}')


def _check_rank(image_shape: tf.TensorShape, patch_size: tuple[int, ...]
               ) -> None:
  if image_shape.rank is not None and image_shape.rank != len(patch_size) + 1:
    raise ValueError(f'patch_size: expected {image_shape.rank - 1} sizes for '
                     f'an image of shape {tuple(image_shape)} ([*spatial, C]), '
                     f'got {patch_size}')


# ----------------------------------------------------------------------------
# The loop, step by step
# ----------------------------------------------------------------------------


def _pad_to_patch(image: tf.Tensor, options: WindowOptions
                 ) -> tuple[tf.Tensor, tf.Tensor]:
  """(image [*S', C] padded at each axis's end with pad_value to at least
  the patch, S' int32 [n]); the image itself when it is large enough."""
  ndim = len(options.patch_size)
  spatial = tf.shape(image)[:ndim]
  padded_shape = tf.maximum(spatial, options.patch_size)

  def pad():
    paddings = tf.stack([tf.zeros([ndim + 1], tf.int32),
                         tf.concat([padded_shape - spatial, [0]], 0)], 1)
    return tf.pad(image, paddings, constant_values=options.pad_value)

  in_channels = image.shape[-1]
  padded = tf.cond(tf.reduce_any(padded_shape > spatial), pad,
                   lambda: tf.identity(image))
  # Dynamic paddings lose the static channel count; predict_fn's input spec
  # wants it.
  return tf.ensure_shape(padded, [None] * ndim + [in_channels]), padded_shape


def batch_predictor(predict_fn: PredictFn, image: tf.Tensor,
                     corners: tf.Tensor, options: WindowOptions,
                     strategy: Optional[tf.distribute.Strategy]
                    ) -> Callable[[Any], tuple[tf.Tensor, tf.Tensor]]:
  """first -> (float32 [count, *patch, K], count): the (mirrored) outputs
  of windows first .. first + count - 1 of image [*S', C] at corners
  [N, n], count = min(batch, N - first); split over the strategy's
  replicas when one is given."""
  patch_size = options.patch_size
  predict = mirrored(predict_fn, options.mirror_axes, len(patch_size))
  num_windows = tf.shape(corners)[0]
  in_channels = image.shape[-1]
  replicas = strategy.num_replicas_in_sync if strategy is not None else 1
  # Windows sliced per batch: batch_size rounded up to a multiple of the
  # replicas, so each replica gets the same static share.
  slots = -(-options.batch_size // replicas) * replicas
  run_distributed = (distributed(predict, strategy) if strategy is not None
                     else None)

  def predict_batch(first):
    count = tf.minimum(slots, num_windows - first)
    last = num_windows - 1
    # Slots past the last window repeat it; their outputs are dropped.
    windows = tf.stack([
        tf.slice(image, tf.concat([corners[tf.minimum(first + i, last)], [0]],
                                  0), list(patch_size) + [-1])
        for i in range(slots)])
    windows = tf.ensure_shape(windows, [slots, *patch_size, in_channels])
    if run_distributed is None:
      return predict(windows[:count]), count
    return run_distributed(windows, count), count

  return predict_batch


def _zero_buffers(padded_shape: tf.Tensor, classes: tf.Tensor
                 ) -> tuple[tf.Tensor, tf.Tensor]:
  """float32 zeros: the accumulator [*S'[:-1], S'[-1] * K] (the last
  spatial axis merged with the classes, see `add_windows`) and the weight
  sum [*S']."""
  accumulated = tf.zeros(tf.concat(
      [padded_shape[:-1], [padded_shape[-1] * classes]], 0), tf.float32)
  return accumulated, tf.zeros(padded_shape, tf.float32)


def add_windows(accumulated: tf.Tensor, weight_sum: tf.Tensor,
                 outputs: tf.Tensor, corners: tf.Tensor, weights: tf.Tensor
                ) -> tuple[tf.Tensor, tf.Tensor]:
  """Adds weights * outputs [count, *patch, K] of the windows at corners
  [count, n] into the accumulator and weights [*patch] into weight_sum, in
  place (a tf.while_loop over the windows, one at a time).

  `accumulated` is [*S'[:-1], S'[-1] * K]: the last spatial axis merged with
  the classes, so a window is a rank-n block of contiguous rows (the
  strided-slice update is ~30% faster on CPU than on [*S', K]).
  """
  patch_size = tuple(weights.shape)
  ndim = len(patch_size)
  count, classes = tf.shape(outputs)[0], tf.shape(outputs)[-1]
  outputs = outputs * weights[None, ..., None]
  outputs = tf.reshape(outputs, tf.concat(
      [[count], tf.constant(patch_size[:-1], tf.int32, [ndim - 1]),
       [patch_size[-1] * classes]], 0))
  ones = tf.ones([ndim], tf.int32)
  scale_last = tf.concat([tf.ones([ndim - 1], tf.int32), [classes]], 0)

  def body(j, accumulated, weight_sum):
    begin = corners[j]
    begin_k = begin * scale_last
    size_k = tf.shape(outputs)[1:]
    # The loop variable's buffer is forwarded to the update: in place.
    current = tf.slice(accumulated, begin_k, size_k)
    accumulated = tf.raw_ops.TensorStridedSliceUpdate(
        input=accumulated, begin=begin_k, end=begin_k + size_k,
        strides=ones, value=current + outputs[j])
    current = tf.slice(weight_sum, begin, patch_size)
    weight_sum = tf.raw_ops.TensorStridedSliceUpdate(
        input=weight_sum, begin=begin, end=begin + list(patch_size),
        strides=ones, value=current + weights)
    return j + 1, accumulated, weight_sum

  _, accumulated, weight_sum = tf.while_loop(
      lambda j, *_: j < count, body, (0, accumulated, weight_sum),
      parallel_iterations=1)
  return accumulated, weight_sum


def accumulate_batches(predict_batch: Callable[[Any], tuple[tf.Tensor,
                                                              tf.Tensor]],
                       corners: tf.Tensor, weights: tf.Tensor,
                       accumulated: tf.Tensor, weight_sum: tf.Tensor,
                       first: Any = 0) -> tuple[tf.Tensor, tf.Tensor]:
  """Adds the weighted outputs of windows first .. N - 1 at corners [N, n]
  into the accumulator [*S'[:-1], S'[-1] * K] and weight_sum [*S'] (in
  place, `add_windows`), one batch of `predict_batch` (`batch_predictor`)
  at a time; a tf.while_loop. The whole volume and the slab-by-slab
  aggregation (`slab_aggregation`) share it."""
  num_windows = tf.shape(corners)[0]

  def loop_body(first, accumulated, weight_sum):
    outputs, count = predict_batch(first)
    accumulated, weight_sum = add_windows(
        accumulated, weight_sum, outputs, corners[first:first + count],
        weights)
    return first + count, accumulated, weight_sum

  _, accumulated, weight_sum = tf.while_loop(
      lambda first, *_: first < num_windows, loop_body,
      (first, accumulated, weight_sum), parallel_iterations=1)
  return accumulated, weight_sum


def _normalise_and_crop(accumulated: tf.Tensor, weight_sum: tf.Tensor,
                        spatial: tf.Tensor, classes: tf.Tensor) -> tf.Tensor:
  """float32 [*S, K]: accumulated / weight_sum, the padding cropped."""
  ndim = weight_sum.shape.rank
  accumulated = tf.reshape(accumulated, tf.concat(
      [tf.shape(weight_sum), [classes]], 0))
  # Forwarded in place: the result reuses the accumulator's buffer.
  result = accumulated / weight_sum[..., None]
  # The same buffer unless the image was padded.
  return tf.slice(result, tf.zeros([ndim + 1], tf.int32),
                  tf.concat([spatial, [-1]], 0))


def _sliding_window_graph(predict_fn: PredictFn, image, options: WindowOptions,
                          strategy: Optional[tf.distribute.Strategy]
                         ) -> tf.Tensor:
  """The TF-op loop of `sliding_window_inference` (arguments checked)."""
  ndim = len(options.patch_size)
  image = tf.convert_to_tensor(image)
  _check_rank(image.shape, options.patch_size)
  image = tf.cast(image, tf.float32)
  spatial = tf.shape(image)[:ndim]
  image, padded_shape = _pad_to_patch(image, options)
  corners = window_placement.window_corners(padded_shape, options.patch_size,
                                            options.overlap)
  predict_batch = batch_predictor(predict_fn, image, corners, options,
                                   strategy)
  weights = tf.constant(window_placement.importance_map(
      options.patch_size, options.weighting, options.sigma_scale))

  # The first batch outside the loop: it tells the number of classes.
  outputs, count = predict_batch(tf.constant(0))
  classes = tf.shape(outputs)[-1]
  accumulated, weight_sum = add_windows(
      *_zero_buffers(padded_shape, classes), outputs, corners[:count],
      weights)
  accumulated, weight_sum = accumulate_batches(
      predict_batch, corners, weights, accumulated, weight_sum, first=count)
  result = _normalise_and_crop(accumulated, weight_sum, spatial, classes)
  # The dynamic slice loses the static class count; callers want it.
  return tf.ensure_shape(result, [None] * ndim + [outputs.shape[-1]])


def runs_on_device(predict_fn: PredictFn) -> bool:
  """True for predict_fns that are TF graphs already (`tf.function`, Keras
  models, tf.Modules); other callables take the host path when called
  eagerly."""
  return isinstance(predict_fn, (tf.types.experimental.PolymorphicFunction,
                                 keras.Model, tf.Module))


def on_host(predict_fn: PredictFn) -> Callable[[tf.Tensor], tf.Tensor]:
  """predict_fn called with numpy batches (via tf.numpy_function); its
  output is converted to float32."""

  def call(batch):
    return np.asarray(predict_fn(batch), np.float32)

  return lambda batch: tf.numpy_function(call, [batch], tf.float32,
                                         stateful=True)


def make_sliding_window_fn(predict_fn: PredictFn, options: WindowOptions,
                           num_channels: int,
                           strategy: Optional[tf.distribute.Strategy] = None
                          ) -> Callable[[Any], tf.Tensor]:
  """A `tf.function` image [*spatial, num_channels] -> float32
  [*spatial, K], traced once for every spatial size.

  Build it once to segment many volumes (each `sliding_window_inference`
  call outside a graph traces anew). predict_fn must be traceable (TF
  ops); wrap a numpy function with `on_host`. Arguments as
  `sliding_window_inference`.
  """
  _check_arguments(options, strategy)
  spec = tf.TensorSpec([None] * len(options.patch_size) + [int(num_channels)],
                       tf.float32, name='image')

  @tf.function(input_signature=[spec], autograph=False)
  def sliding_window(image):
    return _sliding_window_graph(predict_fn, image, options, strategy)

  return sliding_window


def sliding_window_inference(
    predict_fn: PredictFn,
    image,
    options: WindowOptions,
    strategy: Optional[tf.distribute.Strategy] = None,
) -> tf.Tensor:
  """The importance-weighted mean of a patch model's outputs over a volume.

  Args:
    predict_fn: maps a float32 batch [b, *patch_size, C] to per-voxel
      outputs [b, *patch_size, K] (probabilities; any float dtype, summed in
      float32). b varies (the last batch is smaller). TF ops, or, called
      eagerly and without a strategy, any callable of numpy batches (see the
      module docstring: device and host paths).
    image: [*spatial, C] (numpy or tensor, cast to float32), any spatial
      size: axes shorter than the patch are padded at their end with
      options.pad_value and cropped back.
    options: the window, overlap, batch, weighting and mirroring
      (`WindowOptions`).
    strategy: optional tf.distribute.Strategy: each batch is split evenly
      over its replicas (`strategy.run`) and gathered back. Build
      predict_fn's model under `strategy.scope()`.

  Returns:
    float32 tf.Tensor [*spatial, K].
  """
  _check_arguments(options, strategy)
  if not tf.executing_eagerly():
    return _sliding_window_graph(predict_fn, image, options, strategy)
  image = tf.convert_to_tensor(image)
  _check_rank(image.shape, options.patch_size)
  if strategy is None and not runs_on_device(predict_fn):
    predict_fn = on_host(predict_fn)
  window_fn = make_sliding_window_fn(predict_fn, options,
                                     int(image.shape[-1]), strategy)
  return window_fn(tf.cast(image, tf.float32))

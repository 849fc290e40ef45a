"""Whole-volume inference that eval and predict share: a model's (or an
ensemble's) probabilities over a volume of any size, through the one sliding
window (`unet3d.inference.sliding_window`), and the segmentation they give.
Eval and predict segment slab by slab (`segmenter`,
`unet3d.inference.slab_aggregation`: memory bounded by the volume, not the
volume times the classes); the exported SavedModel returns probabilities and
traces the whole-volume window (`unet3d.inference.export`).
"""

from __future__ import annotations

from typing import Callable, Optional, Sequence, Union

import keras
import numpy as np
import tensorflow as tf

from unet3d import distribute
from unet3d.config import Config
from unet3d.inference import fold_batch_norm as fold_lib
from unet3d.inference import slab_aggregation
from unet3d.inference import sliding_window
from unet3d.models import heads

# Window batch [b, *patch, C] -> probabilities [b, *patch, K]: TF ops (a
# tf.function runs on the device) or a numpy function (the host path).
PredictFn = sliding_window.PredictFn
# Image [*spatial, C] -> float32 probabilities [*spatial, K] (numpy).
VolumeFn = Callable[[np.ndarray], np.ndarray]


def probabilities_fn(cfg: Config,
                     model: Union[keras.Model, Sequence[keras.Model]],
                     fold_batch_norm: bool = False
                    ) -> tf.types.experimental.PolymorphicFunction:
  """A `tf.function` window batch [b, *patch, C] -> float32 probabilities
  [b, *patch, K]: softmax or sigmoid of each model's main head (CGM-gated,
  deep-supervision heads unused), averaged over the models of an ensemble.

  fold_batch_norm: run inference clones with each batch norm folded into
  its convolution (`fold_batch_norm`: the same outputs to float32 rounding,
  Conv3D + BiasAdd + Relu fused by oneDNN); build under the models'
  strategy scope. The clones copy the folded weights: later changes to the
  models do not reach them.
  """
  members = list(model) if isinstance(model, (list, tuple)) else [model]
  if fold_batch_norm:
    members = [fold_lib.fold_batch_norm(m) for m in members]
  activation = cfg.model.output_activation

  @tf.function(reduce_retracing=True)
  def probabilities(batch):
    total = None
    for member in members:
      p = heads.probabilities(member(batch, training=False), activation)
      total = p if total is None else total + p
    return total / float(len(members)) if len(members) > 1 else total

  return probabilities


def volume_fn(cfg: Config, predict_fn: PredictFn,
              strategy: Optional[tf.distribute.Strategy] = None) -> VolumeFn:
  """The sliding window of cfg around predict_fn, traced once for every
  volume size: windows of `input_image_size`, `inference.overlap`,
  `inference.weighting`, `inference.mirror_axes`, `predict_batch_size`
  windows per step (split over the strategy's replicas when given).

  A numpy predict_fn runs on the host (no strategy).
  """
  if not sliding_window.runs_on_device(predict_fn):
    predict_fn, strategy = sliding_window.on_host(predict_fn), None
  # Windows are training-size patches: on TPU, split like training batches.
  predict_fn = distribute.partitioned(predict_fn, strategy,
                                      cfg.input_partition_dims)
  window = sliding_window.make_sliding_window_fn(
      predict_fn, sliding_window.WindowOptions.from_config(cfg),
      cfg.num_channels, strategy)
  return lambda image: window(np.asarray(image, np.float32)).numpy()


def segmenter(cfg: Config, predict_fn: PredictFn,
              strategy: Optional[tf.distribute.Strategy] = None
             ) -> slab_aggregation.SlabSegmenter:
  """`volume_fn`'s window, aggregated slab by slab: image [*spatial, C] ->
  labels (and float16 probabilities when asked), the same labels as
  `segmentation(volume_fn(...)(image))`."""
  if not sliding_window.runs_on_device(predict_fn):
    predict_fn, strategy = sliding_window.on_host(predict_fn), None
  predict_fn = distribute.partitioned(predict_fn, strategy,
                                      cfg.input_partition_dims)
  return slab_aggregation.SlabSegmenter(
      predict_fn, sliding_window.WindowOptions.from_config(cfg),
      cfg.num_channels, cfg.model.output_activation, strategy)


def segment_volume(volume: Union[VolumeFn, slab_aggregation.SlabSegmenter],
                   image: np.ndarray, output_activation: str,
                   with_probabilities: bool = False
                  ) -> tuple[np.ndarray, Optional[np.ndarray]]:
  """(labels, probabilities or None) of image [*spatial, C] by a
  `segmenter` (slab by slab; float16 probabilities) or any VolumeFn (whole
  volume; float32 probabilities)."""
  if isinstance(volume, slab_aggregation.SlabSegmenter):
    result = volume(image, with_probabilities)
    return result.labels, result.probabilities
  probabilities = volume(image)
  return (segmentation(probabilities, output_activation),
          probabilities if with_probabilities else None)


def segmentation(probabilities: np.ndarray, output_activation: str
                ) -> np.ndarray:
  """uint8 class indices [*spatial] (softmax: argmax) or masks
  [*spatial, K] (sigmoid: probability > 0.5)."""
  if output_activation == 'sigmoid':
    return (probabilities > 0.5).astype(np.uint8)
  return np.argmax(probabilities, axis=-1).astype(np.uint8)


def segmentation_tensor(probabilities: tf.Tensor, output_activation: str,
                        class_dtype: tf.DType = tf.uint8) -> tf.Tensor:
  """`segmentation` in TF ops, for graphs and SavedModels: uint8 masks
  (sigmoid) or class indices of `class_dtype` (softmax)."""
  if output_activation == 'sigmoid':
    return tf.cast(probabilities > 0.5, tf.uint8)
  return tf.cast(tf.argmax(probabilities, axis=-1), class_dtype)

"""Whole-volume inference that eval, predict and export share: a model's
probabilities over a volume of any size, and the segmentation they give.
"""

from __future__ import annotations

from typing import Callable

import keras
import numpy as np
import tensorflow as tf

from unet3d.config import Config
from unet3d.inference import sliding_window
from unet3d.models import heads

PredictFn = Callable[[np.ndarray], np.ndarray]


def probabilities_fn(cfg: Config, model: keras.Model) -> PredictFn:
  """Window batch [b, *patch, C] -> float32 probabilities [b, *patch, K]:
  softmax or sigmoid of the main head, CGM-gated."""
  activation = cfg.model.output_activation

  @tf.function(reduce_retracing=True)
  def probabilities(batch):
    return heads.probabilities(model(batch, training=False), activation)

  return lambda batch: probabilities(tf.constant(batch)).numpy()


def predict_volume(predict_fn: PredictFn, image: np.ndarray,
                   cfg: Config) -> np.ndarray:
  """Probabilities float32 [*spatial, K] of image [*spatial, C].

  Sliding windows of `input_image_size`, with `inference.overlap`,
  `inference.weighting` and `predict_batch_size` windows per call.
  """
  return sliding_window.sliding_window_inference(
      predict_fn, image, cfg.input_image_size,
      overlap=cfg.inference.overlap, batch_size=cfg.predict_batch_size,
      weighting=cfg.inference.weighting)


def segmentation(probabilities: np.ndarray, output_activation: str
                ) -> np.ndarray:
  """uint8 class indices [*spatial] (softmax: argmax) or masks
  [*spatial, K] (sigmoid: probability > 0.5)."""
  if output_activation == 'sigmoid':
    return (probabilities > 0.5).astype(np.uint8)
  return np.argmax(probabilities, axis=-1).astype(np.uint8)

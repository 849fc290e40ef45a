"""The evaluation loops: per-class metrics of a model on the eval records.

`data.eval_mode: center_crop` evaluates a centre crop/pad of each case
(`data.eval_image_size`) in batches under the strategy;
`whole_volume` segments each whole case with the sliding window that predict
uses (`unet3d.inference.whole_volume`) and scores the hard label maps, with
surface metrics when `metrics.surface_metrics` is on.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

import keras
import numpy as np
import tensorflow as tf

from unet3d import config as config_lib
from unet3d import distribute
from unet3d import run_dir
from unet3d.config import Config, ConfigError
from unet3d.evaluation import report as report_lib
from unet3d.inference import whole_volume
from unet3d.input import pipeline
from unet3d.metrics import overlap
from unet3d.metrics import surface
from unet3d.models import heads


def make_eval_step(cfg: Config, model: keras.Model,
                   strategy: tf.distribute.Strategy) -> Callable:
  """Returns run(inputs) -> per-case integer counts [b, C, 4] (and [b, R, 4]
  BraTS region counts when metrics.brats_regions), gathered from all
  replicas. On TPU with partitioning, each replica's crops are split over
  its cores by eval_input_partition_dims (default input_partition_dims), as
  in training, so a model that needs partitioning to fit also evaluates."""
  activation = cfg.model.output_activation
  num_classes = cfg.num_classes
  ignore_label = cfg.loss_options.ignore_label
  regions = cfg.metrics.brats_regions
  partition_dims = config_lib.eval_partition_dims(cfg)

  def step_fn(inputs):
    images, labels = inputs
    images, labels = distribute.partition_inputs(strategy, partition_dims,
                                                 images, labels)
    logits = heads.inference_logits(model(images, training=False), activation)
    counts = overlap.confusion_counts(labels, logits, num_classes,
                                      output_activation=activation,
                                      ignore_label=ignore_label)
    if regions:
      return counts, overlap.region_counts(labels, logits)
    return (counts,)

  @tf.function
  def run(inputs):
    per_replica = strategy.run(step_fn, args=(inputs,))
    return tuple(strategy.gather(t, axis=0) for t in per_replica)

  return run


def _crop_counts(cfg: Config, model: keras.Model,
                 strategy: tf.distribute.Strategy
                ) -> tuple[np.ndarray, Optional[np.ndarray], list]:
  """Per-case counts [N, C, 4] (+ region counts) on centre crops, batched
  and distributed."""
  dataset = strategy.distribute_datasets_from_function(
      lambda ctx: pipeline.build_dataset(cfg, 'eval', input_context=ctx))
  run = make_eval_step(cfg, model, strategy)
  counts, regions = [], []
  for inputs in dataset:
    outputs = run(inputs)
    counts.append(outputs[0].numpy().astype(np.int64))
    if len(outputs) > 1:
      regions.append(outputs[1].numpy().astype(np.int64))
    if cfg.eval_item_count and sum(len(c) for c in counts) >= cfg.eval_item_count:
      break
  if not counts:
    return np.zeros([0]), None, []
  return (np.concatenate(counts),
          np.concatenate(regions) if regions else None, [])


def _volume_counts(cfg: Config, model: keras.Model
                  ) -> tuple[np.ndarray, Optional[np.ndarray], list]:
  """Segments every whole eval volume as predict does and scores the label
  maps: counts [N, C, 4], BraTS region counts [N, R, 4] or None, and
  per-case surface reports when metrics.surface_metrics is on."""
  predict_fn = whole_volume.probabilities_fn(cfg, model)
  activation = cfg.model.output_activation
  counts, regions, surface_reports = [], [], []
  for case in pipeline.build_volume_dataset(cfg, cfg.eval_file_pattern):
    label = case['label'].numpy()
    prediction = whole_volume.segmentation(
        whole_volume.predict_volume(predict_fn, case['image'].numpy(), cfg),
        activation)
    predicted = overlap.label_map_predictions(prediction[None],
                                              cfg.num_classes, activation)
    counts.append(overlap.counts_from_predictions(
        label[None], predicted, cfg.num_classes,
        ignore_label=cfg.loss_options.ignore_label).numpy().astype(np.int64))
    if cfg.metrics.brats_regions:
      regions.append(overlap.region_counts_from_classes(
          label[None], prediction[None]).numpy().astype(np.int64))
    if cfg.metrics.surface_metrics:
      case_report = surface.per_case_report(
          prediction, label, case['spacing'].numpy(), cfg.num_classes,
          tolerance_mm=cfg.metrics.surface_tolerance_mm)
      case_report['case_id'] = case['case_id'].numpy().decode()
      surface_reports.append(case_report)
    if cfg.eval_item_count and len(counts) >= cfg.eval_item_count:
      break
  if not counts:
    return np.zeros([0]), None, surface_reports
  return (np.concatenate(counts),
          np.concatenate(regions) if regions else None, surface_reports)


def evaluate(cfg: Config, strategy: Optional[tf.distribute.Strategy] = None,
             model: Optional[keras.Model] = None, step: Optional[int] = None,
             checkpoint: str = 'latest') -> dict[str, Any]:
  """Evaluates a model on eval_file_pattern (the eval mode).

  Without `model`, restores `checkpoint` ('latest' or a path) of model_dir
  under the strategy. Writes the report into model_dir (see
  `unet3d.evaluation.report`) and returns it: per-class dice, IoU,
  precision and recall (means over cases), the mean foreground dice, the
  step and the empty-class convention.
  """
  if not cfg.eval_file_pattern:
    raise ConfigError('eval_file_pattern: required for evaluation')
  strategy = strategy or distribute.build_strategy(cfg, training=False)
  if model is None:
    model, step = run_dir.restore_model(cfg, checkpoint, strategy)
  if cfg.data.eval_mode == 'whole_volume':
    all_counts, region_counts, surface_reports = _volume_counts(cfg, model)
  else:
    all_counts, region_counts, surface_reports = _crop_counts(cfg, model,
                                                               strategy)
  if not len(all_counts):
    raise ValueError(f'eval_file_pattern {cfg.eval_file_pattern}: no '
                     'evaluation records')
  if cfg.eval_item_count:
    all_counts = all_counts[:cfg.eval_item_count]
    if region_counts is not None:
      region_counts = region_counts[:cfg.eval_item_count]
  report = report_lib.build_report(cfg, all_counts, region_counts,
                                   surface_reports, step)
  if cfg.model_dir and distribute.is_chief():
    report_lib.write_report(cfg.model_dir, report)
  return report


def _class_colours(num_classes: int) -> np.ndarray:
  """[num_classes, 3] float colours: black background, then distinct hues."""
  hues = np.linspace(0.0, 1.0, max(num_classes - 1, 1), endpoint=False)
  rgb = np.stack([np.abs(((hues * 6 + k) % 6) - 3) - 1
                  for k in (0, 4, 2)], axis=-1).clip(0, 1)
  return np.concatenate([np.zeros([1, 3]), rgb])[:num_classes]


def write_previews(cfg: Config, model: keras.Model, step: int,
                   writer: tf.summary.SummaryWriter) -> None:
  """TensorBoard images of the middle slice (last spatial axis) of the first
  eval case's centre crop: the image, its label and the prediction."""
  if cfg.model.spatial_dims != 3 or cfg.model.output_activation != 'softmax':
    return
  for image, label in pipeline.build_eval_dataset(cfg).take(1):
    probabilities = heads.probabilities(model(image[:1], training=False))
    middle = image.shape[3] // 2
    picture = image[0, :, :, middle, :1].numpy()
    span = np.ptp(picture) or 1.0
    picture = (picture - picture.min()) / span
    colours = _class_colours(cfg.num_classes)
    label_slice = label[0].numpy()
    if label_slice.ndim == 4:
      label_slice = label_slice.argmax(-1)
    predicted = np.argmax(probabilities[0, :, :, middle].numpy(), axis=-1)
    with writer.as_default(step=step):
      tf.summary.image('eval/image', picture[None])
      tf.summary.image('eval/label',
                       colours[label_slice[:, :, middle].astype(int)][None])
      tf.summary.image('eval/prediction', colours[predicted][None])
    writer.flush()

"""The evaluation loop: a model's (or an ensemble's) segmentation of every
eval case, scored per case and written as reports.

```
eval records ──center_crop: centre crop/pad of data.eval_image_size,
               batches split over the strategy's replicas
             ──whole_volume: the sliding window that predict uses
               (unet3d.inference.whole_volume), windows on the replicas
──▶ per case: image, label, prediction, spacing on the host
──▶ scoring.score_case (shared with evaluate_folder): counts, surface and
    lesion-wise metrics under the configured conventions; PNG overlay
──▶ eval_results.json, TensorBoard, eval/cases.csv, summary.csv, .json,
    eval/overlays/<case>.png (unet3d.evaluation.report, tables, overlays),
    eval/nifti/<case>_{image,label,prediction}.nii.gz (case_dumps)
```
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any, Iterator, Optional

import keras
import numpy as np
import tensorflow as tf

from unet3d import config as config_lib
from unet3d import distribute
from unet3d import fileio
from unet3d.config import Config, ConfigError
from unet3d.evaluation import case_dumps
from unet3d.evaluation import overlays
from unet3d.evaluation import report as report_lib
from unet3d.evaluation import scoring
from unet3d.evaluation import tables
from unet3d.evaluation import volumes_2d
from unet3d.inference import ensemble
from unet3d.inference import restore
from unet3d.inference import sliding_window
from unet3d.inference import whole_volume
from unet3d.input import dataset_info
from unet3d.input import pipeline
from unet3d.models import heads


@dataclasses.dataclass
class CaseResult:
  """One evaluated case on the host.

  image: float32 [*spatial, C] as the model saw it; label: class indices
  [*spatial] or masks [*spatial, K]; prediction: uint8, the label's layout;
  spacing: mm per spatial axis; affine: the record's 4x4 voxel-to-world
  matrix (whole volumes only, for `case_dumps`).
  """
  case_id: str
  image: np.ndarray
  label: np.ndarray
  prediction: np.ndarray
  spacing: np.ndarray
  affine: Optional[np.ndarray] = None


class _CaseNames:
  """Unique, file-safe case names: the record's case_id, `case_NNNN` when
  it has none, a `-2`, `-3` suffix when it repeats."""

  def __init__(self):
    self._seen: dict[str, int] = {}

  def __call__(self, raw: bytes) -> str:
    name = raw.decode() if isinstance(raw, bytes) else str(raw)
    name = re.sub(r'[^\w.-]+', '_', name) or f'case_{len(self._seen):04d}'
    count = self._seen.get(name, 0) + 1
    self._seen[name] = count
    return name if count == 1 else f'{name}-{count}'


def padded_batch(images: np.ndarray, batch: int, replicas: int
                ) -> tuple[np.ndarray, np.ndarray]:
  """One evaluation step's input: images [n <= batch, ...] padded with zero
  examples to `batch` rounded up to a multiple of `replicas`, so every
  replica gets an equal share (eval_batch_size 1 on 8 replicas is a step of
  8). Returns (padded [step, ...], valid [step] bool): only the first n
  rows are cases; the rest must enter no count, metric or report."""
  step = -(-batch // replicas) * replicas
  count = len(images)
  padded = np.concatenate(
      [images, np.zeros((step - count,) + images.shape[1:], images.dtype)])
  return padded, np.arange(step) < count


def _crop_cases(cfg: Config, predict_fn, strategy: tf.distribute.Strategy
               ) -> Iterator[CaseResult]:
  """Centre crops/pads of `data.eval_image_size`, eval_batch_size at a
  time, each step split evenly over the strategy's replicas (padded with
  masked examples when the batch does not split; see `padded_batch`)."""
  batch = cfg.eval_batch_size
  replicas = strategy.num_replicas_in_sync
  activation = cfg.model.output_activation
  # On TPU each replica's crops are split over its cores as in training
  # (eval_input_partition_dims, default input_partition_dims), so a model
  # that needs partitioning to fit also evaluates.
  predict_fn = distribute.partitioned(predict_fn, strategy,
                                      config_lib.eval_partition_dims(cfg))
  mirrored = sliding_window.mirrored(predict_fn, cfg.inference.mirror_axes,
                                     cfg.model.spatial_dims)
  run = sliding_window.distributed(mirrored, strategy)

  @tf.function
  def segment(images):
    return whole_volume.segmentation_tensor(
        run(images, images.shape[0]), activation)

  names = _CaseNames()
  for chunk in pipeline.build_eval_cases(cfg).batch(batch):
    images, valid = padded_batch(chunk['image'].numpy(), batch, replicas)
    predictions = segment(images).numpy()
    for i in np.flatnonzero(valid):
      yield CaseResult(names(chunk['case_id'][i].numpy()), images[i],
                       chunk['label'][i].numpy(), predictions[i],
                       chunk['spacing'][i].numpy())


def _volume_cases(cfg: Config, predict_fn, strategy: tf.distribute.Strategy
                 ) -> Iterator[CaseResult]:
  """Whole volumes through the sliding window, as predict segments them."""
  volume = whole_volume.segmenter(cfg, predict_fn, strategy)
  names = _CaseNames()
  for case in pipeline.build_volume_dataset(cfg, cfg.eval_file_pattern):
    image = case['image'].numpy()
    prediction = volume(image).labels
    yield CaseResult(names(case['case_id'].numpy()), image,
                     case['label'].numpy(), prediction,
                     case['spacing'].numpy(), case['affine'].numpy())


@dataclasses.dataclass
class _Scores:
  counts: list = dataclasses.field(default_factory=list)
  regions: list = dataclasses.field(default_factory=list)
  surfaces: list = dataclasses.field(default_factory=list)
  rows: list = dataclasses.field(default_factory=list)
  overlays: list = dataclasses.field(default_factory=list)
  case_ids: list = dataclasses.field(default_factory=list)
  nifti: list = dataclasses.field(default_factory=list)


def _score(cfg: Config, results: Iterator[CaseResult], names: list[str],
           overlay_dir: Optional[str],
           nifti_dir: Optional[str] = None) -> _Scores:
  """Per-case counts, region counts, surface reports and table rows
  (`scoring.score_case`, which evaluate_folder shares); PNG overlays into
  overlay_dir and NIfTI dumps into nifti_dir when given."""
  options = scoring.ScoringOptions.from_config(cfg, names,
                                               report_lib.first_scored_class(cfg))
  scores = _Scores()
  for result in results:
    case = scoring.score_case(result.case_id, result.label,
                              result.prediction, result.spacing, options)
    scores.counts.append(case.counts)
    scores.case_ids.append(result.case_id)
    if case.regions is not None:
      scores.regions.append(case.regions)
    if case.surface is not None:
      scores.surfaces.append(case.surface)
    scores.rows.extend(case.rows)
    if overlay_dir:
      scores.overlays.append(overlays.write_case_overlay(
          overlay_dir, result.case_id, result.image[..., 0], result.label,
          result.prediction, result.spacing, names, options.multi_label,
          case.rows[:len(names) - options.first_class]))
    if nifti_dir:
      scores.nifti.extend(case_dumps.write_case(nifti_dir, result))
    if cfg.eval_item_count and len(scores.counts) >= cfg.eval_item_count:
      break
  return scores


def report_dir(cfg: Config) -> str:
  """Where the tables and overlays go: model_dir/eval, or
  model_dir/eval/ensemble for an ensemble (so a member's own report stays;
  model_dir defaults to the first member)."""
  folder = fileio.join(ensemble.home_dir(cfg), report_lib.EVAL_SUMMARY_DIR)
  return fileio.join(folder, 'ensemble') if ensemble.is_ensemble(cfg) \
      else folder


def evaluate(cfg: Config, strategy: Optional[tf.distribute.Strategy] = None,
             model: Optional[keras.Model] = None, step: Optional[int] = None,
             checkpoint: str = 'latest') -> dict[str, Any]:
  """Evaluates a model on eval_file_pattern (the eval mode).

  Without `model`, restores `checkpoint` ('latest' or a path) of model_dir,
  or of every `inference.ensemble` member, under the strategy. Writes the
  reports into model_dir (module docstring; `report_dir`) on the chief and
  returns the report: per-class dice, IoU, precision and recall (means over
  cases), the mean foreground dice, surface metrics, the step, the
  empty-class convention and the written files.
  """
  if not cfg.eval_file_pattern:
    raise ConfigError('eval_file_pattern: required for evaluation')
  case_dumps.check_config(cfg)
  members = None
  if model is None:  # configs and checkpoints checked before the strategy
    planned = ensemble.members(cfg, checkpoint)
  strategy = strategy or distribute.build_strategy(cfg, training=False)
  writes = bool(ensemble.home_dir(cfg)) and distribute.is_chief()
  if writes:  # before any inference: a read-only model_dir is one line
    fileio.check_writable(report_dir(cfg), 'model_dir')
  if model is None:
    restored = restore.restore_for_inference(cfg, checkpoint, strategy,
                                             planned=planned)
    predict_fn, step, members = (restored.probabilities, restored.step,
                                 restored.members)
  else:
    predict_fn = whole_volume.probabilities_fn(cfg, [model])
  cases = (_volume_cases if cfg.data.eval_mode == 'whole_volume'
           else _crop_cases)(cfg, predict_fn, strategy)
  names = dataset_info.class_names(
      [cfg.eval_file_pattern, cfg.training_file_pattern],
      cfg.num_classes) or [f'class_{c}' for c in range(cfg.num_classes)]
  folder = report_dir(cfg) if writes else None
  # Overlays draw three orthogonal planes: volumes only, not 2D slices.
  overlay_dir = (fileio.join(folder, 'overlays') if writes and
                 cfg.metrics.overlays and cfg.model.spatial_dims == 3 else None)
  nifti_dir = (fileio.join(folder, case_dumps.FOLDER)
               if writes and cfg.metrics.save_nifti else None)
  scores = _score(cfg, cases, names, overlay_dir, nifti_dir)
  if not scores.counts:
    raise ValueError(f'eval_file_pattern {cfg.eval_file_pattern}: no '
                     'evaluation records')
  report = report_lib.build_report(
      cfg, np.stack(scores.counts),
      np.stack(scores.regions) if scores.regions else None, scores.surfaces,
      step, names)
  if members:
    report['ensemble'] = members
  if cfg.model.spatial_dims == 2:  # slices: also the dice of each volume
    report['per_volume'] = volumes_2d.per_volume_report(
        scores.case_ids, np.stack(scores.counts), names,
        cfg.metrics.empty_class, report_lib.first_scored_class(cfg))
  if writes:
    summary = tables.summary_rows(scores.rows,
                                  names[report_lib.first_scored_class(cfg):])
    files = tables.write_tables(folder, scores.rows, summary, {
        'step': step, 'num_cases': report['num_cases'],
        'eval_mode': cfg.data.eval_mode,
        'conventions': report['conventions'],
        'empty_class': report['empty_class'],
        'surface_metrics': cfg.metrics.surface_metrics,
        'lesion_wise': cfg.metrics.lesion_wise,
        'mirror_axes': list(cfg.inference.mirror_axes),
        'ensemble': members})
    report['report_dir'] = folder
    report['report_files'] = {**files, 'overlays': scores.overlays,
                              'nifti': scores.nifti}
    report_lib.write_report(ensemble.home_dir(cfg), report,
                            results_dir=folder if members else None)
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

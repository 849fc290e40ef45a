"""The one config schema of unet3d: defaults, YAML + overrides, validation.

Plain Python: importing this module does not import TensorFlow. Reading and
writing params.yaml in a run folder (which may be on gs://) is
`unet3d.run_dir`'s job; this module turns configs into YAML text and back.
The file is long because the schema is one fact: every key, its type, its
default and its checks stay together.

The top level keeps the TF Model Garden UNet3D keys flat and with their
original meaning, so its YAML recipes (``configs/cloud``) load unchanged.
Everything the Model Garden did not have lives in a named group
(``model``, ``data``, ``augmentation`` inside ``data``, ``loss_options``,
``metrics``, ``train``, ``inference``, ``predict``).

Values are resolved in this order, later winning:
defaults -> ``--config_file`` -> ``--params_override`` -> explicit flags.
"""

from __future__ import annotations

import copy
import logging
import dataclasses
import difflib
import math
import os
import re
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Optional, Union

import yaml

from unet3d.errors import ConfigError  # pylint: disable=unused-import (re-exported)


# ----------------------------------------------------------------------------
# Groups
# ----------------------------------------------------------------------------


@dataclass
class ModelConfig:
  """Architecture choices beyond the Model Garden's flat keys."""
  # unet3d | unet3plus | unet3plus_deepsup | unet3plus_deepsup_cgm
  name: str = 'unet3d'
  # 3: volumes; 2: the same builders on slices.
  spatial_dims: int = 3
  # batch | instance | group | none. None follows the flat `use_batch_norm`.
  normalization: Optional[str] = None
  # Groups of group norm (at most the layer's channels).
  num_groups: int = 8
  # relu | leaky_relu | elu | prelu
  activation: str = 'relu'
  # Negative slope of leaky_relu.
  leaky_relu_alpha: float = 0.01
  # pytorch-3dunet's conv layer order, e.g. gcr, crg, cbr, cr: c conv,
  # g/b/i group/batch/instance norm, r/l/e relu/leaky relu/elu, in call
  # order. Set, it replaces normalization and activation. Empty: conv ->
  # normalization -> activation.
  layer_order: Optional[str] = None
  # Residual conv units (identity or 1x1 projection shortcut).
  residual: bool = False
  # maxpool | strided_conv
  downsampling: str = 'maxpool'
  # Per-level filters. None: num_base_filters * 2**level (unet3d), or the
  # UNet 3+ paper's [64, 128, 256, 512, 1024] scaled by num_base_filters/64.
  filters: Optional[list[int]] = None
  # Caps every level's filters. Empty: no cap.
  max_filters: Optional[int] = None
  # Down-sampling factor per level transition and spatial axis, finest
  # first: (levels - 1) entries of spatial_dims ints >= 1, e.g.
  # [[2, 2, 1], [2, 2, 2], [2, 2, 2]] pools only in-plane first (nnU-Net's
  # plan for thick slices). Input sizes must divide by each axis' product.
  # Empty: 2 on every axis.
  pool_sizes: Optional[list[list[int]]] = None
  # Conv kernel per level and spatial axis: `levels` entries of spatial_dims
  # odd ints >= 1, e.g. [[3, 3, 1], [3, 3, 3], ...]; decoder level d uses
  # entry d. Empty: 3 everywhere.
  kernel_sizes: Optional[list[list[int]]] = None
  # UNet 3+: channels of each full-scale skip branch (64 in the paper).
  cat_channels: int = 64
  # Deep supervision head weights, finest head first. None: equal weights.
  # 'nnunet' gives 1/2**i normalised to sum to 1.
  deep_supervision_weights: Optional[Union[str, list[float]]] = None
  # Weight of the classification-guided module's BCE in the total loss.
  cgm_loss_weight: float = 1.0
  # Per-block tf.recompute_grad to trade compute for activation memory.
  recompute_grad: bool = False
  # Batch norm with the statistics of the global batch (Keras
  # BatchNormalization(synchronized=True): an all-reduce per layer) instead
  # of each replica's own cases. None: on under mirrored / multi_worker when
  # a replica gets fewer than 4 cases of train_batch_size, off otherwise.
  # Only training differs; checkpoints are the same either way.
  sync_batch_norm: Optional[bool] = None
  # softmax (exclusive classes) | sigmoid (multi-label, e.g. BraTS regions)
  output_activation: str = 'softmax'


@dataclass
class AugmentationConfig:
  """Training-time augmentation. Each `*_prob` is a per-sample probability.

  Defaults follow nnU-Net's probabilities. Augmentation never runs in eval.
  """
  # false: no augmentation at all (patch sampling still applies).
  enabled: bool = True
  # Probability of a flip, per axis.
  flip_prob: float = 0.5
  # Empty: every spatial axis.
  flip_axes: Optional[list[int]] = None
  # A flip of this axis swaps each pair of classes (e.g. left/right kidney).
  left_right_axis: Optional[int] = None
  # Pairs of classes swapped by a flip of left_right_axis, e.g. [[1, 2]].
  left_right_label_pairs: Optional[list[list[int]]] = None
  # Rotation by 90, 180 or 270 degrees in one (square) plane.
  rot90_prob: float = 0.0
  # The two spatial axes of the rot90 plane.
  rot90_axes: list[int] = field(default_factory=lambda: [0, 1])
  # Rotation (each angle uniform in +-rotation_degrees) and isotropic scaling
  # (> 1 zooms in), applied while the patch is cut from the whole volume.
  affine_prob: float = 0.2
  # Largest rotation angle per axis, in degrees.
  rotation_degrees: float = 30.0
  # Range of the isotropic scale factor.
  scale_range: list[float] = field(default_factory=lambda: [0.7, 1.4])
  # Smooth random displacement: Gaussian-smoothed noise (sigma in voxels)
  # scaled to a peak displacement of elastic_magnitude voxels.
  elastic_prob: float = 0.0
  # Smoothing of the displacement field, in voxels.
  elastic_sigma: float = 10.0
  # Peak displacement, in voxels.
  elastic_magnitude: float = 2.0
  # Multiplicative brightness: intensities times a factor.
  brightness_prob: float = 0.15
  # Range of the brightness factor.
  brightness_range: list[float] = field(default_factory=lambda: [0.75, 1.25])
  # Contrast: intensities scaled about their mean, range kept.
  contrast_prob: float = 0.15
  # Range of the contrast factor.
  contrast_range: list[float] = field(default_factory=lambda: [0.75, 1.25])
  # Gamma on intensities rescaled to [0, 1] (mean and std kept).
  gamma_prob: float = 0.3
  # Range of gamma.
  gamma_range: list[float] = field(default_factory=lambda: [0.7, 1.5])
  # Additive Gaussian noise.
  noise_prob: float = 0.1
  # The noise std is uniform in [0, noise_std].
  noise_std: float = 0.1
  # Gaussian blur.
  blur_prob: float = 0.2
  # Range of the blur sigma, in voxels.
  blur_sigma_range: list[float] = field(default_factory=lambda: [0.5, 1.0])
  # Simulated low resolution: nearest down-sampling, linear up-sampling.
  low_resolution_prob: float = 0.25
  # Range of the down-sampling zoom.
  low_resolution_zoom_range: list[float] = field(
      default_factory=lambda: [0.5, 1.0])


@dataclass
class DataConfig:
  """Input pipeline settings."""
  # unet3d: this project's schema (whole volumes, see unet3d/input/schema.py).
  # model_garden: `image/ct_image` + one-hot `image/label` at input_image_size.
  record_format: str = 'unet3d'
  # Share of training patches centred on a foreground voxel (nnU-Net: 0.33).
  foreground_oversample: float = 0.33
  # center_crop: eval on a centre crop/pad of input_image_size.
  # whole_volume: eval on whole volumes with sliding-window inference.
  eval_mode: str = 'center_crop'
  # center_crop eval size; empty: input_image_size. Any size divisible by the
  # model's stride on each axis works, e.g. a whole demo volume.
  eval_image_size: Optional[list[int]] = None
  # none | memory | a file path prefix for an on-disk cache.
  cache: str = 'none'
  # Cases in the training shuffle buffer.
  shuffle_buffer: int = 64
  # Threads for tf.data map; None lets tf.data autotune.
  num_parallel_calls: Optional[int] = None
  # Only these folds of a split file are used, when `split_file` is set.
  split_file: Optional[str] = None
  # The fold of split_file to train (its train side) and evaluate (its val
  # side).
  fold: int = 0
  augmentation: AugmentationConfig = field(default_factory=AugmentationConfig)


@dataclass
class LossConfig:
  """Options of the loss named by the flat `loss` key."""
  # false: the dice-family losses leave class 0 (background) out.
  include_background: bool = True
  # Dice over the whole batch (nnU-Net's option), not per example.
  batch_dice: bool = False
  # Added to the numerator and denominator of dice-family ratios.
  smooth: float = 1e-5
  # Per-class weights (num_classes values): weighted_cross_entropy, dice,
  # jaccard, tversky, bce channels, extra factors of wce.
  class_weights: Optional[list[float]] = None
  # Voxels with this label index are left out of every loss.
  ignore_label: Optional[int] = None
  # Focal loss weight of foreground (alpha) vs background (1 - alpha).
  focal_alpha: float = 0.25
  # Focal loss focusing exponent.
  focal_gamma: float = 2.0
  # Tversky weight of false positives.
  tversky_alpha: float = 0.3
  # Tversky weight of false negatives.
  tversky_beta: float = 0.7
  # Weight of the cross-entropy term of dice_ce / bce_dice.
  ce_weight: float = 1.0
  # Weight of the dice term of dice_ce / bce_dice.
  dice_weight: float = 1.0


@dataclass
class MetricsConfig:
  """Evaluation metrics."""
  # How a class absent from both label and prediction scores:
  # 'one' (nnU-Net: dice 1) or 'exclude' (left out of the mean).
  empty_class: str = 'one'
  # Report BraTS whole tumour / tumour core / enhancing regions as well.
  brats_regions: bool = False
  # HD95, ASSD and NSD per case and class on the host (scipy distance
  # transforms inside the masks' bounding box). Off: those report columns
  # stay empty, for faster periodic evaluation of large volumes.
  surface_metrics: bool = True
  # NSD counts surface voxels within this distance (mm) of the other surface.
  surface_tolerance_mm: float = 1.0
  # PNG overlays (three orthogonal slices through each case's foreground
  # centre: image, label and prediction contours) in model_dir/eval/overlays.
  overlays: bool = True


@dataclass
class InferenceConfig:
  """Sliding-window inference over whole volumes: eval (whole_volume mode),
  predict and the exported SavedModel."""
  # Fraction of a window shared with its neighbour along each axis.
  overlap: float = 0.5
  # gaussian (nnU-Net / MONAI importance map) | constant
  weighting: str = 'gaussian'
  # Test-time augmentation: every subset of these spatial axes (0-based) is
  # flipped, predicted, flipped back, and the probabilities averaged
  # (2^len passes). Empty: off. nnU-Net mirrors [0, 1, 2].
  mirror_axes: list[int] = field(default_factory=list)
  # Model folders whose probabilities are averaged (eval, predict, export),
  # each restored with the architecture of its own params.yaml. Empty: the
  # one model of model_dir. `--model_dir=a,b,c` sets it.
  ensemble: list[str] = field(default_factory=list)


@dataclass
class PredictConfig:
  """The predict mode: NIfTI volumes in, segmentations with their geometry out.

  Each input file is one case: a 3D volume (one channel) or a 4D
  [X, Y, Z, C] volume holding every channel. The output is
  `<output_dir>/<input name>_seg.nii.gz` on the input's grid, with its
  affine and header (uint8 class indices; [X, Y, Z, K] uint8 masks for
  sigmoid models).
  """
  # Glob of .nii/.nii.gz files (several globs: comma-separated).
  input_pattern: Optional[str] = None
  # Folder for the <name>_seg.nii.gz outputs.
  output_dir: Optional[str] = None
  # dataset_json: replay the converter's preprocessing (its dataset.json
  # `preprocessing` section) before inference and map the prediction back.
  # none: the inputs are already on the model's grid and normalised.
  preprocessing: str = 'dataset_json'
  # The converter's dataset.json. Empty: the one next to
  # training_file_pattern's shards, when there is one.
  dataset_json: Optional[str] = None
  # Per-class probabilities beside each segmentation: none | nifti
  # (<name>_probabilities.nii.gz, [X, Y, Z, K] as scaled uint16, since NIfTI
  # has no float16) | hdf5 (<name>_probabilities.h5, dataset `predictions`
  # float16 [K, Z, Y, X] as pytorch-3dunet writes).
  save_probabilities: str = 'none'
  # Keep only the largest connected component (face connectivity) of each
  # foreground class (true), or of these classes (a list; sigmoid models:
  # mask channels), as nnU-Net's post-processing. false: off.
  largest_component: Union[bool, list[int]] = False


@dataclass
class TrainConfig:
  """Training-loop settings that the Model Garden did not have."""
  # Steps inside one tf.function call between host updates. Empty: 100 on
  # TPU, 50 on GPUs, 10 on CPU (so progress shows within seconds).
  steps_per_loop: Optional[int] = None
  # Save a checkpoint every this many steps (and at the end).
  checkpoint_every_n_steps: int = 200
  # Checkpoints kept in model_dir.
  keep_checkpoint_max: int = 3
  # TensorBoard scalars (loss, learning rate) every this many steps, whatever
  # steps_per_loop is.
  summary_every_n_steps: int = 50
  # Seconds between progress lines when stdout is not a terminal (a terminal
  # gets a progress bar).
  progress_interval_seconds: float = 30.0
  # train_and_eval: evaluate every this many steps (and at the end); 0: at
  # the end only.
  eval_every_n_steps: int = 0
  # train_and_eval: keep the checkpoint with the best mean foreground dice
  # in model_dir/best/ (with best.json).
  keep_best_checkpoint: bool = True
  # Stop when the mean foreground dice has not improved by more than
  # early_stopping_min_delta for this many evaluations; 0: never.
  early_stopping_patience: int = 0
  # The dice gain that counts as an improvement (early stopping, plateau).
  early_stopping_min_delta: float = 0.0
  # Multiply the learning rate by reduce_lr_factor after this many
  # evaluations without improvement (pytorch-3dunet's ReduceLROnPlateau);
  # 0: off.
  reduce_lr_patience: int = 0
  # The factor reduce-on-plateau applies, in (0, 1).
  reduce_lr_factor: float = 0.5
  # Reduce-on-plateau never takes the learning rate below this.
  min_learning_rate: float = 0.0
  # --benchmark: timed steps, one per call, after the warm-up steps.
  benchmark_steps: int = 50
  # --benchmark: untimed steps first (tracing, pipeline start).
  benchmark_warmup_steps: int = 5
  # constant | exponential (Model Garden) | cosine | polynomial (nnU-Net)
  lr_schedule: str = 'exponential'
  # Linear warm-up from 0 over this many steps, then the schedule.
  warmup_steps: int = 0
  # Decoupled weight decay of the optimizer; 0: none.
  weight_decay: float = 0.0
  # Clip gradients to this global norm. Empty: no clipping.
  gradient_clip_norm: Optional[float] = None
  # XLA-compile each replica's forward and backward pass (the all-reduce and
  # the update stay outside). None: off. Ignored on TPU, where the whole step
  # is compiled anyway, and dropped with a warning when synchronised batch
  # norm runs on several replicas (its all-reduce cannot sit inside XLA).
  jit_compile: Optional[bool] = None


@dataclass
class PlanConfig:
  """Where a planned recipe came from (`unet_main.py --mode=plan` writes
  these; params.yaml keeps them). Training ignores them."""
  # The converter's dataset.json the recipe was planned from.
  dataset_json: Optional[str] = None
  # sha256 of the fingerprint the planner read (unet3d/planning/fingerprint.py).
  fingerprint_sha256: Optional[str] = None
  # The budget the recipe was sized for (e.g. cpu2, gpu16g).
  budget: Optional[str] = None


# ----------------------------------------------------------------------------
# The whole config
# ----------------------------------------------------------------------------


@dataclass
class Config:
  """Every setting of a run. Flat keys are the Model Garden UNet3D's."""
  # --- paths ---
  # Checkpoints, summaries, params.yaml, reports (local or gs://).
  model_dir: str = ''
  # Training TFRecord glob (several: comma-separated).
  training_file_pattern: Optional[str] = None
  # Evaluation TFRecord glob (several: comma-separated).
  eval_file_pattern: Optional[str] = None
  # The TFRecords are GZIP-compressed.
  compressed_input: bool = True
  # precision: float32 | bfloat16 | float16 (mixed precision, float32
  # variables). Empty: bfloat16 on TPU (the Model Garden default), float32
  # elsewhere.
  dtype: Optional[str] = None
  # Dtype of one-hot training labels (use_index_label_in_train false) and of
  # Model Garden records' labels.
  label_dtype: str = 'float32'
  # --- batching and counts ---
  # Global training batch (all replicas).
  train_batch_size: int = 8
  # Global evaluation batch.
  eval_batch_size: int = 8
  # Sliding-window batch of eval (whole_volume) and predict.
  predict_batch_size: int = 8
  # Training steps in all.
  train_steps: int = 100000
  # Training cases per epoch; when set, logs and TensorBoard show epochs.
  # 0: unknown.
  train_item_count: int = 0
  # Evaluate at most this many cases; 0: all records of eval_file_pattern.
  eval_item_count: int = 0
  # --- optimizer ---
  # The optimizer (see train.lr_schedule for the learning rate's course).
  optimizer: str = 'adam'
  # Momentum of the momentum and rmsprop optimizers.
  momentum: float = 0.9
  # Peak learning rate.
  init_learning_rate: float = 0.00005
  # exponential schedule: steps per decay by lr_decay_rate.
  lr_decay_steps: int = 100000
  # exponential schedule: factor per lr_decay_steps.
  lr_decay_rate: float = 0.5
  # --- input and model ---
  # Training patch size (2 or 3 values), each divisible by the model's
  # stride on its axis (2**(levels - 1), or the product of
  # model.pool_sizes).
  input_image_size: list[int] = field(default_factory=lambda: [128, 128, 128])
  # Image channels (modalities).
  num_channels: int = 1
  # TPU spatial partitioning: [1, *spatial splits, 1]; one replica spans
  # prod(splits) TPU cores and each core holds one tile of every volume.
  input_partition_dims: Optional[list[int]] = None
  # The same for the evaluation step's data.eval_image_size volumes; the
  # product must equal input_partition_dims'. Empty: input_partition_dims.
  eval_input_partition_dims: Optional[list[int]] = None
  # With partitioning: XLA's SPMD partitioner (one program for all cores of
  # a replica; TensorFlow suggests it when activations dwarf the parameters,
  # as in 3D) instead of the older MPMD one.
  spmd_xla_partitioning: bool = True
  # Up-sampling by transposed convs; false: nearest up-sampling.
  deconvolution: bool = True
  # Output classes (mask channels for sigmoid models).
  num_classes: int = 3
  # unet3d: filters of the first level (f, 2f per level, doubling);
  # unet3plus: the paper's widths scaled by num_base_filters / 64.
  num_base_filters: int = 32
  # unet3d levels (resolutions), when model.filters is empty.
  depth: int = 4
  # The Model Garden's 0.5 was never applied by its model; 0.0 keeps that.
  dropout_rate: float = 0.0
  # Decoder levels with a segmentation head (1: the final head only).
  num_segmentation_levels: int = 1
  # Batch norm in every conv unit (when model.normalization is empty).
  use_batch_norm: bool = True
  # Only channels_last.
  data_format: str = 'channels_last'
  # --- loss ---
  # Training labels as class indices; false: one-hot of label_dtype.
  use_index_label_in_train: bool = False
  # The loss (see the loss table; options under loss_options).
  loss: str = 'adaptive_dice32'
  # --- run ---
  # Empty: tpu when `tpu` is set, mirrored when GPUs are visible, else cpu.
  distribution_strategy: Optional[str] = None
  # mirrored: a count N uses the first N visible GPUs (0: all of them); a
  # list uses those GPU ids (--num_gpus=0,2,3).
  num_gpus: Union[int, list[int]] = 0
  # TPU name or address (Cloud TPU).
  tpu: Optional[str] = None
  # Seeds Python, numpy, TF and the input pipeline. Empty: unseeded.
  seed: Optional[int] = None
  # Deterministic TF ops and input order (with seed: repeatable runs).
  deterministic: bool = False
  # --- groups ---
  model: ModelConfig = field(default_factory=ModelConfig)
  data: DataConfig = field(default_factory=DataConfig)
  loss_options: LossConfig = field(default_factory=LossConfig)
  metrics: MetricsConfig = field(default_factory=MetricsConfig)
  train: TrainConfig = field(default_factory=TrainConfig)
  inference: InferenceConfig = field(default_factory=InferenceConfig)
  predict: PredictConfig = field(default_factory=PredictConfig)
  plan: PlanConfig = field(default_factory=PlanConfig)


# Keys of the Model Garden config that mean nothing here; accepted and ignored
# so that its YAML files load, but named in a warning.
LEGACY_IGNORED_KEYS = frozenset({
    'tpu_config', 'use_bfloat16', 'train_epochs', 'eval_steps',
    'num_steps_per_eval', 'min_eval_interval', 'eval_timeout', 'strategy_type',
})

# Values of keys that no registry owns. Models, losses, optimizers and
# learning-rate schedules own their names (see `validate`).
CHOICES = {
    'dtype': (None, 'float32', 'bfloat16', 'float16'),
    'label_dtype': ('float32', 'bfloat16', 'float16', 'int32', 'int64',
                    'uint8'),
    'data_format': ('channels_last',),
    'distribution_strategy': (None, 'tpu', 'mirrored', 'multi_worker', 'cpu'),
    'data.record_format': ('unet3d', 'model_garden'),
    'data.eval_mode': ('center_crop', 'whole_volume'),
    'metrics.empty_class': ('one', 'exclude'),
    'inference.weighting': ('gaussian', 'constant'),
    'predict.preprocessing': ('dataset_json', 'none'),
    'predict.save_probabilities': ('none', 'nifti', 'hdf5'),
}


# ----------------------------------------------------------------------------
# Typed conversion from plain YAML values
# ----------------------------------------------------------------------------


def _type_name(tp: Any) -> str:
  origin = typing.get_origin(tp)
  if origin in (Union, types.UnionType):
    return ' or '.join(_type_name(a) for a in typing.get_args(tp))
  if origin is list:
    (item,) = typing.get_args(tp)
    return f'list of {_type_name(item)}'
  if tp is type(None):
    return 'empty'
  return getattr(tp, '__name__', str(tp))


def _convert(value: Any, tp: Any, key: str) -> Any:
  """Converts a YAML value to `tp`, raising ConfigError naming `key`."""
  origin = typing.get_origin(tp)
  if origin in (Union, types.UnionType):
    args = typing.get_args(tp)
    if value is None and type(None) in args:
      return None
    errors = []
    for arg in args:
      if arg is type(None):
        continue
      try:
        return _convert(value, arg, key)
      except ConfigError as e:
        errors.append(e)
    if len(errors) == 1:  # Optional[X]: X's own message is the most precise
      raise errors[0]
    raise ConfigError(f'{key}: expected {_type_name(tp)}, got {value!r}')
  if origin is list:
    (item_tp,) = typing.get_args(tp)
    if isinstance(value, tuple):
      value = list(value)
    if not isinstance(value, list):
      raise ConfigError(f'{key}: expected {_type_name(tp)}, got {value!r}')
    return [_convert(v, item_tp, f'{key}[{i}]') for i, v in enumerate(value)]
  if dataclasses.is_dataclass(tp):
    if isinstance(value, tp):
      return value
    if not isinstance(value, dict):
      raise ConfigError(f'{key}: expected a mapping of {tp.__name__} keys, '
                        f'got {value!r}')
    return _merge_into(tp(), value, prefix=key + '.')
  if tp is bool:
    if isinstance(value, bool):
      return value
    raise ConfigError(f'{key}: expected true or false, got {value!r}')
  if tp is int:
    if isinstance(value, int) and not isinstance(value, bool):
      return value
    if isinstance(value, float) and value.is_integer():
      return int(value)
    raise ConfigError(f'{key}: expected an integer, got {value!r}')
  if tp is float:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
      return float(value)
    if isinstance(value, str):  # YAML 1.1 reads 1e-5 as a string
      try:
        return float(value)
      except ValueError:
        pass
    raise ConfigError(f'{key}: expected a number, got {value!r}')
  if tp is str:
    if isinstance(value, str):
      return value
    raise ConfigError(f'{key}: expected a string, got {value!r}')
  if tp is Any:
    return value
  raise ConfigError(f'{key}: unsupported type {tp!r}')


def _field_types(cls: type) -> dict[str, Any]:
  return typing.get_type_hints(cls)


def _unknown_key_error(key: str, prefix: str, known: list[str]) -> ConfigError:
  guess = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
  hint = f"; did you mean '{prefix}{guess[0]}'?" if guess else ''
  return ConfigError(f"unknown config key '{prefix}{key}'{hint}")


def _merge_into(obj: Any, values: dict[str, Any], prefix: str = '') -> Any:
  """Returns a copy of dataclass `obj` with `values` merged in, type-checked."""
  if values is None:
    return obj
  if not isinstance(values, dict):
    raise ConfigError(f"{prefix.rstrip('.') or 'config'}: expected a mapping, "
                      f'got {values!r}')
  hints = _field_types(type(obj))
  updates = {}
  for key, value in values.items():
    key = str(key)
    if key not in hints:
      if not prefix and key in LEGACY_IGNORED_KEYS:
        logging.getLogger('unet3d').warning(
            "config key '%s' of the TF Model Garden means nothing here; "
            'ignored', key)
        continue
      raise _unknown_key_error(key, prefix, list(hints))
    tp = hints[key]
    if dataclasses.is_dataclass(tp) and isinstance(value, dict):
      updates[key] = _merge_into(getattr(obj, key), value, prefix + key + '.')
    else:
      updates[key] = _convert(value, tp, prefix + key)
  return dataclasses.replace(obj, **updates)


# ----------------------------------------------------------------------------
# Overrides
# ----------------------------------------------------------------------------


def _split_top_level(text: str, sep: str = ',') -> list[str]:
  """Splits on `sep` outside brackets and quotes."""
  parts, depth, quote, current = [], 0, None, []
  for ch in text:
    if quote:
      if ch == quote:
        quote = None
    elif ch in '\'"':
      quote = ch
    elif ch in '[{(':
      depth += 1
    elif ch in ']})':
      depth -= 1
    elif ch == sep and depth == 0:
      parts.append(''.join(current))
      current = []
      continue
    current.append(ch)
  parts.append(''.join(current))
  return [p for p in (p.strip() for p in parts) if p]


def parse_override(text: Union[str, dict, None]) -> dict[str, Any]:
  """Parses `--params_override`: a YAML/JSON mapping, or `a.b=c,d=e`.

  A dotted key becomes a nested mapping. An empty value means None. A dict
  (from Python callers) is taken as already parsed.
  """
  if isinstance(text, dict):
    return copy.deepcopy(text)
  if not text or not text.strip():
    return {}
  stripped = text.strip()
  if not re.match(r'^[\w.]+\s*=', stripped):
    try:
      loaded = yaml.safe_load(stripped)
    except yaml.YAMLError as e:
      raise ConfigError(f'--params_override: not valid YAML/JSON: '
                        f'{str(e).splitlines()[0]}') from None
    if not isinstance(loaded, dict):
      raise ConfigError('--params_override: expected a mapping or a.b=c,d=e, '
                        f'got {text!r}')
    return loaded
  items = []
  for item in _split_top_level(stripped):
    if '=' not in item:
      raise ConfigError(f"--params_override: '{item}' is not key=value")
    key, raw = item.split('=', 1)
    key, raw = key.strip(), raw.strip()
    try:
      value = yaml.safe_load(raw) if raw else None
    except yaml.YAMLError:
      value = raw
    items.append((key, value))
  return nest_dotted(items, '--params_override')


def nest_dotted(items, source: str) -> dict[str, Any]:
  """(dotted key, value) pairs, e.g. ('model.name', 'unet3d'), as nested
  mappings; later pairs win. Errors name `source`."""
  result: dict[str, Any] = {}
  for key, value in items:
    node = result
    parts = key.split('.')
    for part in parts[:-1]:
      node = node.setdefault(part, {})
      if not isinstance(node, dict):
        raise ConfigError(f"{source}: '{key}' conflicts with an earlier "
                          'value')
    node[parts[-1]] = value
  return result


# ----------------------------------------------------------------------------
# Loading, validation, saving
# ----------------------------------------------------------------------------


def parse_yaml(text: str, source: str) -> dict[str, Any]:
  """A YAML mapping of keys from text; errors name `source`."""
  try:
    loaded = yaml.safe_load(text)
  except yaml.YAMLError as e:
    raise ConfigError(f'{source}: not valid YAML: '
                      f'{str(e).splitlines()[0]}') from None
  if loaded is None:
    return {}
  if not isinstance(loaded, dict):
    raise ConfigError(f'{source}: expected a mapping of keys')
  return loaded


def load_yaml_file(path: str) -> dict[str, Any]:
  """Reads a local YAML config file; errors name the file."""
  if not os.path.isfile(path):
    raise ConfigError(f'config file {path}: not found')
  with open(path) as f:
    return parse_yaml(f.read(), f'config file {path}')


def merge(cfg: Config, values: dict[str, Any]) -> Config:
  """Returns `cfg` with a nested mapping of values merged in."""
  return _merge_into(cfg, values)


def build_config(config_file: Optional[str] = None,
                 params_override: Optional[str] = None,
                 flag_values: Optional[dict[str, Any]] = None,
                 base: Optional[Config] = None) -> Config:
  """Resolves defaults -> config file -> override -> flags, then validates.

  Args:
    config_file: a YAML file, or None.
    params_override: a YAML/JSON string or `a.b=c,d=e`, or None.
    flag_values: explicitly set flags by config key; None values are skipped.
    base: the starting config (defaults when None), e.g. a saved params.yaml.
  """
  cfg = base if base is not None else Config()
  if config_file:
    cfg = merge(cfg, load_yaml_file(config_file))
  cfg = merge(cfg, parse_override(params_override))
  if flag_values:
    cfg = merge(cfg, {k: v for k, v in flag_values.items() if v is not None})
  validate(cfg)
  return cfg


def check_divisible_by_replicas(key: str, batch: int, replicas: int) -> None:
  """A global batch must split evenly over the replicas in sync."""
  if batch % replicas:
    raise ConfigError(f'{key}: {batch} is not divisible by the {replicas} '
                      f'replicas in sync; use a multiple of {replicas}')


def value_at(cfg: Config, dotted: str) -> Any:
  """The value of a dotted key, e.g. `model.name`."""
  obj = cfg
  for part in dotted.split('.'):
    obj = getattr(obj, part)
  return obj


def validate(cfg: Config) -> None:
  """Checks every key and cross-field constraint; raises ConfigError (one
  line naming the key).

  The model zoo, losses and optimizers own their names and their own checks;
  validation asks them. They are imported here, not at the top, so that
  importing this module does not import TensorFlow.
  """
  # pylint: disable=g-import-not-at-top
  from unet3d import losses
  from unet3d import models
  from unet3d import optimizers
  # pylint: enable=g-import-not-at-top
  for dotted, choices in CHOICES.items():
    value = value_at(cfg, dotted)
    if value not in choices:
      shown = ', '.join(str(c) for c in choices if c is not None)
      raise ConfigError(f'{dotted}: expected one of {shown}, got {value!r}')
  for key in ('train_batch_size', 'eval_batch_size', 'predict_batch_size'):
    if getattr(cfg, key) <= 0:
      raise ConfigError(f'{key}: must be a positive integer, '
                        f'got {getattr(cfg, key)}')
  if cfg.train_steps < 1:
    raise ConfigError(f'train_steps: must be >= 1, got {cfg.train_steps}')
  if not 0.0 <= cfg.inference.overlap < 1.0:
    raise ConfigError('inference.overlap: must be in [0, 1), got '
                      f'{cfg.inference.overlap}')
  _validate_inference(cfg)
  _validate_train(cfg.train)
  if not 0.0 <= cfg.data.foreground_oversample <= 1.0:
    raise ConfigError('data.foreground_oversample: must be in [0, 1], got '
                      f'{cfg.data.foreground_oversample}')
  _validate_num_gpus(cfg.num_gpus)
  models.check_model_config(cfg)
  strides = models.axis_strides(cfg)
  _validate_partition_dims('input_partition_dims', cfg.input_partition_dims,
                           cfg.input_image_size, strides)
  _validate_eval_partition_dims(cfg, strides)
  losses.check_loss_config(cfg)
  optimizers.check_optimizer_config(cfg)
  _validate_augmentation(cfg.data.augmentation, cfg.input_image_size)


def _validate_inference(cfg: Config) -> None:
  """mirror_axes, ensemble members and largest_component classes."""
  rank = cfg.model.spatial_dims
  axes = cfg.inference.mirror_axes
  if len(set(axes)) != len(axes) or any(not 0 <= a < rank for a in axes):
    raise ConfigError(f'inference.mirror_axes: expected distinct spatial axes '
                      f'in 0..{rank - 1}, got {axes}')
  members = cfg.inference.ensemble
  if any(not m for m in members) or len(set(members)) != len(members):
    raise ConfigError('inference.ensemble: expected distinct, non-empty model '
                      f'folders, got {members}')
  if cfg.metrics.surface_tolerance_mm < 0:
    raise ConfigError('metrics.surface_tolerance_mm: must be >= 0, got '
                      f'{cfg.metrics.surface_tolerance_mm}')
  classes = cfg.predict.largest_component
  if isinstance(classes, list):
    first = 0 if cfg.model.output_activation == 'sigmoid' else 1
    if any(not first <= c < cfg.num_classes for c in classes):
      raise ConfigError(f'predict.largest_component: expected classes in '
                        f'{first}..{cfg.num_classes - 1}, got {classes}')


def _validate_train(train: TrainConfig) -> None:
  positive = ['checkpoint_every_n_steps', 'keep_checkpoint_max',
              'summary_every_n_steps', 'benchmark_steps']
  if train.steps_per_loop is not None:
    positive.append('steps_per_loop')
  for name in positive:
    if getattr(train, name) < 1:
      raise ConfigError(f'train.{name}: must be >= 1, got '
                        f'{getattr(train, name)}')
  for name in ('eval_every_n_steps', 'early_stopping_patience',
               'reduce_lr_patience', 'benchmark_warmup_steps', 'warmup_steps',
               'early_stopping_min_delta', 'min_learning_rate',
               'weight_decay'):
    if getattr(train, name) < 0:
      raise ConfigError(f'train.{name}: must be >= 0, got '
                        f'{getattr(train, name)}')
  if not 0.0 < train.reduce_lr_factor < 1.0:
    raise ConfigError('train.reduce_lr_factor: must be in (0, 1), got '
                      f'{train.reduce_lr_factor}')
  if train.progress_interval_seconds <= 0:
    raise ConfigError('train.progress_interval_seconds: must be positive, '
                      f'got {train.progress_interval_seconds}')


def eval_partition_dims(cfg: Config) -> Optional[list[int]]:
  """The evaluation step's TPU partitioning: eval_input_partition_dims, else
  input_partition_dims (None: not partitioned)."""
  return cfg.eval_input_partition_dims or cfg.input_partition_dims


def parse_num_gpus(text: str) -> Union[int, list[int]]:
  """`--num_gpus`: '4' is a count, '0,2,3' (or '3,') a list of GPU ids."""
  parts = [p.strip() for p in str(text).split(',')]
  try:
    if len(parts) == 1:
      return int(parts[0])
    return [int(p) for p in parts if p]
  except ValueError:
    raise ConfigError(f'--num_gpus: expected a count (4) or GPU ids (0,2,3), '
                      f'got {text!r}') from None


def _validate_num_gpus(value: Union[int, list[int]]) -> None:
  if isinstance(value, int):
    if value < 0:
      raise ConfigError(f'num_gpus: must be >= 0, got {value}')
    return
  if not value or any(i < 0 for i in value) or len(set(value)) != len(value):
    raise ConfigError(f'num_gpus: expected distinct GPU ids >= 0, got {value}')


def _validate_eval_partition_dims(cfg: Config, strides: list[int]) -> None:
  """The eval step's partitioning fits data.eval_image_size and uses as many
  cores per replica as training (the TPU's device assignment is fixed)."""
  dims = cfg.eval_input_partition_dims
  if dims is not None:
    if not cfg.input_partition_dims:
      raise ConfigError('eval_input_partition_dims: set input_partition_dims '
                        'too (it fixes the TPU cores per replica)')
    _validate_partition_dims('eval_input_partition_dims', dims,
                             cfg.input_image_size, None, check_sizes=False)
    if math.prod(dims) != math.prod(cfg.input_partition_dims):
      raise ConfigError(
          f'eval_input_partition_dims: {dims} splits a replica into '
          f'{math.prod(dims)} cores, input_partition_dims '
          f'{cfg.input_partition_dims} into '
          f'{math.prod(cfg.input_partition_dims)}; they must match')
  if cfg.data.eval_mode == 'center_crop' and eval_partition_dims(cfg):
    key = ('eval_input_partition_dims' if dims is not None
           else 'input_partition_dims')
    _validate_partition_dims(key, eval_partition_dims(cfg),
                             cfg.data.eval_image_size or cfg.input_image_size,
                             strides, size_key='data.eval_image_size')


def _validate_partition_dims(key: str, dims: Optional[list[int]],
                             size: list[int], strides: Optional[list[int]],
                             check_sizes: bool = True,
                             size_key: str = 'input_image_size') -> None:
  """TPU spatial partitioning: [1, *spatial splits, 1], each split dividing
  its axis of `size` at the input and at the bottleneck (`size` over the
  model's per-axis `strides`)."""
  if dims is None:
    return
  spatial_dims = len(size)
  expected_rank = spatial_dims + 2
  if len(dims) != expected_rank:
    raise ConfigError(
        f'{key}: expected {expected_rank} values '
        f'[batch, {", ".join("spatial" for _ in range(spatial_dims))}, '
        f'channels], got {dims}')
  if any(d < 1 for d in dims):
    raise ConfigError(f'{key}: values must be >= 1, got {dims}')
  if dims[0] != 1 or dims[-1] != 1:
    raise ConfigError(f'{key}: the batch and channel entries must be 1 (only '
                      f'spatial axes are partitioned), got {dims}')
  if not check_sizes:
    return
  for axis, (d, s, stride) in enumerate(zip(dims[1:-1], size, strides)):
    if s % d:
      raise ConfigError(f'{key}: spatial axis {axis} of {size_key} {size} is '
                        f'not divisible by {d}')
    if (s // stride) % d:
      raise ConfigError(
          f'{key}: spatial axis {axis} of {size_key} {size} at the bottleneck '
          f'({s}/{stride}={s // stride}) is not divisible by {d}')


def _validate_augmentation(aug: AugmentationConfig, size: list[int]) -> None:
  key = 'data.augmentation'
  for name, value in vars(aug).items():
    if name.endswith('_prob') and not 0.0 <= value <= 1.0:
      raise ConfigError(f'{key}.{name}: must be in [0, 1], got {value}')
    if name.endswith('_range') and (len(value) != 2 or value[0] > value[1] or
                                    value[0] < 0):
      raise ConfigError(f'{key}.{name}: expected [low, high] with 0 <= low '
                        f'<= high, got {value}')
  if aug.scale_range[0] <= 0:
    raise ConfigError(f'{key}.scale_range: factors must be positive, got '
                      f'{aug.scale_range}')
  rank = len(size)
  for name in ('flip_axes', 'rot90_axes'):
    axes = getattr(aug, name) or []
    if any(not 0 <= a < rank for a in axes):
      raise ConfigError(f'{key}.{name}: spatial axes are 0..{rank - 1}, got '
                        f'{axes}')
  if len(aug.rot90_axes) != 2 or aug.rot90_axes[0] == aug.rot90_axes[1]:
    raise ConfigError(f'{key}.rot90_axes: expected two different axes, got '
                      f'{aug.rot90_axes}')
  a, b = aug.rot90_axes
  if aug.rot90_prob > 0 and size[a] != size[b]:
    raise ConfigError(f'{key}.rot90_axes: rot90 needs a square plane, but '
                      f'input_image_size is {size[a]} x {size[b]} on axes '
                      f'{a}, {b}')
  if aug.left_right_label_pairs:
    flip_axes = aug.flip_axes or list(range(rank))
    if aug.left_right_axis not in flip_axes:
      raise ConfigError(f'{key}.left_right_axis: set it to one of the flipped '
                        f'axes {flip_axes} to swap left_right_label_pairs')
    if any(len(p) != 2 or min(p) < 1 for p in aug.left_right_label_pairs):
      raise ConfigError(f'{key}.left_right_label_pairs: expected pairs of '
                        f'foreground classes, got {aug.left_right_label_pairs}')
  if aug.elastic_sigma <= 0 or aug.elastic_magnitude < 0:
    raise ConfigError(f'{key}.elastic_sigma: must be positive (and '
                      'elastic_magnitude >= 0)')


def to_dict(cfg: Config) -> dict[str, Any]:
  return dataclasses.asdict(cfg)


def to_yaml(cfg: Config) -> str:
  """The resolved config as YAML text (what params.yaml holds)."""
  return yaml.safe_dump(to_dict(cfg), sort_keys=False, default_flow_style=None)


def from_yaml(text: str, source: str) -> Config:
  """A validated config from YAML text; errors name `source`."""
  return build_config_from_mapping(parse_yaml(text, source))


def build_config_from_mapping(values: dict[str, Any]) -> Config:
  """Defaults with `values` merged in, validated."""
  cfg = merge(Config(), values)
  validate(cfg)
  return cfg

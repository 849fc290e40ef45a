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
import dataclasses
import difflib
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
  spatial_dims: int = 3
  # batch | instance | group | none. None follows the flat `use_batch_norm`.
  normalization: Optional[str] = None
  num_groups: int = 8
  # relu | leaky_relu | elu | prelu
  activation: str = 'relu'
  leaky_relu_alpha: float = 0.01
  residual: bool = False
  # maxpool | strided_conv
  downsampling: str = 'maxpool'
  # Per-level filters. None: num_base_filters * 2**level (unet3d), or the
  # UNet 3+ paper's [64, 128, 256, 512, 1024] scaled by num_base_filters/64.
  filters: Optional[list[int]] = None
  max_filters: Optional[int] = None
  # UNet 3+: channels of each full-scale skip branch (64 in the paper).
  cat_channels: int = 64
  # Deep supervision head weights, finest head first. None: equal weights.
  # 'nnunet' gives 1/2**i normalised to sum to 1.
  deep_supervision_weights: Optional[Union[str, list[float]]] = None
  # Weight of the classification-guided module's BCE in the total loss.
  cgm_loss_weight: float = 1.0
  # Per-block tf.recompute_grad to trade compute for activation memory.
  recompute_grad: bool = False
  # softmax (exclusive classes) | sigmoid (multi-label, e.g. BraTS regions)
  output_activation: str = 'softmax'


@dataclass
class AugmentationConfig:
  """Training-time augmentation. Each `*_prob` is a per-sample probability.

  Defaults follow nnU-Net's probabilities. Augmentation never runs in eval.
  """
  enabled: bool = True
  flip_prob: float = 0.5  # per axis
  # Empty: every spatial axis.
  flip_axes: Optional[list[int]] = None
  # A flip of this axis swaps each pair of classes (e.g. left/right kidney).
  left_right_axis: Optional[int] = None
  left_right_label_pairs: Optional[list[list[int]]] = None
  # Rotation by 90, 180 or 270 degrees in one (square) plane.
  rot90_prob: float = 0.0
  rot90_axes: list[int] = field(default_factory=lambda: [0, 1])
  # Rotation (each angle uniform in +-rotation_degrees) and isotropic scaling
  # (> 1 zooms in), applied while the patch is cut from the whole volume.
  affine_prob: float = 0.2
  rotation_degrees: float = 30.0
  scale_range: list[float] = field(default_factory=lambda: [0.7, 1.4])
  # Smooth random displacement: Gaussian-smoothed noise (sigma in voxels)
  # scaled to a peak displacement of elastic_magnitude voxels.
  elastic_prob: float = 0.0
  elastic_sigma: float = 10.0
  elastic_magnitude: float = 2.0
  brightness_prob: float = 0.15  # multiplicative
  brightness_range: list[float] = field(default_factory=lambda: [0.75, 1.25])
  contrast_prob: float = 0.15
  contrast_range: list[float] = field(default_factory=lambda: [0.75, 1.25])
  gamma_prob: float = 0.3
  gamma_range: list[float] = field(default_factory=lambda: [0.7, 1.5])
  noise_prob: float = 0.1
  noise_std: float = 0.1  # the noise std is uniform in [0, noise_std]
  blur_prob: float = 0.2
  blur_sigma_range: list[float] = field(default_factory=lambda: [0.5, 1.0])
  # Nearest down-sampling by a zoom in this range, then linear up-sampling.
  low_resolution_prob: float = 0.25
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
  # model's total stride works, e.g. a whole demo volume.
  eval_image_size: Optional[list[int]] = None
  # none | memory | a file path prefix for an on-disk cache.
  cache: str = 'none'
  shuffle_buffer: int = 64
  # Threads for tf.data map; None lets tf.data autotune.
  num_parallel_calls: Optional[int] = None
  # Only these folds of a split file are used, when `split_file` is set.
  split_file: Optional[str] = None
  fold: int = 0
  augmentation: AugmentationConfig = field(default_factory=AugmentationConfig)


@dataclass
class LossConfig:
  """Options of the loss named by the flat `loss` key."""
  include_background: bool = True
  batch_dice: bool = False
  smooth: float = 1e-5
  class_weights: Optional[list[float]] = None
  ignore_label: Optional[int] = None
  focal_alpha: float = 0.25
  focal_gamma: float = 2.0
  tversky_alpha: float = 0.3
  tversky_beta: float = 0.7
  # dice_ce / bce_dice weights
  ce_weight: float = 1.0
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
  steps_per_loop: int = 50
  checkpoint_every_n_steps: int = 200
  keep_checkpoint_max: int = 3
  # TensorBoard scalars (loss, learning rate) every this many steps, whatever
  # steps_per_loop is.
  summary_every_n_steps: int = 50
  # train_and_eval: evaluate every this many steps (and at the end).
  eval_every_n_steps: int = 0
  # constant | exponential (Model Garden) | cosine | polynomial (nnU-Net)
  lr_schedule: str = 'exponential'
  warmup_steps: int = 0
  weight_decay: float = 0.0
  gradient_clip_norm: Optional[float] = None
  # XLA. None: on for GPU/TPU, off on CPU where it is much slower.
  jit_compile: Optional[bool] = None


# ----------------------------------------------------------------------------
# The whole config
# ----------------------------------------------------------------------------


@dataclass
class Config:
  """Every setting of a run. Flat keys are the Model Garden UNet3D's."""
  # paths
  model_dir: str = ''
  training_file_pattern: Optional[str] = None
  eval_file_pattern: Optional[str] = None
  compressed_input: bool = True
  # precision: float32 | bfloat16 | float16 (mixed precision, float32
  # variables). Empty: bfloat16 on TPU (the Model Garden default), float32
  # elsewhere.
  dtype: Optional[str] = None
  label_dtype: str = 'float32'
  # batching and counts
  train_batch_size: int = 8
  eval_batch_size: int = 8
  predict_batch_size: int = 8
  train_steps: int = 100000
  # Training cases per epoch; when set, logs and TensorBoard show epochs.
  # 0: unknown.
  train_item_count: int = 0
  # Evaluate at most this many cases; 0: all records of eval_file_pattern.
  eval_item_count: int = 0
  # optimizer
  optimizer: str = 'adam'
  momentum: float = 0.9
  init_learning_rate: float = 0.00005
  lr_decay_steps: int = 100000
  lr_decay_rate: float = 0.5
  # input and model
  input_image_size: list[int] = field(default_factory=lambda: [128, 128, 128])
  num_channels: int = 1
  input_partition_dims: Optional[list[int]] = None
  deconvolution: bool = True
  num_classes: int = 3
  num_base_filters: int = 32
  depth: int = 4
  # The Model Garden's 0.5 was never applied by its model; 0.0 keeps that.
  dropout_rate: float = 0.0
  # Decoder levels with a segmentation head (1: the final head only).
  num_segmentation_levels: int = 1
  use_batch_norm: bool = True
  data_format: str = 'channels_last'
  # loss
  use_index_label_in_train: bool = False
  loss: str = 'adaptive_dice32'
  # run. distribution_strategy empty: tpu when `tpu` is set, mirrored when
  # GPUs are visible, else cpu.
  distribution_strategy: Optional[str] = None
  num_gpus: int = 0
  tpu: Optional[str] = None
  seed: Optional[int] = None
  deterministic: bool = False
  # groups
  model: ModelConfig = field(default_factory=ModelConfig)
  data: DataConfig = field(default_factory=DataConfig)
  loss_options: LossConfig = field(default_factory=LossConfig)
  metrics: MetricsConfig = field(default_factory=MetricsConfig)
  train: TrainConfig = field(default_factory=TrainConfig)
  inference: InferenceConfig = field(default_factory=InferenceConfig)
  predict: PredictConfig = field(default_factory=PredictConfig)


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
  result: dict[str, Any] = {}
  for item in _split_top_level(stripped):
    if '=' not in item:
      raise ConfigError(f"--params_override: '{item}' is not key=value")
    key, raw = item.split('=', 1)
    key, raw = key.strip(), raw.strip()
    try:
      value = yaml.safe_load(raw) if raw else None
    except yaml.YAMLError:
      value = raw
    node = result
    parts = key.split('.')
    for part in parts[:-1]:
      node = node.setdefault(part, {})
      if not isinstance(node, dict):
        raise ConfigError(f"--params_override: '{key}' conflicts with an "
                          'earlier value')
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


def _choice_value(cfg: Config, dotted: str) -> Any:
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
    value = _choice_value(cfg, dotted)
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
  if cfg.train.steps_per_loop < 1:
    raise ConfigError('train.steps_per_loop: must be >= 1, got '
                      f'{cfg.train.steps_per_loop}')
  if cfg.train.summary_every_n_steps < 1:
    raise ConfigError('train.summary_every_n_steps: must be >= 1, got '
                      f'{cfg.train.summary_every_n_steps}')
  if not 0.0 <= cfg.data.foreground_oversample <= 1.0:
    raise ConfigError('data.foreground_oversample: must be in [0, 1], got '
                      f'{cfg.data.foreground_oversample}')
  models.check_model_config(cfg)
  _validate_partition_dims(cfg.input_partition_dims, cfg.input_image_size,
                           models.total_stride(cfg))
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


def _validate_partition_dims(dims: Optional[list[int]], size: list[int],
                             stride: int) -> None:
  """TPU spatial partitioning: [1, *spatial splits, 1], each split dividing
  its axis at the input and at the bottleneck."""
  if dims is None:
    return
  spatial_dims = len(size)
  expected_rank = spatial_dims + 2
  if len(dims) != expected_rank:
    raise ConfigError(
        f'input_partition_dims: expected {expected_rank} values '
        f'[batch, {", ".join("spatial" for _ in range(spatial_dims))}, '
        f'channels], got {dims}')
  if any(d < 1 for d in dims):
    raise ConfigError(f'input_partition_dims: values must be >= 1, got '
                      f'{dims}')
  if dims[0] != 1 or dims[-1] != 1:
    raise ConfigError(f'input_partition_dims: the batch and channel entries '
                      f'must be 1 (only spatial axes are partitioned), got '
                      f'{dims}')
  for axis, (d, s) in enumerate(zip(dims[1:-1], size)):
    if s % d:
      raise ConfigError(f'input_partition_dims: spatial axis {axis} of size '
                        f'{s} is not divisible by {d}')
    if (s // stride) % d:
      raise ConfigError(
          f'input_partition_dims: spatial axis {axis} at the bottleneck '
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

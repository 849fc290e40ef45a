"""Validation of a merged config: every key and cross-field constraint.

Keys no registry owns are checked here; the model zoo, losses and
optimizers own their keys and their checks (`unet3d.models`,
`unet3d.losses`, `unet3d.optimizers`), and `validate` asks them. Also here:
the run-time facts that depend on validated keys (the eval step's TPU
partitioning, `--num_gpus`, batch sizes over replicas).
"""

from __future__ import annotations

import math
from typing import Optional, Union

from unet3d.config.schema import CHOICES, Config, value_at
from unet3d.config.schema import AugmentationConfig, TrainConfig
from unet3d.errors import ConfigError


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


def empty_policy(metrics) -> str:
  """The one empty-mask policy ('fixed' or 'nan') of `metrics`:
  metrics.empty_masks, or metrics.empty_class mapped (one: fixed,
  exclude: nan) when empty_masks is unset."""
  if metrics.empty_masks:
    return metrics.empty_masks
  return 'nan' if metrics.empty_class == 'exclude' else 'fixed'


def _validate_metrics(cfg: Config) -> None:
  """Distances and volumes of `metrics` and its one empty-mask policy."""
  m = cfg.metrics
  if not (m.surface_tolerance_mm >= 0 and math.isfinite(
      m.surface_tolerance_mm)):
    raise ConfigError('metrics.surface_tolerance_mm: must be >= 0 and finite,'
                      f' got {m.surface_tolerance_mm}')
  if not m.hd95_penalty_mm >= 0:  # also refuses NaN; .inf is allowed
    raise ConfigError('metrics.hd95_penalty_mm: must be >= 0 (.inf allowed),'
                      f' got {m.hd95_penalty_mm}')
  for key in ('lesion_dilation_mm', 'lesion_min_volume_mm3'):
    value = getattr(m, key)
    if not (value >= 0 and math.isfinite(value)):
      raise ConfigError(f'metrics.{key}: must be >= 0 and finite, got '
                        f'{value}')
  if m.empty_masks == 'fixed' and m.empty_class == 'exclude':
    raise ConfigError("metrics.empty_masks: 'fixed' contradicts "
                      "metrics.empty_class 'exclude' (one policy per metric;"
                      " set empty_masks alone)")


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
  _validate_metrics(cfg)
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


def check_divisible_by_replicas(key: str, batch: int, replicas: int) -> None:
  """A global batch must split evenly over the replicas in sync."""
  if batch % replicas:
    raise ConfigError(f'{key}: {batch} is not divisible by the {replicas} '
                      f'replicas in sync; use a multiple of {replicas}')

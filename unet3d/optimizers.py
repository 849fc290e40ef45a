"""Optimizers and learning-rate schedules: the registries of their names and
their builders from the config.

Builders take `cfg`, a `unet3d.config.Config`; they do not import that
module, because config validation imports these registries.
"""

from __future__ import annotations

import math
from typing import Callable, NamedTuple, Optional

import keras
import tensorflow as tf

from unet3d.errors import ConfigError, unknown_name


class WarmupSchedule(keras.optimizers.schedules.LearningRateSchedule):
  """Linear warm-up from 0 to the wrapped schedule's value at `warmup_steps`."""

  def __init__(self, schedule, warmup_steps: int):
    super().__init__()
    self.schedule = schedule
    self.warmup_steps = warmup_steps

  def __call__(self, step):
    step = tf.cast(step, tf.float32)
    after = self.schedule(step)
    ramp = after * (step + 1.0) / float(self.warmup_steps)
    return tf.where(step < self.warmup_steps, ramp, after)

  def get_config(self):
    return {'schedule': keras.saving.serialize_keras_object(self.schedule),
            'warmup_steps': self.warmup_steps}


class ConstantSchedule(keras.optimizers.schedules.LearningRateSchedule):

  def __init__(self, value: float):
    super().__init__()
    self.value = value

  def __call__(self, step):
    del step
    return tf.constant(self.value, tf.float32)

  def get_config(self):
    return {'value': self.value}


def _exponential(cfg):
  return keras.optimizers.schedules.ExponentialDecay(
      cfg.init_learning_rate, decay_steps=cfg.lr_decay_steps,
      decay_rate=cfg.lr_decay_rate)


def _cosine(cfg):
  return keras.optimizers.schedules.CosineDecay(
      cfg.init_learning_rate, decay_steps=cfg.train_steps)


def _polynomial(cfg):
  return keras.optimizers.schedules.PolynomialDecay(
      cfg.init_learning_rate, decay_steps=cfg.train_steps,
      end_learning_rate=0.0, power=0.9)


class Entry(NamedTuple):
  """A registered optimizer or schedule: its builder and a one-line
  description (docs/config_reference.md shows it)."""
  build: Callable
  description: str


# train.lr_schedule -> the schedule's builder.
LR_SCHEDULES: dict[str, Entry] = {
    'constant': Entry(lambda cfg: ConstantSchedule(cfg.init_learning_rate),
                      '`init_learning_rate` throughout'),
    'exponential': Entry(_exponential, 'the Model Garden\'s '
                         '`init_learning_rate * lr_decay_rate ** (step / '
                         'lr_decay_steps)`'),
    'cosine': Entry(_cosine, 'cosine decay to 0 at `train_steps`'),
    'polynomial': Entry(_polynomial, 'nnU-Net\'s `(1 - step / train_steps) '
                        '** 0.9`'),
}


class ScaledSchedule(keras.optimizers.schedules.LearningRateSchedule):
  """The wrapped schedule times a scale variable (reduce-on-plateau), never
  below `minimum`."""

  def __init__(self, schedule, scale: tf.Variable, minimum: float = 0.0):
    super().__init__()
    self.schedule = schedule
    self.scale = scale
    self.minimum = minimum

  def __call__(self, step):
    scaled = self.schedule(step) * tf.cast(self.scale, tf.float32)
    return tf.maximum(scaled, self.minimum) if self.minimum else scaled

  def get_config(self):
    return {'schedule': keras.saving.serialize_keras_object(self.schedule),
            'minimum': self.minimum}


def build_schedule(cfg):
  """The learning rate as a function of the step.

  exponential: the Model Garden's init_learning_rate * lr_decay_rate **
    (step / lr_decay_steps); cosine: decays to 0 at train_steps;
  polynomial: nnU-Net's (1 - step/train_steps) ** 0.9.
  """
  schedule = LR_SCHEDULES[cfg.train.lr_schedule].build(cfg)
  if cfg.train.warmup_steps > 0:
    schedule = WarmupSchedule(schedule, cfg.train.warmup_steps)
  return schedule


def _momentum(cfg, **common):
  return keras.optimizers.SGD(momentum=cfg.momentum, nesterov=True, **common)


def _rmsprop(cfg, **common):
  return keras.optimizers.RMSprop(momentum=cfg.momentum, **common)


def _adamw(cfg, weight_decay=None, **common):
  del cfg
  return keras.optimizers.AdamW(weight_decay=weight_decay or 0.004, **common)


# optimizer -> builder(cfg, learning_rate=, weight_decay=, [global_clipnorm=]).
OPTIMIZERS: dict[str, Entry] = {
    'adam': Entry(lambda cfg, **common: keras.optimizers.Adam(**common),
                  'Adam (`train.weight_decay`: decoupled decay)'),
    'adamw': Entry(_adamw, 'AdamW, weight decay `train.weight_decay` or '
                   '0.004'),
    'sgd': Entry(lambda cfg, **common: keras.optimizers.SGD(**common),
                 'plain SGD'),
    'momentum': Entry(_momentum, 'SGD with Nesterov momentum `momentum`'),
    'rmsprop': Entry(_rmsprop, 'RMSprop with momentum `momentum`'),
}


def check_optimizer_config(cfg) -> None:
  """Raises ConfigError (one line naming the key) for optimizer and
  schedule keys; config validation calls it."""
  if cfg.optimizer not in OPTIMIZERS:
    raise unknown_name('optimizer', cfg.optimizer, tuple(OPTIMIZERS),
                       'optimizer')
  if cfg.train.lr_schedule not in LR_SCHEDULES:
    raise unknown_name('train.lr_schedule', cfg.train.lr_schedule,
                       tuple(LR_SCHEDULES), 'schedule')
  if cfg.init_learning_rate <= 0:
    raise ConfigError('init_learning_rate: must be positive, got '
                      f'{cfg.init_learning_rate}')
  clip = cfg.train.gradient_clip_norm
  if clip is not None and (not clip > 0 or math.isinf(clip)):
    raise ConfigError(f'train.gradient_clip_norm: must be positive, got {clip}')


def build_optimizer(cfg, lr_scale: Optional[tf.Variable] = None
                   ) -> keras.optimizers.Optimizer:
  """Builds the optimizer named by `cfg.optimizer`, wrapped in loss scaling
  when the global precision policy computes in float16. `lr_scale` (a
  float32 variable) multiplies the schedule, for reduce-on-plateau."""
  schedule = build_schedule(cfg)
  if lr_scale is not None:
    schedule = ScaledSchedule(schedule, lr_scale, cfg.train.min_learning_rate)
  common = {'learning_rate': schedule,
            'weight_decay': cfg.train.weight_decay or None}
  if cfg.train.gradient_clip_norm is not None:
    common['global_clipnorm'] = cfg.train.gradient_clip_norm
  optimizer = OPTIMIZERS[cfg.optimizer].build(cfg, **common)
  if keras.mixed_precision.global_policy().compute_dtype == 'float16':
    optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
  return optimizer

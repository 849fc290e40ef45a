"""Optimizers and learning-rate schedules, built from the config."""

from __future__ import annotations

import math

import keras
import tensorflow as tf

from unet3d.config import Config, ConfigError, compute_dtype


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


def build_schedule(cfg: Config):
  """The learning rate as a function of the step.

  exponential: the Model Garden's init_learning_rate * lr_decay_rate **
    (step / lr_decay_steps); cosine: decays to 0 at train_steps;
  polynomial: nnU-Net's (1 - step/train_steps) ** 0.9.
  """
  lr = cfg.init_learning_rate
  kind = cfg.train.lr_schedule
  if kind == 'constant':
    schedule = ConstantSchedule(lr)
  elif kind == 'exponential':
    schedule = keras.optimizers.schedules.ExponentialDecay(
        lr, decay_steps=cfg.lr_decay_steps, decay_rate=cfg.lr_decay_rate)
  elif kind == 'cosine':
    schedule = keras.optimizers.schedules.CosineDecay(
        lr, decay_steps=cfg.train_steps)
  elif kind == 'polynomial':
    schedule = keras.optimizers.schedules.PolynomialDecay(
        lr, decay_steps=cfg.train_steps, end_learning_rate=0.0, power=0.9)
  else:
    raise ConfigError(f'train.lr_schedule: unknown schedule {kind!r}')
  if cfg.train.warmup_steps > 0:
    schedule = WarmupSchedule(schedule, cfg.train.warmup_steps)
  return schedule


def build_optimizer(cfg: Config) -> keras.optimizers.Optimizer:
  """Builds the optimizer named by `cfg.optimizer` (+ loss scaling for fp16)."""
  schedule = build_schedule(cfg)
  clip = cfg.train.gradient_clip_norm
  common = {'learning_rate': schedule}
  if clip is not None:
    if not clip > 0 or math.isinf(clip):
      raise ConfigError(f'train.gradient_clip_norm: must be positive, got {clip}')
    common['global_clipnorm'] = clip
  wd = cfg.train.weight_decay or None
  name = cfg.optimizer
  if name == 'adam':
    optimizer = keras.optimizers.Adam(weight_decay=wd, **common)
  elif name == 'adamw':
    optimizer = keras.optimizers.AdamW(weight_decay=wd or 0.004, **common)
  elif name == 'sgd':
    optimizer = keras.optimizers.SGD(weight_decay=wd, **common)
  elif name == 'momentum':
    optimizer = keras.optimizers.SGD(momentum=cfg.momentum, nesterov=True,
                                     weight_decay=wd, **common)
  elif name == 'rmsprop':
    optimizer = keras.optimizers.RMSprop(momentum=cfg.momentum,
                                         weight_decay=wd, **common)
  else:
    raise ConfigError(f'optimizer: unknown optimizer {name!r}')
  if compute_dtype(cfg) == 'float16':
    optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
  return optimizer

"""A run's folder (`model_dir`): its params.yaml and checkpoints, and a model
restored from them without an optimizer.

Training, evaluation and inference all go through here, so the layout is
known in one place:

  params.yaml          the resolved config that trained the run
  checkpoint, ckpt-N   interval checkpoints (model, optimizer, step)
  train/, eval/        TensorBoard summaries and evaluation reports

Every path may be local or on a TensorFlow filesystem (gs://, ram://).
"""

from __future__ import annotations

from typing import Optional

import keras
import tensorflow as tf

from unet3d import config as config_lib
from unet3d import distribute
from unet3d import fileio
from unet3d import models
from unet3d.config import Config, ConfigError

PARAMS_FILE = 'params.yaml'


def params_path(model_dir: str) -> str:
  return fileio.join(model_dir, PARAMS_FILE)


def save_params(cfg: Config) -> None:
  """Writes the resolved config to `cfg.model_dir/params.yaml`."""
  fileio.write_text(params_path(cfg.model_dir), config_lib.to_yaml(cfg))


def load_params(model_dir: str) -> Optional[Config]:
  """The config saved in model_dir, or None when there is none."""
  path = params_path(model_dir)
  if not fileio.exists(path):
    return None
  return config_lib.from_yaml(fileio.read_text(path), path)


def latest_checkpoint(model_dir: str) -> Optional[str]:
  """The newest interval checkpoint's prefix, or None."""
  if not model_dir:
    return None
  return tf.train.latest_checkpoint(model_dir)


def find_checkpoint(model_dir: str, which: str = 'latest') -> str:
  """The checkpoint prefix to restore: 'latest', or an explicit path.

  Raises a one-line ConfigError naming model_dir when there is none.
  """
  if which == 'latest':
    path = latest_checkpoint(model_dir)
    if not path:
      raise ConfigError(f'model_dir: no checkpoint in {model_dir!r}; train '
                        'first or point model_dir at a run')
    return path
  if not fileio.exists(which + '.index'):
    raise ConfigError(f'--checkpoint: {which} is not a checkpoint (no '
                      f'{which}.index)')
  return which


def checkpoint_step(path: str) -> int:
  """The global step stored in a checkpoint (the optimizer's iterations)."""
  step = tf.Variable(-1, dtype=tf.int64)
  reader = tf.train.Checkpoint(optimizer=tf.train.Checkpoint(_iterations=step))
  reader.restore(path).expect_partial()
  return int(step.numpy())


def restore_model(cfg: Config, checkpoint: str = 'latest',
                  strategy: Optional[tf.distribute.Strategy] = None
                 ) -> tuple[keras.Model, int]:
  """Builds the configured model and restores its weights, without an
  optimizer; returns (model, step).

  Args:
    cfg: the run's config (model keys, precision, model_dir).
    checkpoint: 'latest' (in cfg.model_dir) or a checkpoint prefix.
    strategy: builds the variables under this strategy's scope; the default
      strategy when None.
  """
  path = find_checkpoint(cfg.model_dir, checkpoint)
  distribute.set_precision_policy(cfg)
  strategy = strategy or tf.distribute.get_strategy()
  with strategy.scope():
    model = models.build_model(cfg)
  status = tf.train.Checkpoint(model=model).restore(path)
  status.expect_partial()  # the optimizer's slots are not wanted here
  status.assert_existing_objects_matched()
  return model, checkpoint_step(path)

"""What a training run tells its user besides progress: the TensorBoard
scalars of the loop and the start-up line."""

from __future__ import annotations

from typing import Callable, Optional

import keras
import numpy as np
import tensorflow as tf

from unet3d import distribute
from unet3d import fileio
from unet3d import startup
from unet3d.config import Config
from unet3d.input import dataset_info
from unet3d.input import pipeline
from unet3d.models import complexity

TRAIN_SUMMARY_DIR = 'train'


class Summaries:
  """TensorBoard scalars of the training loop, on the chief only.

  Loss and learning rate every `train.summary_every_n_steps` steps (from the
  per-step losses of each loop, so independent of steps_per_loop), speed
  after each loop; epochs when `train_item_count` is known.
  """

  def __init__(self, cfg: Config, learning_rate: Callable[[int], float]):
    self._every = cfg.train.summary_every_n_steps
    self._learning_rate = learning_rate
    self._voxels = cfg.train_batch_size * int(np.prod(cfg.input_image_size))
    self._epoch_steps = (cfg.train_item_count / cfg.train_batch_size
                         if cfg.train_item_count else None)
    if distribute.is_chief():
      self.writer = tf.summary.create_file_writer(
          fileio.join(cfg.model_dir, TRAIN_SUMMARY_DIR))
    else:
      self.writer = tf.summary.create_noop_writer()

  def write_loop(self, first_step: int, step_losses: np.ndarray,
                 steps_per_second: float) -> None:
    with self.writer.as_default():
      for offset, loss in enumerate(step_losses):
        step = first_step + offset + 1
        if step % self._every == 0:
          tf.summary.scalar('loss', float(loss), step=step)
          tf.summary.scalar('learning_rate', self._learning_rate(step - 1),
                            step=step)
          if self._epoch_steps:
            tf.summary.scalar('epoch', step / self._epoch_steps, step=step)
      last = first_step + len(step_losses)
      tf.summary.scalar('steps_per_second', steps_per_second, step=last)
      tf.summary.scalar('voxels_per_second', steps_per_second * self._voxels,
                        step=last)

  def epoch(self, step: int) -> Optional[float]:
    return step / self._epoch_steps if self._epoch_steps else None

  def flush(self) -> None:
    self.writer.flush()


def describe_run(cfg: Config, strategy: tf.distribute.Strategy,
                 model: keras.Model, jit_compile: bool) -> str:
  """The start-up line: strategy, replicas, precision, oneDNN, model size
  and cost, data."""
  info = complexity.model_summary(
      model, list(cfg.input_image_size) + [cfg.num_channels])
  replicas = strategy.num_replicas_in_sync
  fold_cases = pipeline.split_case_ids(cfg, training=True)
  if fold_cases is not None:
    data = (f'{len(fold_cases)} training cases (data.split_file fold '
            f'{cfg.data.fold})')
  else:
    cases = dataset_info.cases_read_by(cfg.training_file_pattern)
    data = (f'{cases} training cases' if cases is not None else
            'training cases: see the records')
  size = 'x'.join(str(s) for s in cfg.input_image_size)
  return (f'unet3d: {distribute.strategy_name(cfg)} strategy, {replicas} '
          f'replica{"s" if replicas > 1 else ""}, '
          f'{distribute.compute_dtype(cfg)}, {startup.describe_onednn()}, '
          f'XLA {"on" if jit_compile else "off"}; model '
          f'{cfg.model.name}: {info["trainable_params"]:,} parameters, '
          f'{info["gflops"]:.2f} GFLOPs/sample at {size}; data: {data}, '
          f'{cfg.train_batch_size} patches/step')

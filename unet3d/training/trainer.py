"""The custom training loop, and train_and_evaluate around it.

One readable loop for every strategy: `steps_per_loop` steps run inside one
`tf.function` (a `tf.range` loop around `strategy.run`), then the host writes
TensorBoard scalars and checkpoints. The optimizer's `iterations` variable is
the global step, so a restored checkpoint resumes where it stopped.
"""

from __future__ import annotations

from dataclasses import dataclass
import time
from typing import Any, Callable, Optional

import keras
import numpy as np
import tensorflow as tf
from absl import logging

from unet3d import distribute
from unet3d import fileio
from unet3d import losses
from unet3d import models
from unet3d import optimizers
from unet3d import run_dir
from unet3d.config import Config, ConfigError
from unet3d.evaluation import evaluator
from unet3d.input import pipeline
from unet3d.training import gradients

TRAIN_SUMMARY_DIR = 'train'


@dataclass
class TrainState:
  """What a run keeps between loops: the model, its optimizer, checkpoints."""
  strategy: tf.distribute.Strategy
  model: keras.Model
  optimizer: keras.optimizers.Optimizer
  checkpoint: tf.train.Checkpoint
  manager: Optional[tf.train.CheckpointManager]

  @property
  def step(self) -> int:
    return int(self.optimizer.iterations.numpy())


def _checkpoint_directory(cfg: Config) -> str:
  """model_dir on the chief; non-chief workers save (saving is collective)
  to a private folder that is removed afterwards."""
  if distribute.is_chief():
    return cfg.model_dir
  return fileio.join(cfg.model_dir, 'worker_tmp', str(distribute.task_id()))


def build_train_state(cfg: Config, strategy: tf.distribute.Strategy
                     ) -> TrainState:
  """Builds model + optimizer under the strategy and restores the latest
  checkpoint of model_dir, if there is one."""
  distribute.set_precision_policy(cfg)
  with strategy.scope():
    model = models.build_model(
        distribute.resolve_sync_batch_norm(cfg, strategy))
    optimizer = optimizers.build_optimizer(cfg)
    optimizer.build(model.trainable_variables)
  checkpoint = tf.train.Checkpoint(model=model, optimizer=optimizer)
  manager = None
  if cfg.model_dir:
    manager = tf.train.CheckpointManager(
        checkpoint, _checkpoint_directory(cfg),
        max_to_keep=cfg.train.keep_checkpoint_max)
    latest = run_dir.latest_checkpoint(cfg.model_dir)
    if latest:
      checkpoint.restore(latest).assert_existing_objects_matched()
      logging.info('Restored %s at step %d', latest,
                   int(optimizer.iterations.numpy()))
  distribute.check_same_on_every_worker(
      strategy, int(optimizer.iterations.numpy()), 'checkpoint step')
  return TrainState(strategy, model, optimizer, checkpoint, manager)


def split_for_partitioning(cfg: Config, strategy, images, labels):
  """TPU spatial partitioning: split the batch across a replica's cores."""
  return distribute.partition_inputs(strategy, cfg.input_partition_dims,
                                     images, labels)


def make_train_loop(cfg: Config, state: TrainState) -> Callable:
  """Returns `run(iterator, num_steps) -> float32 [num_steps]`, the loss of
  each of num_steps training steps."""
  strategy, model, optimizer = state.strategy, state.model, state.optimizer
  loss_fn = losses.build_loss_fn(cfg)
  global_batch = cfg.train_batch_size
  jit = distribute.use_jit_compile(cfg, strategy, model)
  gradients.disable_keras_aggregation(optimizer)

  def loss_and_grads(images, labels):
    with tf.GradientTape() as tape:
      outputs = model(images, training=True)
      per_example = loss_fn(labels, outputs)
      loss = tf.nn.compute_average_loss(per_example,
                                        global_batch_size=global_batch)
      if model.losses:
        loss += tf.nn.scale_regularization_loss(tf.add_n(model.losses))
      scaled = optimizer.scale_loss(loss)
    grads = tape.gradient(scaled, model.trainable_variables)
    return loss, grads

  if jit:  # Not nested otherwise: sync batch norm cannot merge_call inside.
    loss_and_grads = tf.function(loss_and_grads, jit_compile=True,
                                 reduce_retracing=True)

  def step_fn(inputs):
    images, labels = inputs
    images, labels = split_for_partitioning(cfg, strategy, images, labels)
    loss, grads = loss_and_grads(images, labels)
    # Sum over replicas, then clip and check for overflow (not per replica).
    gradients.apply_gradients(optimizer, grads, model.trainable_variables)
    return loss

  @tf.function
  def run(iterator, num_steps):
    step_losses = tf.TensorArray(tf.float32, size=num_steps)
    for i in tf.range(num_steps):
      per_replica = strategy.run(step_fn, args=(next(iterator),))
      step_losses = step_losses.write(
          i, strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica,
                             axis=None))
    return step_losses.stack()

  return run


class _Summaries:
  """TensorBoard scalars of the training loop, on the chief only.

  Loss and learning rate every `train.summary_every_n_steps` steps (from the
  per-step losses of each loop, so independent of steps_per_loop), speed
  after each loop; epochs when `train_item_count` is known.
  """

  def __init__(self, cfg: Config, schedule):
    self._every = cfg.train.summary_every_n_steps
    self._schedule = schedule
    self._epoch_steps = (cfg.train_item_count / cfg.train_batch_size
                         if cfg.train_item_count else None)
    if distribute.is_chief():
      self._writer = tf.summary.create_file_writer(
          fileio.join(cfg.model_dir, TRAIN_SUMMARY_DIR))
    else:
      self._writer = tf.summary.create_noop_writer()

  def write_loop(self, first_step: int, step_losses: np.ndarray,
                 steps_per_second: float) -> None:
    with self._writer.as_default():
      for offset, loss in enumerate(step_losses):
        step = first_step + offset + 1
        if step % self._every == 0:
          tf.summary.scalar('loss', float(loss), step=step)
          tf.summary.scalar('learning_rate', float(self._schedule(step - 1)),
                            step=step)
          if self._epoch_steps:
            tf.summary.scalar('epoch', step / self._epoch_steps, step=step)
      last = first_step + len(step_losses)
      tf.summary.scalar('steps_per_second', steps_per_second, step=last)

  def epoch(self, step: int) -> Optional[float]:
    return step / self._epoch_steps if self._epoch_steps else None

  def flush(self) -> None:
    self._writer.flush()


def _check_can_train(cfg: Config) -> None:
  if not cfg.training_file_pattern:
    raise ConfigError('training_file_pattern: required for training')
  if not cfg.model_dir:
    raise ConfigError('model_dir: required for training')


def train(cfg: Config, strategy: Optional[tf.distribute.Strategy] = None,
          state: Optional[TrainState] = None,
          until_step: Optional[int] = None) -> dict[str, Any]:
  """Trains to `until_step` (default cfg.train_steps), resuming if possible.

  Returns {'step', 'loss', 'steps_per_second'} of the last loop and
  'steps_run', the steps this call trained.
  """
  _check_can_train(cfg)
  strategy = strategy or distribute.build_strategy(cfg)
  if state is None:
    distribute.set_determinism(cfg)
    state = build_train_state(cfg, strategy)
  if distribute.is_chief():
    run_dir.save_params(cfg)
  target = cfg.train_steps if until_step is None else until_step
  if state.step >= target:
    logging.info('Already at step %d >= %d; nothing to train.', state.step,
                 target)
    return {'step': state.step, 'loss': None, 'steps_per_second': None,
            'steps_run': 0}

  dataset = strategy.distribute_datasets_from_function(
      lambda ctx: pipeline.build_dataset(cfg, 'train', input_context=ctx))
  iterator = iter(dataset)
  run = make_train_loop(cfg, state)
  summaries = _Summaries(cfg, optimizers.build_schedule(cfg))
  first_step = last_saved = state.step
  result = {}
  while state.step < target:
    loop_start = state.step
    num_steps = min(cfg.train.steps_per_loop, target - loop_start)
    start = time.perf_counter()
    step_losses = run(iterator, tf.constant(num_steps)).numpy()
    elapsed = time.perf_counter() - start
    step = state.step
    loss = float(np.mean(step_losses))
    if not np.isfinite(loss):
      raise FloatingPointError(f'training loss is {loss} at step {step}; lower '
                               'init_learning_rate or check the input data')
    result = {'step': step, 'loss': loss,
              'steps_per_second': num_steps / elapsed,
              'steps_run': step - first_step}
    epoch = summaries.epoch(step)
    logging.info('step %d%s  loss %.4f  %.2f steps/s', step,
                 f'  epoch {epoch:.2f}' if epoch is not None else '', loss,
                 num_steps / elapsed)
    summaries.write_loop(loop_start, step_losses, num_steps / elapsed)
    if state.manager and (step - last_saved >= cfg.train.checkpoint_every_n_steps
                          or step >= target):
      state.manager.save(checkpoint_number=step)
      last_saved = step
  summaries.flush()
  if state.manager and not distribute.is_chief():
    _remove_worker_scratch(cfg.model_dir, state.manager.directory)
  return result


def _remove_worker_scratch(model_dir: str, directory: str) -> None:
  """Non-chief workers save only because saving is collective; drop it."""
  fileio.remove(directory)
  scratch = fileio.join(model_dir, 'worker_tmp')
  if not fileio.listdir(scratch):
    fileio.remove(scratch)


def train_and_evaluate(cfg: Config,
                       strategy: Optional[tf.distribute.Strategy] = None
                      ) -> dict[str, Any]:
  """Trains to train_steps, evaluating every train.eval_every_n_steps and at
  the end; returns the last evaluation."""
  strategy = strategy or distribute.build_strategy(cfg)
  distribute.set_determinism(cfg)
  state = build_train_state(cfg, strategy)
  every = cfg.train.eval_every_n_steps or cfg.train_steps
  while True:
    next_stop = min(cfg.train_steps, (state.step // every + 1) * every)
    train(cfg, strategy, state, until_step=next_stop)
    report = evaluator.evaluate(cfg, strategy=strategy, model=state.model,
                                step=state.step)
    logging.info('eval at step %d: mean foreground dice %s', state.step,
                 report.get('mean_foreground_dice'))
    if state.step >= cfg.train_steps:
      return report

"""The state of a training run and its checkpoint.

What a checkpoint holds, so that a restart continues exactly: the model, the
optimizer (whose `iterations` is the global step; the LR schedule is a
function of it), the input position (the run's data seed and the examples
consumed; see `pipeline.InputPosition`) and the plateau state (best dice,
evaluations since, learning-rate scale). The keys (`model`, `optimizer`,
`input/examples`, `input/seed`, `plateau/best_dice`,
`plateau/evals_since_best`, `plateau/lr_scale`) are the checkpoint format:
renaming one breaks the restore of existing runs.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Optional

import keras
import numpy as np
import tensorflow as tf
from absl import logging

from unet3d import distribute
from unet3d import fileio
from unet3d import models
from unet3d import optimizers
from unet3d import run_dir
from unet3d.config import Config
from unet3d.training import policy
from unet3d.training import warm_start


@dataclasses.dataclass
class TrainState:
  """What a run keeps between loops and restarts.

  `examples` counts the training examples consumed by all input pipelines;
  `data_seed` seeds the input stream (cfg.seed, or drawn once per run);
  `best_dice`, `evals_since_best` and `lr_scale` drive the best checkpoint,
  early stopping and reduce-on-plateau (see policy.py); `jit_compile` is
  whether the loop XLA-compiles each replica's forward and backward pass.
  """
  strategy: tf.distribute.Strategy
  model: keras.Model
  optimizer: keras.optimizers.Optimizer
  examples: tf.Variable
  data_seed: tf.Variable
  best_dice: tf.Variable
  evals_since_best: tf.Variable
  lr_scale: tf.Variable
  checkpoint: tf.train.Checkpoint
  manager: Optional[tf.train.CheckpointManager]
  jit_compile: bool = False
  iterator: Any = None

  @property
  def step(self) -> int:
    return int(self.optimizer.iterations.numpy())

  def float_variables(self) -> list:
    """The floating-point variables a checkpoint saves."""
    return [v for v in (list(self.model.variables) +
                        list(self.optimizer.variables) +
                        [self.best_dice, self.lr_scale])
            if tf.as_dtype(v.dtype).is_floating]

  def plateau(self) -> policy.Plateau:
    """The plateau state the policy decides from."""
    return policy.Plateau(best_dice=float(self.best_dice.numpy()),
                          evals_since_best=int(self.evals_since_best.numpy()))


def checkpoint_directory(cfg: Config) -> str:
  """model_dir on the chief; non-chief workers save (saving is collective)
  to a private folder that is removed afterwards."""
  if distribute.is_chief():
    return cfg.model_dir
  return fileio.join(cfg.model_dir, 'worker_tmp', str(distribute.task_id()))


def remove_worker_scratch(model_dir: str, directory: str) -> None:
  """Non-chief workers save only because saving is collective; drop it."""
  fileio.remove(directory)
  scratch = fileio.join(model_dir, 'worker_tmp')
  if not fileio.listdir(scratch):
    fileio.remove(scratch)


def build_train_state(cfg: Config, strategy: tf.distribute.Strategy
                     ) -> TrainState:
  """Builds model + optimizer under the strategy and restores the newest
  intact checkpoint of model_dir, if there is one (`run_dir.resume`); else
  init_checkpoint's weights, if set (`unet3d.training.warm_start`)."""
  distribute.set_precision_policy(cfg)
  with strategy.scope():
    model = models.build_model(
        distribute.resolve_sync_batch_norm(cfg, strategy))
    lr_scale = tf.Variable(1.0, trainable=False, name='lr_scale')
    optimizer = optimizers.build_optimizer(cfg, lr_scale)
    optimizer.build(model.trainable_variables)
  drawn = cfg.seed if cfg.seed is not None else int(
      np.random.SeedSequence().entropy % 2**31)
  examples = tf.Variable(0, dtype=tf.int64, trainable=False, name='examples')
  data_seed = tf.Variable(drawn, dtype=tf.int64, trainable=False,
                          name='data_seed')
  best_dice = tf.Variable(policy.NO_BEST, trainable=False, name='best_dice')
  evals_since_best = tf.Variable(0, dtype=tf.int64, trainable=False,
                                 name='evals_since_best')
  checkpoint = tf.train.Checkpoint(
      model=model, optimizer=optimizer,
      input=tf.train.Checkpoint(examples=examples, seed=data_seed),
      plateau=tf.train.Checkpoint(best_dice=best_dice,
                                  evals_since_best=evals_since_best,
                                  lr_scale=lr_scale))
  manager = None
  if cfg.model_dir:
    # Before the manager, which reads the index file resume() may rewrite.
    latest = run_dir.resume(checkpoint, cfg.model_dir,
                            tidy=distribute.is_chief())
    if latest:
      logging.info('restored %s at step %d', latest,
                   int(optimizer.iterations.numpy()))
    manager = tf.train.CheckpointManager(
        checkpoint, checkpoint_directory(cfg),
        max_to_keep=cfg.train.keep_checkpoint_max)
  warm_start.warm_start(cfg, model)  # init_checkpoint, unless resumed
  distribute.check_same_on_every_worker(
      strategy, int(optimizer.iterations.numpy()), 'checkpoint step')
  return TrainState(strategy, model, optimizer, examples, data_seed,
                    best_dice, evals_since_best, lr_scale, checkpoint, manager,
                    distribute.use_jit_compile(cfg, strategy, model))


def all_finite(variables) -> bool:
  """True when every (floating-point) variable is finite; one host sync."""
  return bool(tf.reduce_all(
      [tf.reduce_all(tf.math.is_finite(v)) for v in variables]))


def save_best(state: TrainState, model_dir: str,
              report: dict[str, Any]) -> None:
  """The whole checkpoint (so its step is known) in model_dir/best/, with
  best.json (step and dice); skipped when a variable is not finite."""
  best = run_dir.best_dir(model_dir)
  if not all_finite(state.float_variables()):
    return
  manager = tf.train.CheckpointManager(state.checkpoint, best, max_to_keep=1)
  manager.save(checkpoint_number=state.step)
  fileio.write_json(fileio.join(best, run_dir.BEST_JSON), {
      'step': state.step,
      'mean_foreground_dice': report['mean_foreground_dice'],
      'dice': {name: scores['dice']
               for name, scores in report['per_class'].items()}})

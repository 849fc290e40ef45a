"""The training loop, and train_and_evaluate around it.

One readable loop for every strategy: `steps_per_loop` steps run inside one
`tf.function` (a `tf.range` loop around `strategy.run`), then the host
reports progress, writes TensorBoard scalars and checkpoints. After each
evaluation the policy (policy.py) decides the best checkpoint, the learning-
rate scale and early stopping.

What a checkpoint holds is in state.py. Every variable is checked finite
before a save, so a diverged run never overwrites its last good checkpoint.
SIGTERM and SIGINT finish the running loop, save and stop.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Optional

import keras
import numpy as np
import tensorflow as tf
from absl import logging

from unet3d import distribute
from unet3d import errors
from unet3d import losses
from unet3d import run_dir
from unet3d.config import Config, ConfigError
from unet3d.errors import Interrupted, RunError
from unet3d.evaluation import evaluator
from unet3d.evaluation import report as report_lib
from unet3d.input import dataset_info
from unet3d.input import pipeline
from unet3d.training import gradients
from unet3d.training import lock as lock_lib
from unet3d.training import policy as policy_lib
from unet3d.training import progress as progress_lib
from unet3d.training import signals
from unet3d.training import state as state_lib
from unet3d.training import summaries as summaries_lib

# The modes, the benchmark and the tests import these from here.
TrainState = state_lib.TrainState
build_train_state = state_lib.build_train_state
TRAIN_SUMMARY_DIR = summaries_lib.TRAIN_SUMMARY_DIR
describe_run = summaries_lib.describe_run


def make_train_loop(cfg: Config, state: TrainState) -> Callable:
  """Returns `run(iterator, num_steps) -> float32 [num_steps]`, the loss of
  each of num_steps training steps."""
  strategy, model, optimizer = state.strategy, state.model, state.optimizer
  loss_fn = losses.build_loss_fn(cfg)
  global_batch = cfg.train_batch_size
  jit = state.jit_compile
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
    images, labels = distribute.partition_inputs(
        strategy, cfg.input_partition_dims, images, labels)
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


def training_iterator(cfg: Config, state: TrainState):
  """The distributed training input, positioned after the examples this run
  has already consumed."""
  strategy = state.strategy
  examples = int(state.examples.numpy())

  def dataset_fn(ctx: tf.distribute.InputContext):
    position = pipeline.InputPosition(
        seed=int(state.data_seed.numpy()),
        examples=examples // ctx.num_input_pipelines)
    return pipeline.build_train_dataset(cfg, ctx, position)

  return iter(strategy.distribute_datasets_from_function(dataset_fn))


def check_can_train(cfg: Config) -> None:
  """Checks the training input, before anything is written."""
  if not cfg.training_file_pattern:
    raise ConfigError('training_file_pattern: required for training')
  try:
    pipeline.list_files(cfg.training_file_pattern, False, None)
  except ValueError as e:
    raise ConfigError(f'training_file_pattern: {e}') from None


def warn_if_data_changed_since_plan(cfg: Config) -> bool:
  """A planned recipe (plan.fingerprint_sha256) on records whose
  dataset.json fingerprint differs: logs a warning, returns True."""
  planned = cfg.plan.fingerprint_sha256
  path = dataset_info.path_beside(cfg.training_file_pattern)
  if not planned or not path:
    return False
  info = dataset_info.read(path)
  current = dataset_info.fingerprint_sha256(info)
  # Records the plan resampled (unet3d.preprocess.regrid) name the
  # fingerprint they were made from.
  source = (info.get('resampled_from') or {}).get('fingerprint_sha256')
  if planned in (current, source):
    return False
  logging.warning('%s: the dataset changed since the recipe was planned '
                  '(fingerprint sha256 %s, planned from %s); re-plan with '
                  '--mode=plan', path, current[:12], planned[:12])
  return True


class Trainer:
  """Trains one run: restores, loops, reports, checkpoints, evaluates.

  Usage: `with Trainer(cfg) as t: t.train_until(cfg.train_steps)`; the
  context holds model_dir's lock and the signal handlers.
  """

  def __init__(self, cfg: Config,
               strategy: Optional[tf.distribute.Strategy] = None,
               state: Optional[TrainState] = None):
    if not cfg.model_dir:
      raise ConfigError('model_dir: required for training')
    check_can_train(cfg)
    self.cfg = cfg
    self.strategy = strategy or distribute.build_strategy(cfg)
    self._lock = lock_lib.TrainLock(cfg.model_dir) if distribute.is_chief() \
        else None
    self._given_state = state
    self.state: Optional[TrainState] = None
    self._run = None
    self._summaries = None
    self._progress = None
    self._signals = signals.StopRequests()
    self._policy = policy_lib.Policy.from_config(cfg)
    self._last_saved = None

  # -- setup and teardown ----------------------------------------------------

  def __enter__(self) -> 'Trainer':
    if self._lock:
      self._lock.acquire()
    try:
      self._start()
    except BaseException:
      self._close()
      raise
    return self

  def __exit__(self, exc_type, *_) -> None:
    self._close()
    if (exc_type is None and self._given_state is None and self.state and
        self.state.manager and not distribute.is_chief()):
      state_lib.remove_worker_scratch(self.cfg.model_dir,
                                      self.state.manager.directory)

  def _close(self) -> None:
    self._signals.uninstall()
    if self._progress:
      self._progress.close()
    if self._summaries:
      self._summaries.flush()
    if self._lock:
      self._lock.release()

  def _start(self) -> None:
    cfg = self.cfg
    if distribute.is_chief():  # under train.lock: no save is running
      run_dir.remove_save_leftovers(cfg.model_dir)
    saved = run_dir.load_params(cfg.model_dir)
    if saved is not None and saved.train_steps != cfg.train_steps and (
        cfg.train.lr_schedule in ('cosine', 'polynomial')):
      logging.warning(
          'train_steps %d -> %d: the %s schedule now ends at step %d, so the '
          'learning rate of the remaining steps follows the new horizon',
          saved.train_steps, cfg.train_steps, cfg.train.lr_schedule,
          cfg.train_steps)
    if self._given_state is None:
      distribute.set_determinism(cfg)
      self.state = build_train_state(cfg, self.strategy)
    else:
      self.state = self._given_state
    if self.state.iterator is None and self.state.step < cfg.train_steps:
      # Builds the input, whose checks (split file, enough records) must
      # fail before params.yaml or summaries are written.
      self.state.iterator = training_iterator(cfg, self.state)
    if distribute.is_chief():
      warn_if_data_changed_since_plan(cfg)
      run_dir.save_params(cfg)
      print(describe_run(cfg, self.strategy, self.state.model,
                         self.state.jit_compile), flush=True)
    self._last_saved = self.state.step
    self._summaries = summaries_lib.Summaries(cfg, self.learning_rate)
    self._signals.install()

  def learning_rate(self, step: int) -> float:
    """The learning rate the optimizer uses at `step`."""
    # A LossScaleOptimizer's own _learning_rate is a placeholder 0.0.
    optimizer = gradients.update_optimizer(self.state.optimizer)
    lr = optimizer._learning_rate  # pylint: disable=protected-access
    if isinstance(lr, keras.optimizers.schedules.LearningRateSchedule):
      return float(lr(step))
    return float(lr.numpy() if hasattr(lr, 'numpy') else lr)

  # -- the loop --------------------------------------------------------------

  def _ensure_iterator(self) -> None:
    if self.state.iterator is None:
      self.state.iterator = training_iterator(self.cfg, self.state)
    if self._run is None:
      self._run = make_train_loop(self.cfg, self.state)

  def train_until(self, target: int) -> dict[str, Any]:
    """Trains to global step `target`; returns {'step', 'loss',
    'steps_per_second', 'steps_run'}."""
    cfg, state = self.cfg, self.state
    if state.step >= target:
      logging.info('already at step %d >= %d; nothing to train', state.step,
                   target)
      return {'step': state.step, 'loss': None, 'steps_per_second': None,
              'steps_run': 0}
    self._ensure_iterator()
    voxels = cfg.train_batch_size * int(np.prod(cfg.input_image_size))
    if self._progress is None:
      self._progress = progress_lib.Progress(
          state.step, cfg.train_steps, voxels,
          cfg.train.progress_interval_seconds)
    per_loop = distribute.steps_per_loop(cfg)
    first_step = state.step
    result = {}
    while state.step < target:
      loop_start = state.step
      num_steps = min(per_loop, target - loop_start)
      start = time.perf_counter()
      step_losses = self._run(state.iterator, tf.constant(num_steps)).numpy()
      elapsed = time.perf_counter() - start
      state.examples.assign_add(num_steps * cfg.train_batch_size)
      self._check_finite(loop_start, step_losses)
      step = state.step
      loss = float(np.mean(step_losses))
      result = {'step': step, 'loss': loss,
                'steps_per_second': num_steps / elapsed,
                'steps_run': step - first_step}
      self._progress.update(step, num_steps, elapsed, loss,
                            self.learning_rate(step),
                            self._summaries.epoch(step))
      self._summaries.write_loop(loop_start, step_losses, num_steps / elapsed)
      if self._lock:
        self._lock.heartbeat()
      if (step - self._last_saved >= cfg.train.checkpoint_every_n_steps or
          step >= target):
        self.save()
      if self._signals.requested:
        self._stop_on_signal()
    self._summaries.flush()
    return result

  def _check_finite(self, loop_start: int, step_losses: np.ndarray) -> None:
    bad = np.flatnonzero(~np.isfinite(step_losses))
    if not len(bad):
      return
    step = loop_start + int(bad[0]) + 1
    last = run_dir.latest_checkpoint(self.cfg.model_dir)
    kept = (f'the last good checkpoint is {last}' if last else
            'no checkpoint was saved')
    raise RunError(
        f'training diverged: the loss is {step_losses[bad[0]]} at step '
        f'{step}; {kept}. Lower init_learning_rate, set '
        'train.gradient_clip_norm, or check the input data')

  def save(self) -> Optional[str]:
    """Saves an interval checkpoint, if every variable is finite."""
    state = self.state
    if state.manager is None:
      return None
    if not state_lib.all_finite(state.float_variables()):
      raise RunError(
          f'training diverged: a variable is not finite at step '
          f'{state.step}; not saved, the last good checkpoint is '
          f'{run_dir.latest_checkpoint(self.cfg.model_dir)}. Lower '
          'init_learning_rate or set train.gradient_clip_norm')
    try:
      path = state.manager.save(checkpoint_number=state.step)
    except tf.errors.OpError as e:
      raise RunError(f'{state.manager.directory}: cannot save a checkpoint '
                     f'({errors.first_line(e)})') from None
    self._last_saved = state.step
    return path

  def _stop_on_signal(self) -> None:
    number, name = self._signals.requested
    path = self.save() if self.state.step != self._last_saved else (
        run_dir.latest_checkpoint(self.cfg.model_dir))
    self._summaries.flush()
    raise Interrupted(
        f'{name}: stopped at step {self.state.step}; checkpoint {path}; run '
        'the same command again to resume', number)

  # -- evaluation ------------------------------------------------------------

  def evaluate(self) -> dict[str, Any]:
    """Evaluates the current weights; applies the policy's decision (best
    checkpoint, plateau state, learning-rate scale)."""
    cfg, state = self.cfg, self.state
    report = evaluator.evaluate(cfg, strategy=self.strategy, model=state.model,
                                step=state.step)
    decision = self._policy.decide(state.plateau(),
                                   report.get('mean_foreground_dice'))
    state.best_dice.assign(decision.plateau.best_dice)
    state.evals_since_best.assign(decision.plateau.evals_since_best)
    if decision.save_best and distribute.is_chief():
      state_lib.save_best(state, cfg.model_dir, report)
    self._reduce_lr(decision.lr_factor)
    self._progress_message(report)
    if distribute.is_chief():
      evaluator.write_previews(cfg, state.model, state.step,
                               self._summaries.writer)
    return report

  def _reduce_lr(self, factor: float) -> None:
    """Multiplies the learning-rate scale by the policy's factor."""
    if factor == 1.0:
      return
    self.state.lr_scale.assign(self.state.lr_scale * factor)
    logging.info('no improvement for %d evaluations: learning rate x%g',
                 int(self.state.evals_since_best.numpy()),
                 float(self.state.lr_scale.numpy()))

  def should_stop_early(self) -> bool:
    """True once the policy's early-stopping patience has run out."""
    return self._policy.should_stop(self.state.plateau().evals_since_best)

  def _progress_message(self, report: dict[str, Any]) -> None:
    # Softmax class 0 is the background; every sigmoid channel is foreground.
    first = report_lib.first_scored_class(self.cfg)
    dice = ', '.join(
        f'{name} {scores["dice"]:.4f}' for name, scores in
        list(report['per_class'].items())[first:] if scores['dice'] is not None)
    mean = report.get('mean_foreground_dice')
    text = (f'eval at step {self.state.step}: dice {dice}; mean '
            f'{mean:.4f}' if mean is not None else
            f'eval at step {self.state.step}: no foreground dice')
    best = float(self.state.best_dice.numpy())
    if best >= 0:
      text += f' (best {best:.4f})'
    if self._progress:
      self._progress.message(text)
    else:
      print(text, flush=True)


def train(cfg: Config, strategy: Optional[tf.distribute.Strategy] = None,
          state: Optional[TrainState] = None,
          until_step: Optional[int] = None) -> dict[str, Any]:
  """Trains to `until_step` (default cfg.train_steps), resuming if possible
  (the train mode). Returns {'step', 'loss', 'steps_per_second',
  'steps_run'}."""
  with Trainer(cfg, strategy, state) as trainer:
    return trainer.train_until(cfg.train_steps if until_step is None
                               else until_step)


def train_and_evaluate(cfg: Config,
                       strategy: Optional[tf.distribute.Strategy] = None
                      ) -> dict[str, Any]:
  """Trains to train_steps, evaluating every train.eval_every_n_steps and at
  the end, with the best checkpoint, early stopping and reduce-on-plateau;
  returns the last evaluation (the train_and_eval mode)."""
  if not cfg.eval_file_pattern:
    raise ConfigError('eval_file_pattern: required for train_and_eval')
  every = cfg.train.eval_every_n_steps or cfg.train_steps
  with Trainer(cfg, strategy) as trainer:
    while True:
      step = trainer.state.step
      trainer.train_until(min(cfg.train_steps, (step // every + 1) * every))
      report = trainer.evaluate()
      if trainer.state.step >= cfg.train_steps:
        break
      if trainer.should_stop_early():
        trainer.save()
        logging.info('early stopping at step %d: no improvement for %d '
                     'evaluations', trainer.state.step,
                     int(trainer.state.evals_since_best.numpy()))
        report['early_stopped'] = True
        break
  return report

"""The custom training and evaluation loops.

One readable loop for every strategy: `steps_per_loop` steps run inside one
`tf.function` (a `tf.range` loop around `strategy.run`), then the host writes
TensorBoard scalars and checkpoints. The optimizer's `iterations` variable is
the global step, so a restored checkpoint resumes where it stopped.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass
from typing import Any, Callable, Optional

import keras
import numpy as np
import tensorflow as tf
from absl import logging

from unet3d import config as config_lib
from unet3d import distribute
from unet3d import evaluation
from unet3d import losses
from unet3d import metrics
from unet3d import models
from unet3d.config import Config, ConfigError
from unet3d.data import pipeline
from unet3d.data import summary as data_summary
from unet3d.inference import sliding_window
from unet3d.training import optim

EVAL_RESULTS_FILE = 'eval_results.json'
_PRECISION_POLICIES = {'float32': 'float32', 'bfloat16': 'mixed_bfloat16',
                       'float16': 'mixed_float16'}


def set_precision_policy(cfg: Config) -> None:
  keras.mixed_precision.set_global_policy(
      _PRECISION_POLICIES[config_lib.compute_dtype(cfg)])


def set_determinism(cfg: Config) -> None:
  if cfg.seed is not None:
    keras.utils.set_random_seed(cfg.seed)
  if cfg.deterministic:
    tf.config.experimental.enable_op_determinism()


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


def _checkpoint_dir(model_dir: str) -> str:
  return model_dir


def build_state(cfg: Config, strategy: tf.distribute.Strategy,
                with_optimizer: bool = True) -> TrainState:
  """Builds model + optimizer under the strategy and restores the latest ckpt."""
  set_precision_policy(cfg)
  with strategy.scope():
    model = models.build_model(cfg)
    optimizer = optim.build_optimizer(cfg)
    if with_optimizer:
      optimizer.build(model.trainable_variables)
  checkpoint = tf.train.Checkpoint(model=model, optimizer=optimizer)
  manager = None
  if cfg.model_dir:
    directory = _checkpoint_dir(cfg.model_dir)
    if not distribute.is_chief():
      # Non-chief workers save to a private folder that is removed afterwards.
      directory = os.path.join(cfg.model_dir, 'worker_tmp',
                               str(distribute.task_id()))
    manager = tf.train.CheckpointManager(
        checkpoint, directory, max_to_keep=cfg.train.keep_checkpoint_max)
    latest = tf.train.latest_checkpoint(_checkpoint_dir(cfg.model_dir))
    if latest:
      status = checkpoint.restore(latest)
      if with_optimizer:
        status.assert_existing_objects_matched()
      else:
        status.expect_partial()
      logging.info('Restored %s at step %d', latest,
                   int(optimizer.iterations.numpy()))
  return TrainState(strategy, model, optimizer, checkpoint, manager)


def _split_for_partitioning(cfg: Config, strategy, images, labels):
  """TPU spatial partitioning: split the batch across a replica's cores."""
  dims = cfg.input_partition_dims
  if not dims or not isinstance(strategy, tf.distribute.TPUStrategy):
    return images, labels
  images = strategy.experimental_split_to_logical_devices(images, dims)
  label_dims = dims if labels.shape.rank == len(dims) else dims[:-1]
  labels = strategy.experimental_split_to_logical_devices(labels, label_dims)
  return images, labels


def make_train_loop(cfg: Config, state: TrainState) -> Callable:
  """Returns `run(iterator, num_steps) -> mean loss` over num_steps steps."""
  strategy, model, optimizer = state.strategy, state.model, state.optimizer
  loss_fn = losses.build_loss_fn(cfg)
  global_batch = cfg.train_batch_size
  jit = distribute.use_jit_compile(cfg)

  @tf.function(jit_compile=jit, reduce_retracing=True)
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

  def step_fn(inputs):
    images, labels = inputs
    images, labels = _split_for_partitioning(cfg, strategy, images, labels)
    loss, grads = loss_and_grads(images, labels)
    optimizer.apply_gradients(zip(grads, model.trainable_variables))
    return loss

  @tf.function
  def run(iterator, num_steps):
    total = tf.constant(0.0, tf.float32)
    for _ in tf.range(num_steps):
      per_replica = strategy.run(step_fn, args=(next(iterator),))
      total += strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica,
                               axis=None)
    return total / tf.cast(num_steps, tf.float32)

  return run


def _current_lr(optimizer) -> float:
  lr = optimizer.learning_rate
  return float(lr.numpy() if hasattr(lr, 'numpy') else lr)


def train(cfg: Config, strategy: Optional[tf.distribute.Strategy] = None,
          state: Optional[TrainState] = None,
          until_step: Optional[int] = None) -> dict[str, Any]:
  """Trains to `until_step` (default cfg.train_steps), resuming if possible.

  Returns {'step', 'loss', 'steps_per_second'} of the last loop and
  'steps_run', the steps this call trained.
  """
  if not cfg.training_file_pattern:
    raise ConfigError('training_file_pattern: required for training')
  if not cfg.model_dir:
    raise ConfigError('model_dir: required for training')
  strategy = strategy or distribute.build_strategy(cfg)
  if state is None:
    set_determinism(cfg)
    state = build_state(cfg, strategy)
  if distribute.is_chief():
    config_lib.save(cfg, config_lib.params_path(cfg.model_dir))
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
  writer = tf.summary.create_file_writer(
      os.path.join(cfg.model_dir, 'train')) if distribute.is_chief() else (
          tf.summary.create_noop_writer())
  first_step = last_saved = state.step
  result = {}
  while state.step < target:
    num_steps = min(cfg.train.steps_per_loop, target - state.step)
    start = time.perf_counter()
    loss = float(run(iterator, tf.constant(num_steps)).numpy())
    elapsed = time.perf_counter() - start
    step = state.step
    if not np.isfinite(loss):
      raise FloatingPointError(f'training loss is {loss} at step {step}; lower '
                               'init_learning_rate or check the input data')
    result = {'step': step, 'loss': loss,
              'steps_per_second': num_steps / elapsed,
              'steps_run': step - first_step}
    logging.info('step %d  loss %.4f  %.2f steps/s', step, loss,
                 num_steps / elapsed)
    with writer.as_default(step=step):
      tf.summary.scalar('loss', loss)
      tf.summary.scalar('learning_rate', _current_lr(state.optimizer))
      tf.summary.scalar('steps_per_second', num_steps / elapsed)
    if state.manager and (step - last_saved >= cfg.train.checkpoint_every_n_steps
                          or step >= target):
      state.manager.save(checkpoint_number=step)
      last_saved = step
  writer.flush()
  if state.manager and not distribute.is_chief():
    _remove_worker_scratch(cfg.model_dir, state.manager.directory)
  return result


def _remove_worker_scratch(model_dir: str, directory: str) -> None:
  """Non-chief workers save only because saving is collective; drop it."""
  shutil.rmtree(directory, ignore_errors=True)
  try:
    os.rmdir(os.path.join(model_dir, 'worker_tmp'))
  except OSError:
    pass  # another worker's scratch is still there


def make_eval_step(cfg: Config, state: TrainState) -> Callable:
  """Returns run(inputs) -> per-case counts [b, C, 4] (and [b, R, 4] BraTS
  region counts when metrics.brats_regions), gathered from all replicas."""
  strategy, model = state.strategy, state.model
  output_activation = cfg.model.output_activation
  num_classes = cfg.num_classes
  ignore_label = cfg.loss_options.ignore_label
  regions = cfg.metrics.brats_regions

  def step_fn(inputs):
    images, labels = inputs
    outputs = model(images, training=False)
    logits = models.inference_logits(outputs, output_activation)
    counts = metrics.confusion_counts(labels, logits, num_classes,
                                      output_activation=output_activation,
                                      ignore_label=ignore_label)
    if regions:
      return counts, metrics.region_counts(labels, logits)
    return (counts,)

  @tf.function
  def run(inputs):
    per_replica = strategy.run(step_fn, args=(inputs,))
    return tuple(strategy.gather(t, axis=0) for t in per_replica)

  return run


def class_names_for(cfg: Config) -> Optional[list[str]]:
  """Class names from the training data's dataset.json, when there is one."""
  for pattern in (cfg.eval_file_pattern, cfg.training_file_pattern):
    path = data_summary.dataset_json_beside(pattern)
    if path:
      with open(path) as f:
        labels = json.load(f).get('labels')
      if isinstance(labels, dict) and len(labels) == cfg.num_classes:
        return [labels[k] for k in sorted(labels, key=int)]
  return None


def _evaluate_crops(cfg: Config, state: TrainState
                   ) -> tuple[np.ndarray, Optional[np.ndarray]]:
  """Per-case counts [N, C, 4] (+ region counts) on centre crops, batched
  and distributed."""
  dataset = state.strategy.distribute_datasets_from_function(
      lambda ctx: pipeline.build_dataset(cfg, 'eval', input_context=ctx))
  run = make_eval_step(cfg, state)
  counts, regions = [], []
  for inputs in dataset:
    outputs = run(inputs)
    counts.append(outputs[0].numpy())
    if len(outputs) > 1:
      regions.append(outputs[1].numpy())
    if cfg.eval_item_count and sum(len(c) for c in counts) >= cfg.eval_item_count:
      break
  if not counts:
    return np.zeros([0]), None
  return np.concatenate(counts), (np.concatenate(regions) if regions else None)


def probabilities_fn(cfg: Config, model: keras.Model) -> Callable:
  sigmoid = cfg.model.output_activation == 'sigmoid'

  @tf.function(reduce_retracing=True)
  def probabilities(batch):
    logits = models.inference_logits(model(batch, training=False),
                                     cfg.model.output_activation)
    return tf.sigmoid(logits) if sigmoid else tf.nn.softmax(logits)

  return lambda batch: probabilities(tf.constant(batch)).numpy()


def _as_logits(probabilities: np.ndarray, sigmoid: bool) -> np.ndarray:
  """Logits with the same argmax / 0.5 threshold as the probabilities."""
  p = np.clip(probabilities, 1e-7, 1 - 1e-7)
  return np.log(p) - np.log1p(-p) if sigmoid else np.log(p)


def _evaluate_whole_volumes(cfg: Config, state: TrainState):
  """Sliding-window inference on every whole eval volume (host loop).

  Returns per-case counts [N, C, 4], BraTS region counts [N, R, 4] or None,
  and, when metrics.surface_metrics is on, per-case surface-distance reports.
  """
  predict = probabilities_fn(cfg, state.model)
  sigmoid = cfg.model.output_activation == 'sigmoid'
  counts, regions, surface = [], [], []
  for case in pipeline.build_volume_dataset(cfg, cfg.eval_file_pattern):
    probabilities = sliding_window.sliding_window_inference(
        predict, case['image'].numpy(), cfg.input_image_size,
        overlap=cfg.inference.overlap, batch_size=cfg.predict_batch_size,
        weighting=cfg.inference.weighting)
    label = case['label'].numpy()
    logits = _as_logits(probabilities, sigmoid)
    counts.append(metrics.confusion_counts(
        label[None], logits[None], cfg.num_classes,
        output_activation=cfg.model.output_activation,
        ignore_label=cfg.loss_options.ignore_label).numpy())
    if cfg.metrics.brats_regions:
      regions.append(metrics.region_counts(label[None], logits[None]).numpy())
    if cfg.metrics.surface_metrics:
      prediction = (probabilities > 0.5).astype(np.uint8) if sigmoid else (
          np.argmax(probabilities, axis=-1))
      report = evaluation.per_case_report(
          prediction, label, case['spacing'].numpy(), cfg.num_classes,
          tolerance_mm=cfg.metrics.surface_tolerance_mm)
      report['case_id'] = case['case_id'].numpy().decode()
      surface.append(report)
    if cfg.eval_item_count and len(counts) >= cfg.eval_item_count:
      break
  if not counts:
    return np.zeros([0]), None, surface
  return (np.concatenate(counts),
          np.concatenate(regions) if regions else None, surface)


def evaluate(cfg: Config, strategy: Optional[tf.distribute.Strategy] = None,
             state: Optional[TrainState] = None) -> dict[str, Any]:
  """Evaluates the latest checkpoint in model_dir on eval_file_pattern.

  `data.eval_mode` center_crop evaluates a centre crop/pad of each case
  (`data.eval_image_size`) in batches under the strategy; whole_volume runs
  sliding-window inference over each whole case on the host.

  Writes `model_dir/eval_results.json` and returns the same dict: per-class
  dice, IoU, precision and recall (means over cases), the mean foreground
  dice, the step and the empty-class convention.
  """
  if not cfg.eval_file_pattern:
    raise ConfigError('eval_file_pattern: required for evaluation')
  strategy = strategy or distribute.build_strategy(cfg)
  if state is None:
    state = build_state(cfg, strategy, with_optimizer=False)
    if cfg.model_dir and not tf.train.latest_checkpoint(cfg.model_dir):
      raise ConfigError(f'model_dir: no checkpoint in {cfg.model_dir} to '
                        'evaluate; train first or point model_dir at a run')
  surface, region_counts = [], None
  if cfg.data.eval_mode == 'whole_volume':
    all_counts, region_counts, surface = _evaluate_whole_volumes(cfg, state)
  else:
    all_counts, region_counts = _evaluate_crops(cfg, state)
  if not len(all_counts):
    raise ValueError(f'eval_file_pattern {cfg.eval_file_pattern}: no '
                     'evaluation records')
  if cfg.eval_item_count:
    all_counts = all_counts[:cfg.eval_item_count]
    if region_counts is not None:
      region_counts = region_counts[:cfg.eval_item_count]
  report = metrics.summarize(all_counts, class_names=class_names_for(cfg),
                             empty_class=cfg.metrics.empty_class,
                             include_background=False,
                             region_counts_array=region_counts)
  report['step'] = state.step
  report['num_cases'] = int(len(all_counts))
  report['eval_mode'] = cfg.data.eval_mode
  if surface:
    report['surface_metrics'] = {
        'mean': evaluation.summarize_surface(surface),
        'empty_convention': evaluation.EMPTY_CONVENTION,
        'per_case': surface}
  if cfg.model_dir and distribute.is_chief():
    _write_json(os.path.join(cfg.model_dir, EVAL_RESULTS_FILE), report)
    writer = tf.summary.create_file_writer(os.path.join(cfg.model_dir, 'eval'))
    with writer.as_default(step=state.step):
      for key, value in _flat_scalars(report).items():
        tf.summary.scalar(key, value)
    writer.flush()
  return report


def _flat_scalars(report: dict[str, Any], prefix: str = '') -> dict[str, float]:
  out = {}
  for key, value in report.items():
    if isinstance(value, dict):
      out.update(_flat_scalars(value, f'{prefix}{key}/'))
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
      if np.isfinite(value):
        out[prefix + key] = float(value)
  return out


def _write_json(path: str, data: dict[str, Any]) -> None:
  tmp = path + '.tmp'
  with open(tmp, 'w') as f:
    json.dump(data, f, indent=2, default=_json_default)
  os.replace(tmp, path)


def _json_default(value):
  if isinstance(value, np.generic):
    return value.item()
  if isinstance(value, np.ndarray):
    return value.tolist()
  raise TypeError(f'not JSON serialisable: {type(value)}')


def train_and_evaluate(cfg: Config,
                       strategy: Optional[tf.distribute.Strategy] = None
                      ) -> dict[str, Any]:
  """Trains to train_steps, evaluating every train.eval_every_n_steps and at
  the end; returns the last evaluation."""
  strategy = strategy or distribute.build_strategy(cfg)
  set_determinism(cfg)
  state = build_state(cfg, strategy)
  every = cfg.train.eval_every_n_steps or cfg.train_steps
  report = {}
  while True:
    next_stop = min(cfg.train_steps, (state.step // every + 1) * every)
    train(cfg, strategy, state, until_step=next_stop)
    report = evaluate(cfg, strategy, state)
    logging.info('eval at step %d: %s', state.step,
                 json.dumps(report.get('mean_foreground_dice')))
    if state.step >= cfg.train_steps:
      return report

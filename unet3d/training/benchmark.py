"""`--mode=train --benchmark`: training throughput with the input pipeline
in the loop, as JSON (NVIDIA UNet_3D_Medical users know the shape).

Runs `train.benchmark_warmup_steps` untimed steps, then
`train.benchmark_steps` steps one per call, timing each on the host. Nothing
is written to model_dir. Reports images/s as the mean of per-step rates and
as the total over the wall time, and step latency percentiles.

Then it measures how much the input pipeline can deliver while training
runs on the same cores: the same number of steps again, while a second copy
of the pipeline (another seed) is drained as fast as it goes on a host
thread. What that copy delivers plus what the steps consumed, over the wall
time, is the pipeline's capacity during training; `input_headroom` is that
capacity over the images/s the steps consumed in the first phase (>= 1: the
step, not the input, sets the pace).
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
import threading
import time
from typing import Any, Optional

import numpy as np
import tensorflow as tf

from unet3d import distribute
from unet3d import startup
from unet3d.config import Config
from unet3d.input import pipeline
from unet3d.training import trainer


def latency_report(step_seconds: np.ndarray, batch_size: int,
                   voxels_per_image: int) -> dict[str, Any]:
  """Throughput and latency figures of per-step wall times (seconds)."""
  step_seconds = np.asarray(step_seconds, np.float64)
  rates = batch_size / step_seconds
  out = {
      'images_per_second_mean': float(rates.mean()),
      'images_per_second_total': float(batch_size * len(step_seconds) /
                                       step_seconds.sum()),
      'voxels_per_second_total': float(batch_size * voxels_per_image *
                                       len(step_seconds) / step_seconds.sum()),
  }
  for q in (50, 90, 95, 99):
    out[f'latency_ms_p{q}'] = float(np.percentile(step_seconds, q) * 1e3)
  return out


def run_benchmark(cfg: Config,
                  strategy: Optional[tf.distribute.Strategy] = None
                 ) -> dict[str, Any]:
  """Times training steps fed by the real input pipeline; returns the JSON
  report (see module doc)."""
  trainer.check_can_train(cfg)
  cfg = dataclasses.replace(cfg, model_dir='')  # no checkpoints, no params
  strategy = strategy or distribute.build_strategy(cfg)
  distribute.set_determinism(cfg)
  state = trainer.build_train_state(cfg, strategy)
  state.iterator = trainer.training_iterator(cfg, state)
  loop = timed_train_loop(cfg, state, state.iterator)
  for _ in range(max(1, cfg.train.benchmark_warmup_steps)):
    loop(1)
  seconds = []
  for _ in range(cfg.train.benchmark_steps):
    start = time.perf_counter()
    loop(1)
    seconds.append(time.perf_counter() - start)
  voxels = int(np.prod(cfg.input_image_size))
  capacity = input_capacity(cfg, lambda: loop(1), cfg.train.benchmark_steps)
  report = {
      'benchmark': 'train',
      'model': cfg.model.name,
      'input_image_size': list(cfg.input_image_size),
      'train_batch_size': cfg.train_batch_size,
      'warmup_steps': max(1, cfg.train.benchmark_warmup_steps),
      'steps': cfg.train.benchmark_steps,
      'strategy': distribute.strategy_name(cfg),
      'replicas': strategy.num_replicas_in_sync,
      'precision': distribute.compute_dtype(cfg),
      'jit_compile': state.jit_compile,
      **startup.machine_info(),
  }
  report.update(latency_report(np.array(seconds), cfg.train_batch_size,
                               voxels))
  report.update(capacity)
  report['input_headroom'] = (
      capacity['input_images_per_second_during_training'] /
      report['images_per_second_total'])
  return report


def input_capacity(cfg: Config, train_step, steps: int) -> dict[str, float]:
  """Images/s the input pipeline delivers while `steps` calls of
  `train_step` run (see the module doc), and the images/s the steps
  consumed meanwhile."""
  dataset = pipeline.build_train_dataset(
      cfg, position=pipeline.InputPosition(seed=(cfg.seed or 0) + 1))
  iterator = iter(dataset)
  next(iterator)  # build the pipeline before timing
  stop = threading.Event()
  drained = []

  def drain():
    while not stop.is_set():
      drained.append(int(next(iterator)[0].shape[0]))

  thread = threading.Thread(target=drain, daemon=True)
  start = time.perf_counter()
  thread.start()
  for _ in range(steps):
    train_step()
  stop.set()
  thread.join()
  wall = time.perf_counter() - start
  consumed = steps * cfg.train_batch_size
  return {'input_images_per_second_during_training':
              (sum(drained) + consumed) / wall,
          'images_per_second_while_draining': consumed / wall}


def synthetic_batch(cfg: Config, seed: int = 0
                   ) -> tuple[np.ndarray, np.ndarray]:
  """One random training batch of the config's shapes: images
  [B, *input_image_size, num_channels] and labels as training reads them
  (class indices, one-hot of label_dtype, or sigmoid masks)."""
  rng = np.random.default_rng(seed)
  size = [cfg.train_batch_size] + list(cfg.input_image_size)
  images = rng.normal(size=size + [cfg.num_channels]).astype(np.float32)
  if cfg.model.output_activation == 'sigmoid':
    return images, rng.integers(0, 2, size=size + [cfg.num_classes]).astype(
        cfg.label_dtype)
  labels = rng.integers(0, cfg.num_classes, size=size).astype(np.int32)
  if not cfg.use_index_label_in_train:
    labels = np.eye(cfg.num_classes, dtype=cfg.label_dtype)[labels]
  return images, labels


def timed_train_loop(cfg: Config, state: trainer.TrainState, iterator):
  """`loop(steps)`: the trainer's loop run `steps` times on `iterator`,
  waiting for the result."""
  run = trainer.make_train_loop(cfg, state)

  def loop(steps: int) -> None:
    run(iterator, tf.constant(steps)).numpy()

  return loop


def synthetic_train_loop(cfg: Config, state: trainer.TrainState):
  """`timed_train_loop` on one in-memory batch (no input pipeline)."""
  dataset = tf.data.Dataset.from_tensors(synthetic_batch(cfg)).repeat()
  return timed_train_loop(
      cfg, state, iter(state.strategy.experimental_distribute_dataset(dataset)))


@dataclasses.dataclass(frozen=True)
class RunTiming:
  """Seconds of what a training run does, measured on this machine."""
  # Building the model, tracing the step and the first batches.
  startup: float
  step: float
  # One forward pass of one inference window, batched as
  # predict_batch_size.
  window: float
  checkpoint: float


def run_timing(cfg: Config, steps: int = 8, warmup: int = 4) -> RunTiming:
  """Times a config's training on this machine: `warmup` untimed steps
  after the model is built (startup; the first steps after tracing, while
  a cache fills, run slower than training's), then `steps` steps fed by its input
  pipeline when it names training records (the planner sizes CPU recipes
  so, since the pipeline shares the cores; else one synthetic batch), a
  forward pass of predict_batch_size windows and a checkpoint write."""
  start = time.perf_counter()
  cfg = dataclasses.replace(cfg, model_dir='')
  strategy = distribute.build_strategy(cfg)
  state = trainer.build_train_state(cfg, strategy)
  if cfg.training_file_pattern:
    loop = timed_train_loop(cfg, state, trainer.training_iterator(cfg, state))
  else:
    loop = synthetic_train_loop(cfg, state)
  loop(warmup)
  startup = time.perf_counter() - start
  start = time.perf_counter()
  loop(steps)
  step = (time.perf_counter() - start) / steps
  return RunTiming(startup, step, _window_seconds(cfg, state),
                   _checkpoint_seconds(state))


def _window_seconds(cfg: Config, state: trainer.TrainState,
                    calls: int = 3) -> float:
  batch = max(1, cfg.predict_batch_size)
  windows = tf.zeros([batch] + list(cfg.input_image_size) +
                     [cfg.num_channels])
  forward = tf.function(lambda x: state.model(x, training=False))
  forward(windows).numpy()
  start = time.perf_counter()
  for _ in range(calls):
    forward(windows).numpy()
  return (time.perf_counter() - start) / (calls * batch)


def _checkpoint_seconds(state: trainer.TrainState) -> float:
  with tempfile.TemporaryDirectory() as tmp:
    start = time.perf_counter()
    state.checkpoint.write(os.path.join(tmp, 'ckpt'))
    return time.perf_counter() - start

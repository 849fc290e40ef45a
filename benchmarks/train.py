"""Training-step throughput without the input pipeline, and the loop's
overhead over a bare step. Prints JSON.

  python benchmarks/train.py [--config_file=configs/demo.yaml]
      [--params_override=...] [--steps=20] [--rounds=3] [--logical_cpus=2]
      [--profile_dir=/tmp/prof]

(A) the trainer's loop (`trainer.make_train_loop`: steps_per_loop steps in
one tf.function around strategy.run, the configured loss and optimizer) fed
one in-memory batch repeatedly; (B) a bare `tf.function` step of the same
model, loss, optimizer and batch (tape, gradients, apply), called once per
step. Rounds of A and B alternate so machine drift cancels; the medians are
reported, with overhead = median A seconds/step / median B - 1.
voxels/s = steps/s * train_batch_size * prod(input_image_size).
--profile_dir also records a TensorFlow profiler trace of `--steps` loop
steps after the timed rounds (open it with TensorBoard's profile plugin).
"""

import json
import os
import time

from unet3d import errors  # pylint: disable=g-import-not-at-top
from unet3d import startup

startup.prepare_environment()  # before TensorFlow is imported

import numpy as np  # pylint: disable=g-import-not-at-top

tf = startup.import_tensorflow()
from absl import app
from absl import flags

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
flags.DEFINE_string('config_file', os.path.join(REPO, 'configs', 'demo.yaml'),
                    'Recipe to measure.')
flags.DEFINE_string('params_override', None, 'Overrides of the recipe.')
flags.DEFINE_integer('steps', 20, 'Timed steps per round.')
flags.DEFINE_integer('rounds', 3, 'Alternating rounds of loop and bare step.')
flags.DEFINE_string('profile_dir', None, 'Write a profiler trace of the '
                    'loop here after timing.')
flags.DEFINE_integer('logical_cpus', 1, 'Split the CPU into this many logical '
                     'devices (distribution_strategy=mirrored then has as '
                     'many replicas, sharing the same cores).')
FLAGS = flags.FLAGS


def _timed(fn, steps: int) -> float:
  start = time.perf_counter()
  fn(steps)
  return (time.perf_counter() - start) / steps


def main(argv):
  del argv
  # pylint: disable=g-import-not-at-top
  from unet3d import config
  from unet3d import distribute
  from unet3d import losses
  from unet3d import optimizers
  from unet3d.training import benchmark
  from unet3d.training import trainer
  # pylint: enable=g-import-not-at-top

  if FLAGS.profile_dir:  # fail now, not after the timed rounds
    try:
      tf.io.gfile.makedirs(FLAGS.profile_dir)
    except tf.errors.OpError as e:
      raise errors.ConfigError(f'--profile_dir: cannot create '
                               f'{FLAGS.profile_dir} ({errors.first_line(e)})'
                              ) from None
  if FLAGS.logical_cpus > 1:
    tf.config.set_logical_device_configuration(
        tf.config.list_physical_devices('CPU')[0],
        [tf.config.LogicalDeviceConfiguration()] * FLAGS.logical_cpus)
  cfg = config.build_config(FLAGS.config_file, FLAGS.params_override,
                            {'model_dir': ''})
  strategy = distribute.build_strategy(cfg)
  state = trainer.build_train_state(cfg, strategy)
  size = list(cfg.input_image_size)
  batch = cfg.train_batch_size
  images, labels = benchmark.synthetic_batch(cfg)
  loop = benchmark.synthetic_train_loop(cfg, state)

  # The bare step: same model architecture, loss and optimizer, the same
  # XLA decision; no strategy. (build_train_state set the precision policy.)
  from unet3d import models  # pylint: disable=g-import-not-at-top
  bare_model = models.build_model(cfg)
  bare_optimizer = optimizers.build_optimizer(cfg)
  loss_fn = losses.build_loss_fn(cfg)
  x, y = tf.constant(images), tf.constant(labels)

  @tf.function(jit_compile=state.jit_compile)
  def bare_step():
    with tf.GradientTape() as tape:
      loss = tf.reduce_mean(loss_fn(y, bare_model(x, training=True)))
    grads = tape.gradient(loss, bare_model.trainable_variables)
    bare_optimizer.apply_gradients(zip(grads, bare_model.trainable_variables))
    return loss

  def bare(steps):
    for _ in range(steps):
      loss = bare_step()
    loss.numpy()

  loop(2)  # trace and warm up both
  bare(2)
  loop_seconds, bare_seconds = [], []
  for _ in range(FLAGS.rounds):
    loop_seconds.append(_timed(loop, FLAGS.steps))
    bare_seconds.append(_timed(bare, FLAGS.steps))
  if FLAGS.profile_dir:
    tf.profiler.experimental.start(FLAGS.profile_dir)
    loop(FLAGS.steps)
    tf.profiler.experimental.stop()
  loop_step = float(np.median(loop_seconds))
  bare_step_seconds = float(np.median(bare_seconds))
  voxels = batch * int(np.prod(size))
  print(json.dumps({
      'benchmark': 'train_step',
      'config_file': os.path.relpath(FLAGS.config_file, REPO),
      'params_override': FLAGS.params_override,
      'model': cfg.model.name,
      'loss': cfg.loss,
      'input_image_size': size,
      'train_batch_size': batch,
      'trainable_params': int(sum(
          np.prod(v.shape) for v in state.model.trainable_variables)),
      'steps_per_loop': distribute.steps_per_loop(cfg),
      'strategy': type(strategy).__name__,
      'replicas': strategy.num_replicas_in_sync,
      'sync_batch_norm': distribute.resolve_sync_batch_norm(
          cfg, strategy).model.sync_batch_norm,
      'gradient_clip_norm': cfg.train.gradient_clip_norm,
      'jit_compile': state.jit_compile,
      'steps': FLAGS.steps,
      'rounds': FLAGS.rounds,
      'steps_per_second': round(1 / loop_step, 3),
      'patches_per_second': round(batch / loop_step, 3),
      'voxels_per_second': round(voxels / loop_step),
      'bare_step_steps_per_second': round(1 / bare_step_seconds, 3),
      'loop_overhead': round(loop_step / bare_step_seconds - 1, 4),
      **startup.machine_info(),
      'logical_cpus': FLAGS.logical_cpus,
  }))


if __name__ == '__main__':
  app.run(errors.one_line_errors(main))

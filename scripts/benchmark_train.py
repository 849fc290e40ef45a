"""Training-step throughput, without the input pipeline. Prints JSON.

  python scripts/benchmark_train.py [--config_file=configs/demo.yaml]
      [--params_override=...] [--steps=20] [--logical_cpus=2]

Feeds one in-memory batch repeatedly through the same train loop the trainer
uses (same model, loss, optimizer, strategy), so the number is what a step
consumes: voxels/s = steps/s * train_batch_size * prod(input_image_size).
"""

import json
import os
import sys
import time

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # pylint: disable=g-import-not-at-top
import tensorflow as tf
from absl import app
from absl import flags

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
flags.DEFINE_string('config_file', os.path.join(REPO, 'configs', 'demo.yaml'),
                    'Recipe to measure.')
flags.DEFINE_string('params_override', None, 'Overrides of the recipe.')
flags.DEFINE_integer('steps', 20, 'Timed steps (after one warm-up loop).')
flags.DEFINE_integer('logical_cpus', 1, 'Split the CPU into this many logical '
                     'devices (distribution_strategy=mirrored then has as '
                     'many replicas, sharing the same cores).')
FLAGS = flags.FLAGS


def main(argv):
  del argv
  # pylint: disable=g-import-not-at-top
  from unet3d import config
  from unet3d import distribute
  from unet3d.training import trainer
  # pylint: enable=g-import-not-at-top

  if FLAGS.logical_cpus > 1:
    tf.config.set_logical_device_configuration(
        tf.config.list_physical_devices('CPU')[0],
        [tf.config.LogicalDeviceConfiguration()] * FLAGS.logical_cpus)
  cfg = config.build_config(FLAGS.config_file, FLAGS.params_override,
                            {'model_dir': ''})
  strategy = distribute.build_strategy(cfg)
  state = trainer.build_train_state(cfg, strategy)
  rng = np.random.default_rng(0)
  size = list(cfg.input_image_size)
  batch = cfg.train_batch_size
  images = rng.normal(size=[batch] + size + [cfg.num_channels]).astype(
      np.float32)
  labels = rng.integers(0, cfg.num_classes, size=[batch] + size).astype(
      np.int32)
  if not cfg.use_index_label_in_train:
    labels = np.eye(cfg.num_classes, dtype=cfg.label_dtype)[labels]
  dataset = tf.data.Dataset.from_tensors((images, labels)).repeat()
  iterator = iter(strategy.experimental_distribute_dataset(dataset))
  run = trainer.make_train_loop(cfg, state)
  run(iterator, tf.constant(2)).numpy()  # trace and warm up
  start = time.perf_counter()
  run(iterator, tf.constant(FLAGS.steps)).numpy()
  elapsed = time.perf_counter() - start
  steps_per_second = FLAGS.steps / elapsed
  voxels = batch * int(np.prod(size))
  print(json.dumps({
      'benchmark': 'train_step',
      'config_file': os.path.relpath(FLAGS.config_file, REPO),
      'model': cfg.model.name,
      'input_image_size': size,
      'train_batch_size': batch,
      'strategy': type(strategy).__name__,
      'replicas': strategy.num_replicas_in_sync,
      'sync_batch_norm': distribute.resolve_sync_batch_norm(
          cfg, strategy).model.sync_batch_norm,
      'gradient_clip_norm': cfg.train.gradient_clip_norm,
      'jit_compile': distribute.use_jit_compile(cfg, strategy, state.model),
      'steps': FLAGS.steps,
      'steps_per_second': round(steps_per_second, 3),
      'patches_per_second': round(steps_per_second * batch, 3),
      'voxels_per_second': round(steps_per_second * voxels),
      'cpu_count': os.cpu_count(),
      'logical_cpus': FLAGS.logical_cpus,
  }))


if __name__ == '__main__':
  app.run(main)

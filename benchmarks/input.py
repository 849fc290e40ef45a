"""Training input-pipeline throughput, with every augmentation on. Prints JSON.

  python benchmarks/input.py [--config_file=configs/demo.yaml]
      [--params_override=...] [--batches=60] [--threads=1,2]

Writes synthetic demo volumes (64^3, the demo's shape) to a temporary
TFRecord shard set, then times `pipeline.build_dataset(cfg, 'train')` with
all augmentations switched on (each at probability 0.5 unless the recipe
sets more), using a tf.data private thread pool of 1 and of 2 threads.
Compare `voxels_per_second` with benchmarks/train.py.
"""

import json
import os
import tempfile
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
flags.DEFINE_integer('batches', 60, 'Timed batches (after 5 warm-up ones).')
flags.DEFINE_integer('num_cases', 12, 'Synthetic volumes to read from.')
flags.DEFINE_list('threads', ['1', '2'], 'tf.data thread-pool sizes to time.')
FLAGS = flags.FLAGS

EVERY_AUGMENTATION = {
    'enabled': True, 'flip_prob': 0.5, 'rot90_prob': 0.5, 'affine_prob': 0.5,
    'elastic_prob': 0.5, 'brightness_prob': 0.5, 'contrast_prob': 0.5,
    'gamma_prob': 0.5, 'noise_prob': 0.5, 'blur_prob': 0.5,
    'low_resolution_prob': 0.5}


def _write_records(directory: str, num_cases: int, cfg) -> str:
  from unet3d.input import schema  # pylint: disable=g-import-not-at-top
  from unet3d.preprocess import synthetic  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)
  volumes = []
  for i in range(num_cases):
    image, label = synthetic.make_demo_volume(rng)
    image = (image - image.mean()) / image.std()
    volumes.append(schema.Volume(
        image=image[..., None], label=label,
        spacing=np.array(synthetic.DEMO_SPACING),
        affine=synthetic.demo_affine(image.shape), case_id=f'demo_{i:03d}'))
  for shard in range(2):
    schema.write_records(
        os.path.join(directory, f'train-{shard}.tfrecord'),
        (schema.encode_volume(v) for v in volumes[shard::2]),
        cfg.compressed_input)
  return os.path.join(directory, 'train-*')


def _time(dataset, batches: int) -> float:
  iterator = iter(dataset)
  for _ in range(5):
    next(iterator)
  start = time.perf_counter()
  for _ in range(batches):
    next(iterator)
  return time.perf_counter() - start


def main(argv):
  del argv
  from unet3d import config  # pylint: disable=g-import-not-at-top
  from unet3d.input import pipeline  # pylint: disable=g-import-not-at-top

  base = config.build_config(FLAGS.config_file, FLAGS.params_override,
                             {'model_dir': ''})
  results = []
  with tempfile.TemporaryDirectory() as tmp:
    pattern = _write_records(tmp, FLAGS.num_cases, base)
    augmentation = {key: max(value, getattr(base.data.augmentation, key))
                    if key.endswith('_prob') else value
                    for key, value in EVERY_AUGMENTATION.items()}
    cfg = config.build_config(
        FLAGS.config_file, FLAGS.params_override,
        {'model_dir': '', 'training_file_pattern': pattern,
         'data': {'augmentation': augmentation}})
    patch_voxels = int(np.prod(cfg.input_image_size))
    for threads in [int(t) for t in FLAGS.threads]:
      options = tf.data.Options()
      options.threading.private_threadpool_size = threads
      options.threading.max_intra_op_parallelism = 1
      dataset = pipeline.build_dataset(cfg, 'train').with_options(options)
      elapsed = _time(dataset, FLAGS.batches)
      patches = FLAGS.batches * cfg.train_batch_size
      results.append({
          'threads': threads,
          'seconds': round(elapsed, 3),
          'patches_per_second': round(patches / elapsed, 2),
          'voxels_per_second': round(patches * patch_voxels / elapsed),
      })
  print(json.dumps({
      'benchmark': 'input_pipeline',
      'config_file': os.path.relpath(FLAGS.config_file, REPO),
      'input_image_size': list(cfg.input_image_size),
      'train_batch_size': cfg.train_batch_size,
      'cache': cfg.data.cache,
      'augmentation': augmentation,
      'batches': FLAGS.batches,
      'results': results,
      'cpu_count': os.cpu_count(),
  }))


if __name__ == '__main__':
  app.run(errors.one_line_errors(main))

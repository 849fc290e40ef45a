"""Conversion throughput (volumes/s) of the preprocessing, as JSON.

  python benchmarks/preprocess.py [--num_volumes=4] \
      [--shape=256,256,128] [--processes=1,2]

Writes synthetic LiTS-like CT cases (int16 HU `.nii.gz`, LPS axes, in-plane
spacing 0.7-0.85 mm and slices 1.5-2.5 mm, so every case is reoriented and
resampled to the median spacing) to a temporary folder, then times
`convert_lits` on the whole CT (no liver crop; HU window, one-hot-linear
labels, cubic images, GZIP shards) with each process count. TensorFlow is
imported before timing. The data is synthetic.
"""

import json
import os
import shutil
import tempfile
import time

from unet3d import errors  # pylint: disable=g-import-not-at-top
from unet3d import startup

startup.prepare_environment()  # before TensorFlow is imported

from absl import app  # pylint: disable=g-import-not-at-top
from absl import flags
import numpy as np

flags.DEFINE_integer('num_volumes', 4, 'Synthetic cases.')
flags.DEFINE_list('shape', ['256', '256', '128'], 'Voxels per case.')
flags.DEFINE_list('processes', ['1', '2'], 'Process counts to time.')
flags.DEFINE_string('work_dir', None, 'Where to write (default: a temporary '
                    'folder, removed afterwards).')
FLAGS = flags.FLAGS


def _synthetic_ct(shape, rng):
  """int16 HU: air, an elliptic body, a liver ellipsoid with a tumour."""
  x, y, z = [np.linspace(-1, 1, s, dtype=np.float32)[sl]
             for s, sl in zip(shape, [np.s_[:, None, None],
                                      np.s_[None, :, None],
                                      np.s_[None, None, :]])]
  body = (x / 0.9)**2 + (y / 0.7)**2 <= 1
  liver = ((x - 0.3) / 0.35)**2 + (y / 0.3)**2 + (z / 0.6)**2 <= 1
  tumour = ((x - 0.35) / 0.08)**2 + (y / 0.08)**2 + (z / 0.15)**2 <= 1
  image = np.full(shape, -1000.0, np.float32)
  image[np.broadcast_to(body, shape)] = 40.0
  image[liver] = 90.0
  image[tumour] = 140.0
  image += rng.normal(0, 25, shape).astype(np.float32)
  label = liver.astype(np.uint8) + tumour
  return image.astype(np.int16), label


def write_cases(folder, num_volumes, shape):
  from unet3d.preprocess import io  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)
  for i in range(num_volumes):
    image, label = _synthetic_ct(shape, rng)
    spacing = [rng.uniform(0.7, 0.85)] * 2 + [rng.uniform(1.5, 2.5)]
    affine = np.diag([-spacing[0], -spacing[1], spacing[2], 1.0])
    io.save_nifti(os.path.join(folder, f'volume-{i}.nii.gz'), image, affine)
    io.save_nifti(os.path.join(folder, f'segmentation-{i}.nii.gz'), label,
                  affine)


def main(argv):
  del argv
  from unet3d.preprocess import datasets  # pylint: disable=g-import-not-at-top
  shape = tuple(int(s) for s in FLAGS.shape)
  root = FLAGS.work_dir or tempfile.mkdtemp(prefix='benchmark_preprocess_')
  data = os.path.join(root, 'lits')
  os.makedirs(data, exist_ok=True)
  try:
    write_cases(data, FLAGS.num_volumes, shape)
    result = {'volume_shape': list(shape), 'num_volumes': FLAGS.num_volumes,
              'cpu_count': os.cpu_count(),
              'settings': 'convert_lits: RAS, crop nonzero, median spacing '
                          '(cubic image, one-hot linear label), HU window '
                          '-200..250 + z-score, no liver crop, GZIP, 4 shards'}
    for processes in (int(p) for p in FLAGS.processes):
      out = os.path.join(root, f'records_{processes}')
      start = time.perf_counter()
      summary = datasets.convert_lits(
          os.path.join(data, 'volume-{}.nii.gz'),
          os.path.join(data, 'segmentation-{}.nii.gz'), out,
          crop_liver_region=False, num_processes=processes, overwrite=True,
          validation_fraction=0.25)
      seconds = time.perf_counter() - start
      result[f'processes_{processes}'] = {
          'seconds': round(seconds, 2),
          'volumes_per_s': round(FLAGS.num_volumes / seconds, 3),
          'stored_shape': summary['cases'][0]['stored']['shape'],
          'megabytes_written': round(sum(
              os.path.getsize(os.path.join(out, f)) for f in os.listdir(out)
          ) / 2**20, 1)}
    print(json.dumps(result, indent=1))
  finally:
    if not FLAGS.work_dir:
      shutil.rmtree(root, ignore_errors=True)


if __name__ == '__main__':
  app.run(errors.one_line_errors(main))

"""Peak memory of predict against the volume size and the class count, with
MONAI's peer measured in the same run; JSON lines.

  python benchmarks/predict_memory.py [--shapes=512x512x300,256x256x150]
      [--classes=14,4] [--aggregations=slab,whole]
      [--peer_python=/tmp/peer/bin/python] [--model=tiny|unet]

Each measurement is one fresh process (its peak RSS from `os.wait4`, the
kernel's ru_maxrss of that child alone): predict of one NIfTI file
(`predict.predict_file` with `predict.preprocessing: none`: read, sliding
window, labels, write), 64^3 windows, overlap 0.5, Gaussian weights,
2 windows a step, softmax;
  aggregation=slab   eval's and predict's default (`whole_volume.segmenter`);
  aggregation=whole  the whole-volume float32 probabilities
                     (`whole_volume.volume_fn`, what the SavedModel runs);
  peer               MONAI's sliding_window_inference with its defaults
                     (overlap 0.25, constant weights, sw_batch_size 1) in the
                     peer virtualenv (benchmarks/monai_predict_peer.py): the
                     NIfTI read with nibabel, argmax, uint8 NIfTI written.
--model=tiny (default) is a 1x1x1 convolution to the classes on both sides:
the memory the aggregation needs, not the network's compute. The input file
is written by this parent process beforehand.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def _child(args) -> None:
  """One predict in this process; prints its seconds."""
  from unet3d import startup  # pylint: disable=g-import-not-at-top
  startup.prepare_environment()
  tf = startup.import_tensorflow()
  import keras  # pylint: disable=g-import-not-at-top
  from unet3d import config  # pylint: disable=g-import-not-at-top
  from unet3d import models
  from unet3d.inference import predict
  from unet3d.inference import whole_volume
  cfg = config.build_config(None, {
      'input_image_size': [args.patch] * 3, 'num_channels': 1,
      'num_classes': args.num_classes, 'num_base_filters': 4, 'depth': 3,
      'predict_batch_size': 2, 'distribution_strategy': 'cpu',
      'inference': {'overlap': 0.5, 'weighting': 'gaussian'}})
  if args.model == 'tiny':
    keras.utils.set_random_seed(0)
    inputs = keras.Input((args.patch,) * 3 + (1,))
    model = keras.Model(inputs, keras.layers.Conv3D(args.num_classes, 1)(
        inputs))
  else:
    model = models.build_model(cfg)
  probabilities = whole_volume.probabilities_fn(cfg, model)
  volume = (whole_volume.segmenter(cfg, probabilities)
            if args.aggregation == 'slab'
            else whole_volume.volume_fn(cfg, probabilities))
  start = time.perf_counter()
  predict.predict_file(args.input, args.output, None, cfg, None,
                       volume=volume)
  print(json.dumps({'seconds': round(time.perf_counter() - start, 2),
                    'tensorflow': tf.__version__}))


def _measure(cmd: list[str], env: dict) -> dict:
  """Runs cmd; (its last JSON line + peak_rss_mb of that process)."""
  with tempfile.TemporaryFile('w+') as out, tempfile.TemporaryFile(
      'w+') as err:
    proc = subprocess.Popen(cmd, stdout=out, stderr=err, env=env)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    out.seek(0)
    err.seek(0)
    lines = [l for l in out.read().splitlines() if l.startswith('{')]
    if proc.returncode or not lines:
      last = (err.read().strip().splitlines() or ['no output'])[-1]
      return {'error': f'exit {proc.returncode}: {last}'}
  return {**json.loads(lines[-1]),
          'peak_rss_mb': round(usage.ru_maxrss / 1024)}


def _write_input(path: str, shape) -> None:
  import nibabel as nib  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  image = np.random.default_rng(0).normal(size=shape).astype(np.float32)
  nib.save(nib.Nifti1Image(image, np.eye(4)), path)


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--shapes', default='512x512x300,256x256x150')
  parser.add_argument('--classes', default='14,4')
  parser.add_argument('--aggregations', default='slab,whole')
  parser.add_argument('--patch', type=int, default=64)
  parser.add_argument('--model', choices=['tiny', 'unet'], default='tiny')
  parser.add_argument('--peer_python', default=None)
  parser.add_argument('--workdir', default=None)
  # The child's own arguments.
  parser.add_argument('--child', action='store_true', help=argparse.SUPPRESS)
  parser.add_argument('--input', help=argparse.SUPPRESS)
  parser.add_argument('--output', help=argparse.SUPPRESS)
  parser.add_argument('--num_classes', type=int, help=argparse.SUPPRESS)
  parser.add_argument('--aggregation', help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.child:
    return _child(args)
  sys.path.insert(0, os.path.dirname(HERE))
  from unet3d import startup  # pylint: disable=g-import-not-at-top
  workdir = args.workdir or tempfile.mkdtemp(prefix='predict_memory_')
  # The children import this checkout's unet3d, whatever is installed.
  env = dict(os.environ, PYTHONPATH=os.pathsep.join(
      [os.path.dirname(HERE)] + os.environ.get('PYTHONPATH', '').split(
          os.pathsep)).rstrip(os.pathsep))
  for shape_text in args.shapes.split(','):
    shape = tuple(int(s) for s in shape_text.split('x'))
    path = os.path.join(workdir, f'input_{shape_text}.nii')
    _write_input(path, shape)
    voxels = 1
    for s in shape:
      voxels *= s
    for classes in (int(c) for c in args.classes.split(',')):
      common = {'bench': 'predict_peak_rss', 'shape': list(shape),
                'classes': classes, 'patch': [args.patch] * 3,
                'model': args.model,
                'image_float32_mb': round(voxels * 4 / 2**20),
                'probabilities_float32_mb': round(voxels * classes * 4 /
                                                  2**20),
                'cpu': startup.cpu_model(),
                'cpu_flags': startup.cpu_simd_flags(),
                'cpu_count': os.cpu_count()}
      for aggregation in args.aggregations.split(','):
        result = _measure([
            sys.executable, os.path.abspath(__file__), '--child',
            f'--input={path}', f'--output={workdir}/ours_seg.nii.gz',
            f'--num_classes={classes}', f'--aggregation={aggregation}',
            f'--patch={args.patch}', f'--model={args.model}'], env)
        print(json.dumps({**common, 'side': f'unet3d_{aggregation}',
                          'window': {'overlap': 0.5, 'weighting': 'gaussian',
                                     'windows_per_step': 2},
                          **result}), flush=True)
      if args.peer_python:
        peer_env = dict(env, NC=str(classes), PATCH=str(args.patch),
                        MODE='memory', MODEL='tiny')
        result = _measure([args.peer_python,
                           os.path.join(HERE, 'monai_predict_peer.py'), path,
                           f'{workdir}/monai_seg.nii.gz'], peer_env)
        print(json.dumps({**common, 'side': 'monai_defaults', **result}),
              flush=True)


if __name__ == '__main__':
  main()

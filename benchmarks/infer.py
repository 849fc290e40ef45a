"""Sliding-window inference speed and peak memory, as JSON lines.

  PYTHONPATH=. python benchmarks/infer.py [--shape=192,192,160]
      [--mirror=both] [--fold_batch_norm=on|off] [--aggregation=whole|slab]
      [--onednn_bfloat16] [--peer_python=/tmp/torchenv/bin/python
       --peer_script=/work/shared/peers/monai_garden_sw.py --rounds=2]

--fold_batch_norm=on (default, what eval and predict run) folds each batch
norm into its convolution (`fold_batch_norm`); --aggregation=slab times
eval's and predict's slab-by-slab labels instead of the whole-volume
probabilities (what MONAI returns, so the default for the comparison);
--onednn_bfloat16 lets oneDNN compute in bfloat16 (`inference.
onednn_bfloat16`). Run under ONEDNN_MAX_CPU_ISA=AVX2 (and
ATEN_CPU_CAPABILITY=avx2 for the peer) to stand in for an AVX2-only CPU;
the JSON gives the CPU's flags and that cap.

The path that eval and predict run (`whole_volume.volume_fn`: the device
sliding window, Gaussian weighting, 64^3 windows, overlap 0.5, 2 windows a
step) with this project's 3D U-Net (unet3d, 16 base filters, depth 4,
1 channel, 4 classes, random weights: speed does not depend on them) on a
random volume, after a warm-up on a small volume (tracing, kernels).

One line per configuration (`mirror_axes` [] and/or [0, 1, 2]): seconds
(best of --reps), voxels/s, and peak memory:
  run_peak_rss_mb / run_peak_growth_mb  the process's peak RSS during the
      timed runs (Linux VmHWM, reset through /proc/self/clear_refs) and that
      minus the RSS before them;
  tf_peak_mb  TensorFlow's CPU allocator peak during them (reset before);
  probabilities_mb  one float32 copy of the volume's probabilities
      [X, Y, Z, K], the unit the issue's memory bound is stated in.

With --peer_script, the peer (MONAI's sliding_window_inference with the same
topology in PyTorch, run by --peer_python in its own process, F/DEPTH/NC
set to match) and this project's unmirrored run alternate for --rounds
rounds (A B B A ...); a last line gives both medians and the ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import time

from unet3d import startup  # pylint: disable=g-import-not-at-top

startup.prepare_environment()  # before TensorFlow is imported

import numpy as np  # pylint: disable=g-import-not-at-top

tf = startup.import_tensorflow()
from unet3d import config  # pylint: disable=g-import-not-at-top
from unet3d import errors
from unet3d import models
from unet3d.inference import whole_volume


def _status_mb(key: str):
  try:
    with open('/proc/self/status') as f:
      for line in f:
        if line.startswith(key):
          return int(line.split()[1]) / 1024
  except OSError:
    pass
  return None


def _reset_peaks() -> bool:
  try:
    tf.config.experimental.reset_memory_stats('CPU:0')
  except (ValueError, RuntimeError):
    pass
  try:
    with open('/proc/self/clear_refs', 'w') as f:
      f.write('5')
    return True
  except OSError:
    return False


def _tf_peak_mb():
  try:
    return round(tf.config.experimental.get_memory_info('CPU:0')['peak'] /
                 2**20, 1)
  except (ValueError, RuntimeError):
    return None


def _build(args, mirror_axes):
  cfg = config.build_config(None, {
      'input_image_size': [args.patch] * 3, 'num_channels': 1,
      'num_classes': args.classes, 'num_base_filters': args.filters,
      'depth': args.depth, 'predict_batch_size': args.batch_size,
      'distribution_strategy': 'cpu',
      'inference': {'overlap': args.overlap, 'weighting': 'gaussian',
                    'mirror_axes': list(mirror_axes)}})
  return cfg


def _run_peer(args, shape) -> dict:
  env = dict(os.environ, SHAPE=','.join(map(str, shape)), REPS='1',
             F=str(args.filters), DEPTH=str(args.depth), NC=str(args.classes))
  proc = subprocess.run([args.peer_python, args.peer_script], env=env,
                        capture_output=True, text=True, check=False)
  if proc.returncode:
    last = (proc.stderr.strip().splitlines() or ['no output'])[-1]
    raise errors.RunError(f'{args.peer_script} failed (exit '
                          f'{proc.returncode}): {last}')
  return json.loads(proc.stdout.strip().splitlines()[-1])


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--shape', default='192,192,160')
  parser.add_argument('--patch', type=int, default=64)
  parser.add_argument('--overlap', type=float, default=0.5)
  parser.add_argument('--batch_size', type=int, default=2)
  parser.add_argument('--filters', type=int, default=16)
  parser.add_argument('--depth', type=int, default=4)
  parser.add_argument('--classes', type=int, default=4)
  parser.add_argument('--mirror', choices=['none', 'all', 'both'],
                      default='both')
  parser.add_argument('--reps', type=int, default=1)
  parser.add_argument('--peer_python', default=None)
  parser.add_argument('--peer_script', default=None)
  parser.add_argument('--rounds', type=int, default=2)
  parser.add_argument('--fold_batch_norm', choices=['on', 'off'],
                      default='on')
  parser.add_argument('--aggregation', choices=['whole', 'slab'],
                      default='whole')
  parser.add_argument('--onednn_bfloat16', action='store_true')
  args = parser.parse_args()
  if args.onednn_bfloat16:
    tf.config.optimizer.set_experimental_options(
        {'auto_mixed_precision_onednn_bfloat16': True})
  shape = tuple(int(s) for s in args.shape.split(','))
  mirrors = {'none': [()], 'all': [(0, 1, 2)],
             'both': [(), (0, 1, 2)]}[args.mirror]
  image = np.random.default_rng(1).normal(size=shape + (1,)).astype(
      np.float32)
  voxels = int(np.prod(shape))
  machine = {**startup.machine_info(),
             'tensorflow': tf.__version__}

  cfg = _build(args, ())
  model = models.build_model(cfg)
  common = {'shape': list(shape), 'patch': [args.patch] * 3,
            'overlap': args.overlap, 'windows_per_step': args.batch_size,
            'weighting': 'gaussian',
            'model': {'name': 'unet3d', 'filters': args.filters,
                      'depth': args.depth, 'classes': args.classes,
                      'params': int(model.count_params())},
            'fold_batch_norm': args.fold_batch_norm,
            'aggregation': args.aggregation,
            'onednn_bfloat16': args.onednn_bfloat16,
            **machine}
  volume_fns = {}
  for mirror_axes in mirrors:
    cfg = _build(args, mirror_axes)
    probabilities = whole_volume.probabilities_fn(
        cfg, model, fold_batch_norm=args.fold_batch_norm == 'on')
    if args.aggregation == 'slab':
      volume = whole_volume.segmenter(cfg, probabilities)
    else:
      volume = whole_volume.volume_fn(cfg, probabilities)
    # Warm-up: trace once (any size) and create the kernels for a full
    # batch of windows.
    volume(np.zeros((args.patch, args.patch, args.patch * 3 // 2, 1),
                    np.float32))
    volume_fns[mirror_axes] = volume

  def timed(mirror_axes) -> float:
    start = time.perf_counter()
    out = volume_fns[mirror_axes](image)
    seconds = time.perf_counter() - start
    labels = out.labels if args.aggregation == 'slab' else out
    assert labels.shape[:3] == shape
    return seconds

  for mirror_axes in mirrors:
    reset = _reset_peaks()
    before = _status_mb('VmRSS')
    times = [timed(mirror_axes) for _ in range(args.reps)]
    peak = _status_mb('VmHWM') if reset else None
    seconds = min(times)
    print(json.dumps({
        'bench': 'unet3d_sliding_window', **common,
        'mirror_axes': list(mirror_axes), 'seconds': round(seconds, 2),
        'seconds_all': [round(t, 2) for t in times],
        'voxels_per_s': round(voxels / seconds),
        'probabilities_mb': round(voxels * args.classes * 4 / 2**20, 1),
        'rss_before_mb': round(before) if before else None,
        'run_peak_rss_mb': round(peak) if peak else None,
        'run_peak_growth_mb': round(peak - before) if peak else None,
        'tf_peak_mb': _tf_peak_mb(),
        'process_peak_rss_mb': round(resource.getrusage(
            resource.RUSAGE_SELF).ru_maxrss / 1024)}), flush=True)

  if not args.peer_script:
    return
  ours, peer, order = [], [], []
  for r in range(args.rounds):
    for who in (('ours', 'peer') if r % 2 == 0 else ('peer', 'ours')):
      order.append(who)
      if who == 'ours':
        ours.append(timed(()))
      else:
        peer.append(_run_peer(args, shape)['seconds'])
  ours_median, peer_median = float(np.median(ours)), float(np.median(peer))
  print(json.dumps({
      'bench': 'unet3d_vs_peer', **common, 'mirror_axes': [],
      'peer': os.path.basename(args.peer_script), 'order': order,
      'ours_seconds': [round(t, 2) for t in ours],
      'peer_seconds': [round(t, 2) for t in peer],
      'ours_voxels_per_s': round(voxels / ours_median),
      'peer_voxels_per_s': round(voxels / peer_median),
      'peer_over_ours': round(peer_median / ours_median, 3)}), flush=True)


if __name__ == '__main__':
  errors.one_line_errors(main)()

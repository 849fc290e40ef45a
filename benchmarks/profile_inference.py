"""Where the sliding window's time goes: the TensorFlow profiler's op
statistics of one whole-volume run, as JSON.

  PYTHONPATH=. python benchmarks/profile_inference.py [--shape=128,128,96]
      [--fold_batch_norm] [--aggregation=whole|slab] [--top=15]

The demo recipe's Model Garden U-Net (8 filters, depth 4, 4 classes, random
weights), 64^3 windows, overlap 0.5, Gaussian weights, 2 windows a step;
one warm-up run, then one run under `tf.profiler.experimental.trace`. The
trace's TensorFlow op events (the executor's threads) are summed by op type
and printed with their share of the summed op time: convolutions
(_MklNativeConv3D / _FusedConv3D ...), batch norm, window extraction
(Slice, Pack), weighting (Mul), accumulation (TensorStridedSliceUpdate,
AddV2), argmax, copies. Op time on two cores overlaps: shares, not seconds.
"""

from __future__ import annotations

import argparse
import collections
import glob
import json
import os
import tempfile
import time

from unet3d import startup  # pylint: disable=g-import-not-at-top

startup.prepare_environment()

import numpy as np  # pylint: disable=g-import-not-at-top

tf = startup.import_tensorflow()
from tensorflow.tsl.profiler.protobuf import xplane_pb2  # pylint: disable=g-import-not-at-top
from unet3d import config  # pylint: disable=g-import-not-at-top
from unet3d import models
from unet3d.inference import fold_batch_norm
from unet3d.inference import whole_volume


# Events that enclose other ops.
_CONTAINERS = ('Process', 'StatefulPartitionedCall', 'PartitionedCall',
               'While', 'StatelessWhile', 'If', 'StatelessIf')


def op_statistics(logdir: str) -> dict[str, float]:
  """{op type: summed microseconds} of the TF op events in the trace."""
  paths = glob.glob(os.path.join(logdir, '**', '*.xplane.pb'),
                    recursive=True)
  totals = collections.Counter()
  for path in paths:
    space = xplane_pb2.XSpace()
    with open(path, 'rb') as f:
      space.ParseFromString(f.read())
    for plane in space.planes:
      if not plane.name.startswith('/host:CPU'):
        continue
      names = {k: m.name for k, m in plane.event_metadata.items()}
      for line in plane.lines:
        if 'tf_Compute' not in line.name and 'tf_' not in line.name:
          continue
        for event in line.events:
          name = names.get(event.metadata_id, '')
          # TF op events are "<op name>:<op type>"; function calls and loop
          # frames contain other ops' time.
          if ':' not in name:
            continue
          op = name.rsplit(':', 1)[1]
          if op not in _CONTAINERS:
            totals[op] += event.duration_ps / 1e6
  return totals


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--shape', default='128,128,96')
  parser.add_argument('--fold_batch_norm', action='store_true')
  parser.add_argument('--aggregation', choices=['whole', 'slab'],
                      default='whole')
  parser.add_argument('--top', type=int, default=15)
  args = parser.parse_args()
  shape = tuple(int(s) for s in args.shape.split(','))
  cfg = config.build_config(None, {
      'input_image_size': [64, 64, 64], 'num_channels': 1, 'num_classes': 4,
      'num_base_filters': 8, 'depth': 4, 'predict_batch_size': 2,
      'distribution_strategy': 'cpu',
      'inference': {'overlap': 0.5, 'weighting': 'gaussian'}})
  model = models.build_model(cfg)
  if args.fold_batch_norm:
    model = fold_batch_norm.fold_batch_norm(model)
  probabilities = whole_volume.probabilities_fn(cfg, model)
  image = np.random.default_rng(1).normal(size=shape + (1,)).astype(
      np.float32)
  if args.aggregation == 'slab':
    segmenter = whole_volume.segmenter(cfg, probabilities)
    run = lambda: segmenter(image).labels
  else:
    volume = whole_volume.volume_fn(cfg, probabilities)
    run = lambda: whole_volume.segmentation(volume(image), 'softmax')
  run()
  logdir = tempfile.mkdtemp(prefix='profile_inference_')
  start = time.perf_counter()
  with _trace(logdir):
    run()
  seconds = time.perf_counter() - start
  totals = op_statistics(logdir)
  total = sum(totals.values()) or 1.0
  top = [{'op': op, 'ms': round(us / 1e3, 1),
          'share': round(us / total, 3)}
         for op, us in totals.most_common(args.top)]
  print(json.dumps({
      'bench': 'profile_sliding_window', 'shape': list(shape),
      'fold_batch_norm': args.fold_batch_norm,
      'aggregation': args.aggregation, 'seconds_traced': round(seconds, 2),
      'op_ms_total': round(total / 1e3, 1), 'top_ops': top,
      **startup.machine_info()}))


class _trace:
  """tf.profiler.experimental start/stop around a block."""

  def __init__(self, logdir: str):
    self.logdir = logdir

  def __enter__(self):
    tf.profiler.experimental.start(self.logdir)

  def __exit__(self, *exc):
    tf.profiler.experimental.stop()


if __name__ == '__main__':
  main()

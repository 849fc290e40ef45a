"""Peak memory and step time of one training step, with and without
per-unit recomputation (model.recompute_grad). Prints JSON.

  python benchmarks/models.py [--model=unet3d] [--size=64]
      [--base_filters=16] [--depth=4] [--batch=1] [--steps=3]

Each variant runs in its own process, because peak RSS (ru_maxrss) only
grows. Memory: the TF allocator's peak (`tf_peak_memory_mb`, from
tf.config.experimental.get_memory_info('CPU:0'), which works on CPU in TF
2.21) and the process peak-RSS growth over the model build
(`peak_rss_delta_mb`: activations, gradients, optimizer state and the
traced graph; the allocator's caching blurs it).
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

from unet3d import errors  # pylint: disable=g-import-not-at-top
from unet3d import startup

startup.prepare_environment()  # before TensorFlow is imported


def _peak_rss_mb() -> float:
  # Linux reports ru_maxrss in KiB.
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_variant(args, recompute: bool) -> dict:
  """One process: build, one traced step, `args.steps` timed steps."""
  tf = startup.import_tensorflow()
  import keras  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top

  from unet3d import models  # pylint: disable=g-import-not-at-top
  from unet3d.models import heads  # pylint: disable=g-import-not-at-top
  from unet3d.config import Config, ModelConfig  # pylint: disable=g-import-not-at-top

  cfg = Config(num_base_filters=args.base_filters, depth=args.depth,
               num_classes=3, input_image_size=[args.size] * 3,
               model=ModelConfig(name=args.model, recompute_grad=recompute))
  model = models.build_model(cfg)
  optimizer = keras.optimizers.Adam(1e-4)
  optimizer.build(model.trainable_variables)
  rng = np.random.default_rng(0)
  x = tf.constant(rng.normal(size=[args.batch] + [args.size] * 3 + [1]),
                  tf.float32)
  y = tf.one_hot(rng.integers(0, 3, [args.batch] + [args.size] * 3), 3)

  @tf.function
  def step():
    with tf.GradientTape() as tape:
      logits = heads.main_logits(model(x, training=True))
      loss = tf.reduce_mean(
          tf.nn.softmax_cross_entropy_with_logits(y, logits))
    grads = tape.gradient(loss, model.trainable_variables)
    optimizer.apply_gradients(zip(grads, model.trainable_variables))
    return loss

  memory_info = None
  try:
    tf.config.experimental.reset_memory_stats('CPU:0')
    memory_info = 'cpu'
  except (ValueError, RuntimeError, tf.errors.OpError):
    pass
  rss_before = _peak_rss_mb()
  start = time.perf_counter()
  step().numpy()
  first = time.perf_counter() - start
  times = []
  for _ in range(args.steps):
    start = time.perf_counter()
    step().numpy()
    times.append(time.perf_counter() - start)
  result = {
      'model': args.model, 'recompute_grad': recompute,
      'input': [args.batch] + [args.size] * 3 + [1],
      'base_filters': args.base_filters, 'depth': args.depth,
      'params': model.count_params(),
      'first_step_s (trace + step)': round(first, 3),
      'step_time_s_median': round(sorted(times)[len(times) // 2], 3),
      'step_time_s_all': [round(t, 3) for t in times],
      'peak_rss_mb': round(_peak_rss_mb(), 1),
      'peak_rss_delta_mb': round(_peak_rss_mb() - rss_before, 1),
  }
  if memory_info:
    peak = tf.config.experimental.get_memory_info('CPU:0')['peak']
    result['tf_peak_memory_mb'] = round(peak / 2**20, 1)
  return result


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--model', default='unet3d')
  parser.add_argument('--size', type=int, default=64)
  parser.add_argument('--base_filters', type=int, default=16)
  parser.add_argument('--depth', type=int, default=4)
  parser.add_argument('--batch', type=int, default=1)
  parser.add_argument('--steps', type=int, default=3)
  parser.add_argument('--variant', choices=['plain', 'recompute'],
                      help='internal: run one variant in this process')
  args = parser.parse_args()
  if args.variant:
    print(json.dumps(run_variant(args, args.variant == 'recompute')))
    return
  results = []
  for variant in ('plain', 'recompute'):
    cmd = [sys.executable, os.path.abspath(__file__), f'--variant={variant}']
    cmd += [f'--{k}={getattr(args, k)}'
            for k in ('model', 'size', 'base_filters', 'depth', 'batch',
                      'steps')]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True)
    results.append(json.loads(out.stdout.strip().splitlines()[-1]))
  plain, recompute = results
  summary = {
      'variants': results,
      'memory_saving_mb (peak rss delta)': round(
          plain['peak_rss_delta_mb'] - recompute['peak_rss_delta_mb'], 1),
      'memory_saving_mb (tf peak)': (
          round(plain['tf_peak_memory_mb'] - recompute['tf_peak_memory_mb'], 1)
          if 'tf_peak_memory_mb' in plain else None),
      'step_time_ratio (recompute / plain)': round(
          recompute['step_time_s_median'] / plain['step_time_s_median'], 3),
  }
  print(json.dumps(summary, indent=2))


if __name__ == '__main__':
  errors.one_line_errors(main)()

"""One MultiWorkerMirroredStrategy worker (CPU) for the multi-worker tests.

Run by `run_workers` below as several local processes, configured by
TF_CONFIG. Prints one `RESULT {json}` line.

  loss_scale             one loss-scaled SGD step through
                         unet3d.training.gradients with an inf gradient on
                         worker 1 only
  restored_step <dirs>...
                         for each argument, one after the other in the same
                         workers: builds the trainer's state with this
                         worker's model_dir (entry number task_index of the
                         argument's os.pathsep-separated dirs) and reports
                         whether the restored steps agreed; RESULT is the
                         list of these reports
"""

import json
import os
import pathlib
import socket
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _free_port():
  with socket.socket() as s:
    s.bind(('localhost', 0))
    return s.getsockname()[1]


def run_workers(args, num_workers=2, timeout=300):
  """Runs this module (python -m, from the checkout) as `num_workers` local
  workers; returns
  [(return code or None when killed, RESULT dict or None, output)]."""
  cluster = {'worker': [f'localhost:{_free_port()}'
                        for _ in range(num_workers)]}
  procs = []
  for index in range(num_workers):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2', TF_CONFIG=json.dumps(
        {'cluster': cluster, 'task': {'type': 'worker', 'index': index}}))
    procs.append(subprocess.Popen(
        [sys.executable, '-m', 'tests.multi_worker_job'] + list(args),
        cwd=REPO, env=env,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
  results = []
  for proc in procs:
    try:
      out, _ = proc.communicate(timeout=timeout)
      code = proc.returncode
    except subprocess.TimeoutExpired:
      proc.kill()
      out, _ = proc.communicate()
      code = None
    lines = [l for l in out.splitlines() if l.startswith('RESULT ')]
    result = json.loads(lines[-1][len('RESULT '):]) if lines else None
    results.append((code, result, out))
  return results


def _loss_scale(strategy):
  import keras  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from unet3d.training import gradients  # pylint: disable=g-import-not-at-top
  with strategy.scope():
    keras.utils.set_random_seed(1)
    model = keras.Sequential([keras.Input((5,)), keras.layers.Dense(1)])
    optimizer = keras.optimizers.LossScaleOptimizer(keras.optimizers.SGD(0.1))
    optimizer.build(model.trainable_variables)
  gradients.disable_keras_aggregation(optimizer)
  before = [v.numpy() for v in model.trainable_variables]
  rng = np.random.default_rng(0)
  x = rng.normal(size=(4, 5)).astype('float32')
  y = rng.normal(size=(4, 1)).astype('float32')
  dataset = strategy.experimental_distribute_dataset(
      tf.data.Dataset.from_tensor_slices((x, y)).batch(4))

  def step_fn(a, b):
    with tf.GradientTape() as tape:
      loss = tf.nn.compute_average_loss(
          tf.reduce_sum((model(a) - b) ** 2, axis=-1), global_batch_size=4)
      scaled = optimizer.scale_loss(loss)
    grads = tape.gradient(scaled, model.trainable_variables)
    worker = tf.distribute.get_replica_context().replica_id_in_sync_group
    grads = [grads[0] + tf.where(worker == 1, np.inf, 0.0)] + grads[1:]
    gradients.apply_gradients(optimizer, grads, model.trainable_variables)

  tf.function(lambda inputs: strategy.run(step_fn, args=inputs))(
      next(iter(dataset)))
  after = [v.numpy() for v in model.trainable_variables]
  return {'iterations': int(optimizer.iterations.numpy()),
          'scale': float(optimizer.dynamic_scale.numpy()),
          'unchanged': all((a == b).all() for a, b in zip(before, after))}


def _restored_step(strategy, model_dirs):
  """One restore: this worker's entry of model_dirs."""
  from tests import runs  # pylint: disable=g-import-not-at-top
  from unet3d import distribute  # pylint: disable=g-import-not-at-top
  from unet3d.config import ConfigError  # pylint: disable=g-import-not-at-top
  from unet3d.training import trainer  # pylint: disable=g-import-not-at-top
  model_dir = model_dirs[distribute.task_id()]
  cfg = runs.run_config(pathlib.Path(model_dir), model_dir,
                        distribution_strategy='multi_worker')
  try:
    state = trainer.build_train_state(cfg, strategy)
  except ConfigError as e:
    return {'error': str(e)}
  return {'step': state.step}


def main(argv):
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  strategy = tf.distribute.MultiWorkerMirroredStrategy()
  if argv[0] == 'loss_scale':
    result = _loss_scale(strategy)
  elif argv[0] == 'restored_step':
    result = [_restored_step(strategy, dirs.split(os.pathsep))
              for dirs in argv[1:]]
  else:
    raise SystemExit(f'unknown job {argv[0]!r}')
  print('RESULT ' + json.dumps(result), flush=True)


if __name__ == '__main__':
  main(sys.argv[1:])

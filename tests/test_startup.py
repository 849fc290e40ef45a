"""Tests for unet3d/startup.py: quiet start, oneDNN on by default, and
results with oneDNN that agree with it off and repeat bit for bit."""

import os
import subprocess
import sys

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Three deterministic training steps of a tiny U-Net; saves its weights.
_TRAIN = '''
import sys
import numpy as np
from unet3d import startup
tf = startup.import_tensorflow()
from unet3d import config, distribute, losses, models, optimizers
print(startup.describe_onednn())
cfg = config.build_config(params_override=(
    'input_image_size=[16,16,16],num_classes=3,num_base_filters=4,depth=2,'
    'seed=1,deterministic=true,loss=dice_ce,use_index_label_in_train=true'))
distribute.set_determinism(cfg)
model = models.build_model(cfg)
optimizer = optimizers.build_optimizer(cfg)
loss_fn = losses.build_loss_fn(cfg)
rng = np.random.default_rng(0)
x = tf.constant(rng.normal(size=[2, 16, 16, 16, 1]), tf.float32)
y = tf.constant(rng.integers(0, 3, size=[2, 16, 16, 16]), tf.int32)
@tf.function
def step():
  with tf.GradientTape() as tape:
    loss = tf.reduce_mean(loss_fn(y, model(x, training=True)))
  grads = tape.gradient(loss, model.trainable_variables)
  optimizer.apply_gradients(zip(grads, model.trainable_variables))
for _ in range(3):
  step()
np.savez({out!r}, *[w.numpy() for w in model.weights])
'''


def _train(tmp_path, name, onednn):
  out = str(tmp_path / f'{name}.npz')
  env = dict(os.environ)
  env.pop('TF_CPP_MIN_LOG_LEVEL', None)
  if onednn is None:
    env.pop('TF_ENABLE_ONEDNN_OPTS', None)
  else:
    env['TF_ENABLE_ONEDNN_OPTS'] = onednn
  # cwd: `python -c` imports unet3d from the checkout.
  proc = subprocess.run([sys.executable, '-c', _TRAIN.format(out=out)],
                        capture_output=True, text=True, env=env, timeout=300,
                        cwd=REPO)
  assert proc.returncode == 0, proc.stderr[-2000:]
  weights = np.load(out)
  return proc, [weights[k] for k in sorted(weights, key=lambda k: int(
      k.split('_')[1]))]


def test_onednn_on_by_default_quiet_agrees_with_off_and_repeats(tmp_path):
  default, on = _train(tmp_path, 'default', None)
  assert default.stdout.splitlines()[0] == (
      'oneDNN CPU kernels on (TF_ENABLE_ONEDNN_OPTS=1 set by unet3d; export '
      'TF_ENABLE_ONEDNN_OPTS=0 to turn off)')
  # No CUDA-driver or pre-init noise on a machine without a GPU.
  assert not [l for l in default.stderr.splitlines() if l.strip()], (
      default.stderr[-2000:])
  again, on_again = _train(tmp_path, 'again', None)
  for a, b in zip(on, on_again):  # deterministic: bit for bit
    np.testing.assert_array_equal(a, b)
  off_proc, off = _train(tmp_path, 'off', '0')
  assert off_proc.stdout.splitlines()[0] == (
      'oneDNN CPU kernels off (TF_ENABLE_ONEDNN_OPTS=0 from the environment)')
  for a, b in zip(on, off):
    np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-4)
  del again


def test_tensorflow_info_records_are_hidden_and_ours_are_not(caplog,
                                                             tmp_path):
  """A checkpoint save logs an absl INFO record from TensorFlow's own files
  ("Sharding callback duration"); after the filter it is dropped, while an
  INFO record of unet3d and a TensorFlow warning still pass."""
  import logging  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from absl import logging as absl_logging  # pylint: disable=g-import-not-at-top
  from unet3d import startup  # pylint: disable=g-import-not-at-top

  def saved_records():
    caplog.clear()
    with caplog.at_level(logging.INFO, logger='absl'):
      tf.train.Checkpoint(v=tf.Variable(1.0)).save(str(tmp_path / 'c'))
      absl_logging.info('unet3d line')
    return [r for r in caplog.records if r.name == 'absl']

  before = saved_records()
  assert any(r.pathname.startswith(os.path.dirname(tf.__file__))
             for r in before)  # the record exists, or this proves nothing
  startup.hide_tensorflow_info_logs(tf)
  startup.hide_tensorflow_info_logs(tf)  # idempotent
  after = saved_records()
  assert [r.getMessage() for r in after] == ['unet3d line']
  assert sum(isinstance(f, startup._NoInfoFrom)  # pylint: disable=protected-access
             for f in logging.getLogger('absl').filters) == 1
  record = logging.LogRecord('absl', logging.WARNING,
                             os.path.join(os.path.dirname(tf.__file__), 'x.py'),
                             1, 'a warning', None, None)
  assert all(f.filter(record) for f in logging.getLogger('absl').filters)

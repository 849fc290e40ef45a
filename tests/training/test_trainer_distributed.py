"""The trainer's step under MirroredStrategy on two logical CPUs, compared
with one device on the same global batch: gradient clipping, synchronised
batch norm and XLA (unet3d/training/trainer.py with training/gradients.py
and distribute.py)."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from tests import runs
from unet3d import distribute
from unet3d.preprocess import synthetic
from unet3d.training import trainer

GLOBAL_BATCH = 4
STEPS = 2


@pytest.fixture(scope='module')
def batch():
  """One fixed global batch: 4 cases of 16^3, index labels."""
  rng = np.random.default_rng(0)
  images, labels = [], []
  for _ in range(GLOBAL_BATCH):
    image, label = synthetic.make_demo_volume(rng, (runs.SIZE,) * 3)
    images.append(((image - image.mean()) / image.std())[..., None])
    labels.append(label)
  return (np.stack(images).astype(np.float32),
          np.stack(labels).astype(np.int32))


def _train(strategy, batch, tmp_path, **override):
  """STEPS steps of the trainer's loop on `batch`; returns (per-step losses,
  weights, the loop's jit choice)."""
  cfg = runs.run_config(tmp_path, '', train_batch_size=GLOBAL_BATCH,
                        **override)
  keras.utils.set_random_seed(0)
  state = trainer.build_train_state(cfg, strategy)
  dataset = strategy.experimental_distribute_dataset(
      tf.data.Dataset.from_tensors(batch).repeat())
  run = trainer.make_train_loop(cfg, state)
  losses = run(iter(dataset), tf.constant(STEPS)).numpy()
  return losses, [w.numpy() for w in state.model.weights], state.model


def _mirrored():
  return distribute.mirrored_strategy(['/cpu:0', '/cpu:1'])


def _one_device():
  return tf.distribute.OneDeviceStrategy('/cpu:0')


def _max_diff(a, b):
  return max(float(np.abs(x - y).max()) for x, y in zip(a, b))


# gradient_clip_norm 0.01 is far below these gradients' global norm, so
# every step is clipped.
@pytest.mark.parametrize('override, matches', [
    # Clipping alone (no batch norm): the global gradient is clipped.
    ({'model': {'normalization': 'instance'},
      'train': {'gradient_clip_norm': 0.01}}, True),
    # Batch norm, 2 cases per replica: synchronised by default.
    ({'train': {'gradient_clip_norm': 0.01}}, True),
    ({'model': {'sync_batch_norm': True, 'recompute_grad': True},
      'train': {'gradient_clip_norm': 0.01}}, True),
    # Per-replica batch statistics differ from the global batch's.
    ({'model': {'sync_batch_norm': False}}, False),
])
def test_two_replicas_match_one_device_on_the_global_batch(batch, tmp_path,
                                                           override, matches):
  one_losses, one_weights, _ = _train(_one_device(), batch, tmp_path,
                                      **override)
  losses, weights, _ = _train(_mirrored(), batch, tmp_path, **override)
  if matches:
    np.testing.assert_allclose(losses, one_losses, rtol=1e-5)
    # Kernels, biases, gamma/beta and the moving statistics.
    assert _max_diff(weights, one_weights) < 2e-5
  else:
    assert _max_diff(weights, one_weights) > 1e-3


def test_jit_compile_on_two_logical_cpus_matches_no_jit(batch, tmp_path):
  override = {'model': {'sync_batch_norm': False},
              'train': {'gradient_clip_norm': 0.01}}
  plain_losses, plain, _ = _train(_mirrored(), batch, tmp_path, **override)
  override['train']['jit_compile'] = True
  cfg = runs.run_config(tmp_path, '', **override)
  assert distribute.use_jit_compile(cfg)
  losses, jitted, _ = _train(_mirrored(), batch, tmp_path, **override)
  np.testing.assert_allclose(losses, plain_losses, rtol=1e-4)
  assert _max_diff(jitted, plain) < 1e-4


def test_jit_compile_with_sync_batch_norm_runs_without_xla(batch, tmp_path):
  """XLA around the forward pass cannot hold batch norm's all-reduce on CPU
  replicas; the trainer drops jit and still matches one device."""
  override = {'model': {'sync_batch_norm': True},
              'train': {'gradient_clip_norm': 0.01}}
  one_losses, one_weights, _ = _train(_one_device(), batch, tmp_path,
                                      **override)
  override['train']['jit_compile'] = True
  losses, weights, model = _train(_mirrored(), batch, tmp_path, **override)
  cfg = runs.run_config(tmp_path, '', **override)
  assert not distribute.use_jit_compile(cfg, _mirrored(), model)
  np.testing.assert_allclose(losses, one_losses, rtol=1e-5)
  assert _max_diff(weights, one_weights) < 2e-5

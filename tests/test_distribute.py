"""Tests for unet3d/distribute.py and multi-worker training through unet_main."""

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from unet3d import config
from unet3d import distribute
from unet3d.config import ConfigError
from unet3d.input import schema
from unet3d.preprocess import synthetic

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _cfg(**values):
  return config.merge(config.Config(), values)


def test_cpu_strategy_is_one_device():
  strategy = distribute.build_strategy(_cfg(distribution_strategy='cpu'))
  assert isinstance(strategy, tf.distribute.OneDeviceStrategy)
  assert strategy.num_replicas_in_sync == 1


def test_mirrored_over_logical_cpus_has_two_replicas():
  strategy = distribute.build_strategy(_cfg(distribution_strategy='mirrored'))
  # No GPU here: mirrored falls back to every logical CPU (2, see conftest).
  assert strategy.num_replicas_in_sync == 2


def test_empty_strategy_resolves_by_hardware():
  assert distribute.strategy_name(_cfg()) == 'cpu'
  assert distribute.strategy_name(_cfg(tpu='grpc://10.0.0.2:8470')) == 'tpu'


def test_spatial_partitioning_requires_tpu():
  cfg = _cfg(distribution_strategy='mirrored',
             input_partition_dims=[1, 2, 1, 1, 1])
  with pytest.raises(ConfigError, match='input_partition_dims: .*needs '
                     "distribution_strategy 'tpu'"):
    distribute.build_strategy(cfg)


def test_too_many_gpus_is_a_config_error():
  cfg = _cfg(distribution_strategy='mirrored', num_gpus=4)
  with pytest.raises(ConfigError, match='num_gpus: asked for 4 GPUs'):
    distribute.build_strategy(cfg)


def test_jit_compile_defaults_off_on_cpu_and_follows_the_config():
  assert distribute.use_jit_compile(_cfg(distribution_strategy='cpu')) is False
  assert distribute.use_jit_compile(
      _cfg(distribution_strategy='cpu', train={'jit_compile': True})) is True
  assert distribute.use_jit_compile(_cfg(distribution_strategy='tpu')) is True


def _free_port():
  with socket.socket() as s:
    s.bind(('localhost', 0))
    return s.getsockname()[1]


def test_multi_worker_training_with_two_local_processes(tmp_path):
  rng = np.random.default_rng(0)
  for shard in range(2):
    volumes = []
    for i in range(2):
      image, label = synthetic.make_demo_volume(rng, (16, 16, 16))
      volumes.append(schema.Volume(
          image=((image - 100) / 50)[..., None].astype(np.float32),
          label=label, spacing=np.ones(3), affine=np.eye(4),
          case_id=f'{shard}_{i}'))
    schema.write_records(str(tmp_path / f'train-{shard}.tfrecord'),
                         (schema.encode_volume(v) for v in volumes))
  model_dir = tmp_path / 'model'
  override = ('input_image_size=[16,16,16],num_classes=4,num_base_filters=2,'
              'depth=2,train_batch_size=2,train_steps=2,loss=dice_ce,'
              'use_index_label_in_train=true,train.steps_per_loop=1,'
              'train.checkpoint_every_n_steps=1')
  ports = [_free_port(), _free_port()]
  cluster = {'worker': [f'localhost:{p}' for p in ports]}
  procs = []
  for index in range(2):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2', TF_CONFIG=json.dumps(
        {'cluster': cluster, 'task': {'type': 'worker', 'index': index}}))
    procs.append(subprocess.Popen(
        [sys.executable, os.path.join(REPO, 'unet_main.py'), '--mode=train',
         '--distribution_strategy=multi_worker', f'--model_dir={model_dir}',
         f"--training_file_pattern={tmp_path / 'train-*'}",
         f'--params_override={override}'],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
  outputs = []
  for proc in procs:
    try:
      out, _ = proc.communicate(timeout=240)
    except subprocess.TimeoutExpired:
      for p in procs:
        p.kill()
      raise
    outputs.append(out)
  for proc, out in zip(procs, outputs):
    assert proc.returncode == 0, out[-3000:]
  # The chief (worker 0) owns model_dir; the other worker's scratch copy is
  # removed after training.
  latest = tf.train.latest_checkpoint(str(model_dir))
  assert latest is not None and latest.endswith('-2')
  assert os.path.isfile(model_dir / 'params.yaml')
  assert not os.path.exists(model_dir / 'worker_tmp')

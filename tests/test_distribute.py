"""Tests for unet3d/distribute.py, multi-worker training through unet_main,
and a TPU run exported and predicted on a CPU."""

import glob
import json
import math
import os
import socket
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from tests import tpu_slices
from unet3d import config
from unet3d import distribute
from unet3d import models
from unet3d import tpu_topology
from unet3d.config import ConfigError
from unet3d.errors import StartupError
from unet3d.models import blocks
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


def test_jit_compile_is_off_unless_asked_and_never_inside_tpu_replicas():
  for name in ('cpu', 'mirrored', 'multi_worker', 'tpu'):
    assert distribute.use_jit_compile(_cfg(distribution_strategy=name)) is False
  asked = {'jit_compile': True}
  assert distribute.use_jit_compile(
      _cfg(distribution_strategy='cpu', train=asked)) is True
  assert distribute.use_jit_compile(
      _cfg(distribution_strategy='mirrored', train=asked)) is True
  # XLA compiles the whole TPU step already.
  assert distribute.use_jit_compile(
      _cfg(distribution_strategy='tpu', train=asked)) is False


def test_jit_compile_is_dropped_for_sync_batch_norm_on_several_replicas():
  cfg = _cfg(distribution_strategy='mirrored', train={'jit_compile': True},
             num_base_filters=2, depth=2, input_image_size=[16, 16, 16],
             model={'sync_batch_norm': True})
  model = models.build_model(cfg)
  mirrored = distribute.mirrored_strategy(['/cpu:0', '/cpu:1'])
  assert distribute.use_jit_compile(cfg, mirrored, model) is False
  one = tf.distribute.OneDeviceStrategy('/cpu:0')
  assert distribute.use_jit_compile(cfg, one, model) is True
  plain = models.build_model(config.merge(cfg, {'model': {
      'sync_batch_norm': False}}))
  assert distribute.use_jit_compile(cfg, mirrored, plain) is True


@pytest.mark.parametrize('strategy_kind, batch, setting, expected', [
    ('mirrored', 2, None, True),     # 1 case per replica
    ('mirrored', 6, None, True),     # 3 cases per replica
    ('mirrored', 8, None, False),    # 4 cases per replica
    ('mirrored', 8, True, True),
    ('mirrored', 2, False, False),
    ('one_device', 2, None, False),
])
def test_sync_batch_norm_default_follows_the_per_replica_batch(
    strategy_kind, batch, setting, expected):
  cfg = _cfg(train_batch_size=batch, model={'sync_batch_norm': setting})
  strategy = (distribute.mirrored_strategy(['/cpu:0', '/cpu:1'])
              if strategy_kind == 'mirrored'
              else tf.distribute.OneDeviceStrategy('/cpu:0'))
  resolved = distribute.resolve_sync_batch_norm(cfg, strategy)
  assert resolved.model.sync_batch_norm is expected
  assert cfg.model.sync_batch_norm is setting  # the input is not changed
  spec = blocks.block_spec(resolved)
  layer = blocks.norm(spec, 4, 'bn')
  assert layer.synchronized is expected


def test_sync_batch_norm_leaves_other_normalisations_alone():
  cfg = _cfg(train_batch_size=2, model={'normalization': 'instance'})
  mirrored = distribute.mirrored_strategy(['/cpu:0', '/cpu:1'])
  assert distribute.resolve_sync_batch_norm(cfg, mirrored) is cfg


def test_batch_sizes_are_checked_when_the_strategy_is_built():
  base = {'distribution_strategy': 'mirrored'}
  with pytest.raises(ConfigError, match='train_batch_size: 3 is not divisible '
                     'by the 2 replicas in sync; use a multiple of 2'):
    distribute.build_strategy(_cfg(train_batch_size=3, **base))
  # Evaluation pads its steps (tests/evaluation/test_eval_padding.py).
  distribute.build_strategy(_cfg(eval_batch_size=1, eval_file_pattern='x',
                                 **base))
  # Evaluation alone does not need the training batch to split.
  distribute.build_strategy(_cfg(train_batch_size=3, eval_file_pattern='x',
                                 **base), training=False)


def _slice_of(recipe: str) -> str:
  return os.path.basename(recipe).split('_')[0]


@pytest.mark.parametrize('recipe', sorted(glob.glob(
    os.path.join(REPO, 'configs', 'cloud', '*.yaml'))))
def test_cloud_recipes_train_and_evaluate_on_their_slices(recipe):
  """Replicas from the recipe's slice topology (cores / cores per replica,
  as TPUStrategy's device assignment has them); the training batch must
  split, the published eval_batch_size 1 is padded."""
  cfg = config.build_config(recipe, params_override='eval_file_pattern=x')
  cores = math.prod(cfg.input_partition_dims or [1])
  assignment = tpu_topology.device_assignment(
      tpu_slices.topology(_slice_of(recipe)), cores)
  distribute.check_batch_sizes(cfg, assignment.num_replicas)
  assert cfg.train_batch_size % assignment.num_replicas == 0


def test_gpu_ids_must_be_visible():
  cfg = _cfg(distribution_strategy='mirrored', num_gpus=[0, 2])
  with pytest.raises(ConfigError, match=r'num_gpus: GPU ids \[0, 2\] are not '
                     'visible; this machine shows no GPUs'):
    distribute.build_strategy(cfg)


def test_label_partition_dims_drop_the_channel_entry_of_index_labels():
  dims = [1, 4, 2, 1, 1]
  assert distribute.label_partition_dims(dims, 4) == [1, 4, 2, 1]
  assert distribute.label_partition_dims(dims, 5) == dims
  # Off TPU the inputs pass through unchanged.
  images, labels = tf.zeros([1, 8, 8, 8, 1]), tf.zeros([1, 8, 8, 8])
  out = distribute.partition_inputs(tf.distribute.get_strategy(), dims, images,
                                    labels)
  assert out[0] is images and out[1] is labels


@pytest.mark.parametrize('tpu, named', [
    (None, 'tpu (none named: TPU_NAME or this TPU VM): finding the TPU '
           'failed: '),
    ('no-such-tpu-7', 'tpu no-such-tpu-7: finding the TPU failed: '),
])
def test_a_tpu_that_does_not_start_is_a_one_line_startup_error(tpu, named):
  cfg = _cfg(distribution_strategy='tpu', tpu=tpu)
  with pytest.raises(StartupError) as e:
    distribute.build_strategy(cfg)
  assert str(e.value).startswith(named) and '\n' not in str(e.value)


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


def test_workers_that_restored_different_steps_stop(tmp_path):
  """Worker 0 reads a model_dir with a step-3 checkpoint, worker 1 an empty
  one (a model_dir on local disks): both stop with one line naming it,
  instead of training from different weights."""
  from tests import multi_worker_job  # pylint: disable=g-import-not-at-top
  from tests import runs  # pylint: disable=g-import-not-at-top
  from unet3d.training import trainer  # pylint: disable=g-import-not-at-top
  chief_dir, other_dir = tmp_path / 'chief', tmp_path / 'other'
  other_dir.mkdir()
  cfg = runs.run_config(chief_dir, chief_dir, model={'sync_batch_norm': True})
  state = trainer.build_train_state(cfg, tf.distribute.OneDeviceStrategy(
      '/cpu:0'))
  state.optimizer.iterations.assign(3)
  state.manager.save(checkpoint_number=3)
  # Both experiments run one after the other in the same two workers (one
  # cluster start-up); the second reads the same folder on both.
  different = os.pathsep.join([str(chief_dir), str(other_dir)])
  same = os.pathsep.join([str(chief_dir), str(chief_dir)])
  results = multi_worker_job.run_workers(['restored_step', different, same])
  for code, result, out in results:
    assert code == 0, out[-3000:]
    assert result[0] == {'error': 'model_dir: the workers restored different '
                                  'checkpoint steps [0, 3]; every worker '
                                  'must read the same model_dir (shared '
                                  'storage such as gs://)'}, out[-3000:]
    # Both reading the same folder agree.
    assert result[1] == {'step': 3}, out[-3000:]


def test_a_tpu_run_exports_and_predicts_on_a_cpu(tmp_path):
  """params.yaml of a partitioned TPU run (a TPU that does not exist here):
  export and predict use the default strategy, so they never start it."""
  from tests import runs  # pylint: disable=g-import-not-at-top
  from tests import test_unet_main  # pylint: disable=g-import-not-at-top
  from unet3d import run_dir  # pylint: disable=g-import-not-at-top
  from unet3d.preprocess import io  # pylint: disable=g-import-not-at-top
  from unet3d.training import trainer  # pylint: disable=g-import-not-at-top
  model_dir = tmp_path / 'run'
  tpu_run = runs.run_config(tmp_path, model_dir, distribution_strategy='tpu',
                            tpu='no-such-tpu-7',
                            input_partition_dims=[1, 2, 1, 1, 1])
  state = trainer.build_train_state(
      config.merge(tpu_run, {'distribution_strategy': 'cpu',
                             'input_partition_dims': None}),
      tf.distribute.OneDeviceStrategy('/cpu:0'))
  state.optimizer.iterations.assign(1)
  state.manager.save(checkpoint_number=1)
  run_dir.save_params(tpu_run)
  scan = tmp_path / 'scan.nii.gz'
  io.save_nifti(str(scan), np.random.default_rng(0).normal(
      size=(20, 16, 16)).astype(np.float32), np.eye(4))
  # The command's main with these flags, in this process (a TPU start would
  # fail it as it fails the command: a one-line error and exit 1).
  for argv in (['--mode=export', f'--model_dir={model_dir}',
                '--params_override=predict.preprocessing=none'],
               ['--mode=predict', f'--model_dir={model_dir}',
                f'--params_override=predict.input_pattern={scan},'
                f'predict.output_dir={tmp_path / "seg"},'
                'predict.preprocessing=none']):
    flags = test_unet_main._flags(argv)  # pylint: disable=protected-access
    try:
      test_unet_main.unet_main.main([])
    finally:
      flags.unparse_flags()
    if argv[0] == '--mode=export':
      assert os.path.isfile(model_dir / 'saved_model' / '1' /
                            'saved_model.pb')
  written = io.load_nifti(str(tmp_path / 'seg' / 'scan_seg.nii.gz'))[0]
  assert written.shape == (20, 16, 16)

"""Tests for the `unet3d` command (unet3d/cli/main.py, run as unet_main.py):
config resolution and one-line errors."""

import os
import subprocess
import sys

import pytest

from unet3d import config
from unet3d import run_dir

from unet3d.cli import main as unet_main

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(autouse=True)
def _reset_flags():
  yield
  unet_main.FLAGS.unparse_flags()


def _flags(argv):
  unet_main.FLAGS.unparse_flags()
  unet_main.FLAGS(['unet_main'] + argv)
  return unet_main.FLAGS


def test_eval_starts_from_the_saved_params(tmp_path):
  saved = config.build_config(params_override=(
      'num_base_filters=4,depth=2,num_classes=5,input_image_size=[16,16,16],'
      f'model_dir={tmp_path},eval_file_pattern=/data/val-*'))
  run_dir.save_params(saved)
  cfg = unet_main.resolve_config(_flags(['--mode=eval',
                                         f'--model_dir={tmp_path}']))
  assert cfg == saved
  # Flags and overrides still win over the saved file.
  cfg = unet_main.resolve_config(_flags([
      '--mode=eval', f'--model_dir={tmp_path}', '--eval_file_pattern=/x/*',
      '--params_override=eval_batch_size=3']))
  assert cfg.eval_file_pattern == '/x/*' and cfg.eval_batch_size == 3
  assert cfg.num_classes == 5
  # Training does not read params.yaml: it starts from the given config,
  # and refuses a model_dir whose params.yaml describes another model.
  with pytest.raises(config.ConfigError, match=(
      r'params.yaml describes a different model than the config of this run '
      r'\(num_classes: 5 -> 3; num_base_filters: 4 -> 32; depth: 2 -> 4\)')):
    unet_main.resolve_config(_flags(['--mode=train', f'--model_dir={tmp_path}']))
  cfg = unet_main.resolve_config(_flags(['--mode=train', '--overwrite',
                                         f'--model_dir={tmp_path}']))
  assert cfg.num_classes == config.Config().num_classes


def test_eval_refuses_an_override_of_the_saved_architecture(tmp_path):
  saved = config.build_config(params_override=(
      'num_base_filters=4,depth=3,input_image_size=[16,16,16],'
      f'model_dir={tmp_path}'))
  run_dir.save_params(saved)
  for mode in ('eval', 'predict', 'export'):
    with pytest.raises(config.ConfigError, match=r'\(depth: 3 -> 2\)'):
      unet_main.resolve_config(_flags([f'--mode={mode}',
                                       f'--model_dir={tmp_path}',
                                       '--params_override=depth=2']))
  cfg = unet_main.resolve_config(_flags([
      '--mode=eval', f'--model_dir={tmp_path}', '--overwrite',
      '--params_override=depth=2']))
  assert cfg.depth == 2


def test_flags_override_config_file_and_params_override(tmp_path):
  path = tmp_path / 'c.yaml'
  path.write_text('train_steps: 10\ntrain:\n  steps_per_loop: 5\n')
  cfg = unet_main.resolve_config(_flags([
      f'--config_file={path}', '--params_override=train_steps=20',
      '--steps_per_loop=7', '--distribution_strategy=mirrored']))
  assert cfg.train_steps == 20
  assert cfg.train.steps_per_loop == 7
  assert cfg.distribution_strategy == 'mirrored'


def test_input_output_and_an_ensemble_of_model_dirs(tmp_path):
  saved = config.build_config(params_override=(
      f'num_classes=5,model_dir={tmp_path / "a"}'))
  run_dir.save_params(saved)
  cfg = unet_main.resolve_config(_flags([
      '--mode=predict', f'--model_dir={tmp_path / "a"},{tmp_path / "b"}',
      '--input=scans/', '--output_dir=/tmp/seg']))
  # The first folder's params.yaml is the run's config and gets the reports.
  assert cfg.num_classes == 5
  assert cfg.model_dir == str(tmp_path / 'a')
  assert cfg.inference.ensemble == [str(tmp_path / 'a'), str(tmp_path / 'b')]
  assert (cfg.predict.input_pattern, cfg.predict.output_dir) == (
      'scans/', '/tmp/seg')
  # One folder is no ensemble.
  cfg = unet_main.resolve_config(_flags(['--mode=eval',
                                         f'--model_dir={tmp_path / "a"}']))
  assert cfg.inference.ensemble == [] and cfg.predict.input_pattern is None


_LICENSE = os.path.join(REPO, 'LICENSE')


@pytest.mark.parametrize('argv, message', [
    (['--params_override=train_batch_sise=2'],
     "unknown config key 'train_batch_sise'; did you mean 'train_batch_size'?"),
    (['--config_file=/no/such.yaml'], 'config file /no/such.yaml: not found'),
    (['--mode=train', '--model_dir=/tmp/x'],
     'training_file_pattern: required for training'),
    (['--mode=train', '--model_dir=/tmp/x', '--training_file_pattern=/x/*'],
     "training_file_pattern: file pattern '/x/*': no files match"),
    # Any existing file passes the input check, which comes first.
    (['--mode=train', '--model_dir=/tmp/x',
      f'--training_file_pattern={_LICENSE}',
      '--distribution_strategy=mirrored', '--num_gpus=0,2'],
     'num_gpus: GPU ids [0, 2] are not visible'),
])
def test_bad_input_is_one_error_line_and_exit_1(argv, message, capsys):
  # main itself, in this process: the same code turns each error into the
  # line and the exit code; the subprocess test below covers the command.
  _flags(argv)
  with pytest.raises(SystemExit) as e:
    unet_main.main([])
  assert e.value.code == 1
  stderr = capsys.readouterr().err
  errors = [l for l in stderr.splitlines() if l.startswith('error: ')]
  assert len(errors) == 1 and message in errors[0], stderr[-2000:]


def test_bad_input_exits_nonzero_with_one_line():
  # The command as users run it, for the exit code and stderr (the TPU
  # lookup also stays out of the test process).
  proc = subprocess.run(
      [sys.executable, os.path.join(REPO, 'unet_main.py'), '--mode=train',
       '--model_dir=/tmp/x', f'--training_file_pattern={_LICENSE}',
       '--tpu=no-such-tpu-7'],
      capture_output=True, text=True, timeout=120,
      env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL='3'))
  assert proc.returncode == 1
  errors = [l for l in proc.stderr.splitlines() if l.startswith('error: ')]
  assert (len(errors) == 1 and
          'tpu no-such-tpu-7: finding the TPU failed: ' in errors[0]), (
              proc.stderr[-2000:])


def test_corrupt_tfrecord_names_the_shard(tmp_path):
  good = tmp_path / 'train-0.tfrecord'
  from unet3d.input import schema  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  noise = np.random.default_rng(0).normal(size=[16, 16, 16, 1])
  schema.write_records(str(good), [schema.encode_volume(schema.Volume(
      image=noise.astype(np.float32),
      label=np.zeros([16, 16, 16], np.uint8), spacing=np.ones(3),
      affine=np.eye(4), case_id='ok'))], compressed=True)
  bad = tmp_path / 'train-1.tfrecord'
  bad.write_bytes(good.read_bytes()[:4000])  # a truncated shard
  proc = subprocess.run(
      [sys.executable, os.path.join(REPO, 'unet_main.py'), '--mode=train',
       f'--model_dir={tmp_path / "model"}',
       f'--training_file_pattern={tmp_path / "train-*"}',
       '--params_override=num_base_filters=2,depth=2,train_steps=2,'
       'input_image_size=[16,16,16],compressed_input=true,'
       'train_batch_size=1,data.shuffle_buffer=1,distribution_strategy=cpu'],
      capture_output=True, text=True, timeout=300,
      env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL='3'))
  assert proc.returncode == 1
  errors = [l for l in proc.stderr.splitlines() if l.startswith('error: ')]
  assert len(errors) == 1, proc.stderr[-2000:]
  assert errors[0].startswith(f'error: {bad}: cannot read this TFRecord '
                              'shard (truncated record')


def test_model_garden_flags_set_their_keys(tmp_path):
  cfg = unet_main.resolve_config(_flags([
      '--mode=train', f'--model_dir={tmp_path}', '--lr_init_value=0.002',
      '--lr_decay_rate=0.8', '--checkpoint_interval=7',
      '--iterations_per_loop=5', '--epochs=3',
      '--params_override=train_item_count=10,train_batch_size=4']))
  assert cfg.init_learning_rate == 0.002 and cfg.lr_decay_rate == 0.8
  assert cfg.train.checkpoint_every_n_steps == 7
  assert cfg.train.steps_per_loop == 5
  assert cfg.train_steps == 3 * (10 // 4)  # epochs of train_item_count
  with pytest.raises(config.ConfigError, match='--epochs: needs'):
    unet_main.resolve_config(_flags(['--mode=train', '--epochs=2']))


@pytest.mark.parametrize('flag, ours', [
    ('--use_tpu', '--distribution_strategy=tpu (and --tpu=NAME)'),
    ('--num_cores=8', '--tpu=NAME'),
    ('--min_eval_interval=180', 'train.eval_every_n_steps'),
    ('--eval_timeout=60', 'once, without waiting'),
])
def test_model_garden_flags_without_a_meaning_here_name_ours(flag, ours):
  name = flag.split('=')[0]
  with pytest.raises(config.ConfigError,
                     match=f'^{name}: not a flag here; .*{ours[:12]}'):
    unet_main.resolve_config(_flags(['--mode=train', flag]))


def test_eval_checkpoint_dir_is_its_latest_checkpoint(tmp_path):
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  prefix = tf.train.Checkpoint(v=tf.Variable(1.0)).save(str(tmp_path / 'ckpt'))
  assert unet_main.checkpoint_flag(_flags(
      ['--mode=eval', f'--eval_checkpoint_dir={tmp_path}'])) == prefix
  assert unet_main.checkpoint_flag(_flags(['--mode=eval'])) == 'latest'


def test_channels_first_config_fails_with_one_line(tmp_path):
  path = tmp_path / 'mg.yaml'
  path.write_text('data_format: channels_first\nnum_classes: 3\n')
  proc = subprocess.run(
      [sys.executable, os.path.join(REPO, 'unet_main.py'), '--mode=summary',
       f'--config_file={path}'], capture_output=True, text=True, timeout=120,
      env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL='3'))
  assert proc.returncode == 1
  errors = [l for l in proc.stderr.splitlines() if l.startswith('error: ')]
  assert errors == [
      'error: data_format: channels_first is not supported (TF\'s CPU conv '
      'kernels are channels_last); remove it or set channels_last — records '
      'and models are channels_last, and XLA/TPU picks its own layout'
  ], proc.stderr[-2000:]

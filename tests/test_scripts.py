"""The shell recipes in scripts/: usage when a variable is missing, and the
`unet3d` commands they run (DRY_RUN=1 prints without running); the
benchmarks/ scripts' one-line errors."""

import json
import os
import re
import shlex
import subprocess

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPTS = ('train_tpu.sh', 'train_gpu.sh', 'train_multi_host.sh',
           'cpu_demo.sh', 'kfold_ensemble.sh')
with open(os.path.join(REPO, 'unet3d', 'cli', 'main.py')) as _f:
  MAIN_FLAGS = set(re.findall(r"flags\.DEFINE_\w+\(\s*'(\w+)'", _f.read()))


def _run(script, **env):
  full = {k: v for k, v in os.environ.items()
          if k in ('PATH', 'HOME', 'LANG')}
  full.update(env)
  return subprocess.run(['bash', os.path.join(REPO, 'scripts', script)],
                        capture_output=True, text=True, env=full,
                        check=False, timeout=60)


def _commands(stdout):
  """The echoed commands (`+ python -m unet3d.cli.main ...`) as argument
  lists."""
  return [shlex.split(line[2:]) for line in stdout.splitlines()
          if line.startswith('+ ')]


def _flags(args):
  return dict(a[2:].split('=', 1) for a in args if a.startswith('--'))


@pytest.mark.parametrize('script', SCRIPTS)
def test_help_prints_usage(script):
  result = subprocess.run(['bash', os.path.join(REPO, 'scripts', script),
                           '--help'], capture_output=True, text=True,
                          check=False)
  assert result.returncode == 0 and result.stdout.startswith('usage:')


@pytest.mark.parametrize('script, missing', [
    ('train_tpu.sh', 'TPU_NAME MODEL_DIR TRAIN_PATTERN EVAL_PATTERN'),
    ('train_gpu.sh', 'NUM_GPUS MODEL_DIR TRAIN_PATTERN EVAL_PATTERN'),
    ('train_multi_host.sh', 'WORKER_HOSTS TASK_INDEX MODEL_DIR '
                            'TRAIN_PATTERN'),
    ('kfold_ensemble.sh', 'RECORDS MODEL_ROOT'),
])
def test_missing_variables_are_named_with_usage(script, missing):
  result = _run(script)
  assert result.returncode == 2
  assert result.stderr.startswith(f'error: set {missing}\nusage:')


def _check_main_command(args):
  assert args[:3] == ['python', '-m', 'unet3d.cli.main'], args
  flags = _flags(args[3:])
  assert set(flags) <= MAIN_FLAGS, set(flags) - MAIN_FLAGS
  if 'config_file' in flags:
    assert os.path.isfile(os.path.join(REPO, flags['config_file']))
  return flags


def test_tpu_gpu_and_demo_commands():
  out = _run('train_tpu.sh', DRY_RUN='1', TPU_NAME='t', MODEL_DIR='gs://b/r',
             TRAIN_PATTERN='gs://b/train-*', EVAL_PATTERN='gs://b/val-*')
  assert out.returncode == 0, out.stderr
  train, evaluate = (_check_main_command(c) for c in _commands(out.stdout))
  assert train['mode'] == 'train' and train['tpu'] == 't'
  assert train['config_file'] == 'configs/cloud/v3-32_256x256x256_dice.yaml'
  assert evaluate['mode'] == 'eval' and evaluate['model_dir'] == 'gs://b/r'
  out = _run('train_gpu.sh', DRY_RUN='1', NUM_GPUS='4', MODEL_DIR='/r',
             TRAIN_PATTERN='/d/train-*', EVAL_PATTERN='/d/val-*')
  (cmd,) = _commands(out.stdout)
  flags = _check_main_command(cmd)
  assert (flags['num_gpus'], flags['distribution_strategy']) == ('4',
                                                                 'mirrored')
  out = _run('cpu_demo.sh', DRY_RUN='1')
  assert _commands(out.stdout) == [['python', '-m', 'unet3d.cli.demo',
                                    '--work_dir=demo_output']]


def test_multi_host_builds_tf_config():
  out = _run('train_multi_host.sh', DRY_RUN='1', WORKER_HOSTS='a:1,b:2',
             TASK_INDEX='1', MODEL_DIR='gs://b/r', TRAIN_PATTERN='gs://t-*')
  assert out.returncode == 0, out.stderr
  line = next(l for l in out.stdout.splitlines() if l.startswith('TF_CONFIG='))
  assert json.loads(line[len('TF_CONFIG='):]) == {
      'cluster': {'worker': ['a:1', 'b:2']},
      'task': {'type': 'worker', 'index': 1}}
  (cmd,) = _commands(out.stdout)
  assert _check_main_command(cmd)['distribution_strategy'] == 'multi_worker'


def test_kfold_trains_each_fold_then_evaluates_and_predicts_the_ensemble():
  out = _run('kfold_ensemble.sh', DRY_RUN='1', RECORDS='/d/rec',
             MODEL_ROOT='/runs/b', NUM_FOLDS='3', TEST_PATTERN='/d/test/*',
             PREDICT_INPUT='/d/new/*.nii.gz', PREDICT_OUTPUT='/runs/b/seg',
             OVERRIDE='train_steps=10')
  assert out.returncode == 0, out.stderr
  commands = [_check_main_command(c) for c in _commands(out.stdout)]
  assert len(commands) == 5
  for k, flags in enumerate(commands[:3]):
    assert flags['mode'] == 'train_and_eval'
    assert flags['model_dir'] == f'/runs/b/fold{k}'
    assert flags['params_override'] == (
        f'data.split_file=/d/rec/splits.json,data.fold={k},train_steps=10')
  ensemble = '/runs/b/fold0,/runs/b/fold1,/runs/b/fold2'
  assert commands[3] == {'mode': 'eval', 'model_dir': ensemble,
                         'eval_file_pattern': '/d/test/*',
                         'params_override': 'data.split_file='}
  assert commands[4]['mode'] == 'predict'
  assert commands[4]['model_dir'] == ensemble
  assert commands[4]['params_override'] == (
      "predict.input_pattern='/d/new/*.nii.gz',"
      'predict.output_dir=/runs/b/seg')


def test_kfold_needs_the_split_file_and_an_output_for_predict(tmp_path):
  out = _run('kfold_ensemble.sh', RECORDS=str(tmp_path), MODEL_ROOT='/r')
  assert out.returncode == 2
  assert out.stderr.startswith(f'error: {tmp_path}/splits.json: not found')
  (tmp_path / 'splits.json').write_text('{}')
  out = _run('kfold_ensemble.sh', RECORDS=str(tmp_path), MODEL_ROOT='/r',
             PREDICT_INPUT='x/*.nii.gz')
  assert out.returncode == 2
  assert out.stderr.startswith('error: set PREDICT_OUTPUT with PREDICT_INPUT')


@pytest.mark.parametrize('argv, message', [
    (['peer.py', '--peer_python=/no/python',
      '--peer_script=/no/peer.py'],
     'error: --peer_python: /no/python is not a file'),
    (['train.py', '--params_override=input_image_size=[33,33,33]'],
     'error: input_image_size: [33, 33, 33] is not divisible by 8'),
    (['train.py', '--profile_dir=/proc/no/such'],
     'error: --profile_dir: cannot create /proc/no/such'),
    (['bf16_dice.py', '--model_dir=/no/such'],
     'error: --model_dir: no params.yaml in /no/such'),
])
def test_python_scripts_fail_in_one_line(argv, message):
  import sys  # pylint: disable=g-import-not-at-top
  result = subprocess.run(
      [sys.executable, os.path.join(REPO, 'benchmarks', argv[0])] + argv[1:],
      capture_output=True, text=True, check=False, timeout=120,
      env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL='3'))
  assert result.returncode == 1, result.stderr[-2000:]
  assert 'Traceback' not in result.stderr, result.stderr[-2000:]
  errors = [l for l in result.stderr.splitlines() if l.startswith('error: ')]
  assert len(errors) == 1 and errors[0].startswith(message), result.stderr

"""Long-run behaviour of unet3d/training/trainer.py: exact resume, faults,
best checkpoint, early stopping, the model_dir lock and restore checks."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from tests import runs
from unet3d import config
from unet3d import run_dir
from unet3d.errors import RunError
from unet3d.input import pipeline
from unet3d.training import trainer

REPO = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))

# Exact comparisons need deterministic ops and a fixed data seed; no
# augmentation randomness is lost (it is seeded per example).
EXACT = {'seed': 3, 'deterministic': True, 'data': {'shuffle_buffer': 4}}


@pytest.fixture(scope='module')
def records(tmp_path_factory):
  root = tmp_path_factory.mktemp('records')
  runs.make_records(root)
  return root


def _cfg(records, model_dir, **override):
  values = dict(EXACT)
  values.update(override)
  return runs.run_config(records, model_dir, **values)


def _weights(model_dir, cfg):
  model, step = run_dir.restore_model(cfg)
  del model_dir
  return step, [w.numpy() for w in model.weights]


def _assert_same_weights(a, b):
  assert a[0] == b[0]
  for x, y in zip(a[1], b[1]):
    np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6)


def test_training_stream_resumes_at_any_example():
  tf.random.set_seed(0)  # a global seed must not change (or break) the stream
  records = tf.data.Dataset.range(7)
  full = list(pipeline.training_stream(
      records, 3, pipeline.InputPosition(seed=5)).take(30).as_numpy_iterator())
  for start in (1, 7, 12):
    tail = list(pipeline.training_stream(
        records, 3, pipeline.InputPosition(seed=5, examples=start)).take(
            30 - start).as_numpy_iterator())
    assert tail == full[start:]
  # Each epoch visits every record once, in a different order.
  epochs = [sorted(int(e) for e, _ in full[i:i + 7]) for i in (0, 7, 14)]
  assert epochs == [list(range(7))] * 3
  assert [e for e, _ in full[:7]] != [e for e, _ in full[7:14]]
  assert [int(k) for _, k in full] == list(range(30))
  tf.random.set_seed(None)
  unseeded = list(pipeline.training_stream(
      records, 3, pipeline.InputPosition(seed=5)).take(30).as_numpy_iterator())
  assert unseeded == full


# 4 steps in loops of 2, a checkpoint after each loop.
_LOOPS = {'steps_per_loop': 2, 'checkpoint_every_n_steps': 2}


@pytest.fixture(scope='module')
def straight(records, tmp_path_factory):
  """(cfg, weights) of an uninterrupted 4-step run without evaluations: the
  reference of the resume and evaluation tests."""
  cfg = _cfg(records, tmp_path_factory.mktemp('straight'), train_steps=4,
             train=_LOOPS)
  trainer.train(cfg)
  return cfg, _weights(None, cfg)


@pytest.fixture(scope='module')
def evaluated(records, tmp_path_factory):
  """(cfg, report) of the same run with an evaluation after each loop."""
  cfg = _cfg(records, tmp_path_factory.mktemp('evaluated'), train_steps=4,
             train=dict(_LOOPS, eval_every_n_steps=2))
  return cfg, trainer.train_and_evaluate(cfg)


def test_two_runs_of_n_steps_equal_one_run_of_2n(records, straight,
                                                  tmp_path):
  # The same run stopped after 2 steps; a new process would rebuild all.
  split = _cfg(records, tmp_path / 'split', train_steps=4, train=_LOOPS)
  trainer.train(split, until_step=2)
  trainer.train(split)
  _assert_same_weights(straight[1], _weights(tmp_path / 'split', split))


def test_evaluations_do_not_restart_the_training_data(straight, evaluated):
  with_eval, report = evaluated
  assert report['step'] == 4
  _assert_same_weights(straight[1], _weights(None, with_eval))


def test_best_checkpoint_and_json(evaluated):
  cfg, report = evaluated
  best = run_dir.read_best(cfg.model_dir)
  assert best['step'] in (2, 4)
  assert best['mean_foreground_dice'] >= report['mean_foreground_dice'] - 1e-9
  assert set(best['dice']) == set(report['per_class'])
  path = run_dir.find_checkpoint(cfg.model_dir, 'best')
  assert run_dir.checkpoint_step(path) == best['step']
  model, step = run_dir.restore_model(cfg, 'best')
  assert step == best['step'] and model is not None


def test_early_stopping_stops_after_patience(records, tmp_path):
  # An improvement of more than 2 in dice is impossible: after the first
  # evaluation every one counts as no improvement.
  cfg = _cfg(records, tmp_path / 'run', train_steps=10,
             train={'steps_per_loop': 1, 'eval_every_n_steps': 1,
                    'checkpoint_every_n_steps': 10,
                    'early_stopping_patience': 2,
                    'early_stopping_min_delta': 2.0,
                    'reduce_lr_patience': 1, 'reduce_lr_factor': 0.5})
  report = trainer.train_and_evaluate(cfg)
  assert report['early_stopped'] and report['step'] == 2
  # Two evaluations without improvement halved the learning rate twice.
  state = trainer.build_train_state(cfg, tf.distribute.get_strategy())
  assert state.step == 2
  assert float(state.lr_scale.numpy()) == pytest.approx(0.25)
  assert int(state.evals_since_best.numpy()) == 2


def test_a_non_finite_variable_is_never_saved(records, tmp_path):
  cfg = _cfg(records, tmp_path / 'run', train_steps=4,
             train={'steps_per_loop': 2, 'checkpoint_every_n_steps': 2})
  trainer.train(cfg, until_step=2)
  with trainer.Trainer(cfg) as t:
    bn = [v for v in t.state.model.non_trainable_variables
          if 'moving_variance' in v.path][0]
    bn.assign(tf.fill(bn.shape, np.inf))
    with pytest.raises(RunError, match='not finite at step 2; not saved, the '
                       'last good checkpoint is .*ckpt-2'):
      t.save()
  assert run_dir.latest_checkpoint(cfg.model_dir).endswith('ckpt-2')


def test_divergence_is_one_line_naming_the_step(records, tmp_path):
  cfg = _cfg(records, tmp_path / 'run', train_steps=40, init_learning_rate=1e9,
             optimizer='sgd', loss='cross_entropy',
             train={'steps_per_loop': 5, 'checkpoint_every_n_steps': 5})
  with pytest.raises(RunError) as info:
    trainer.train(cfg)
  message = str(info.value)
  assert '\n' not in message
  assert message.startswith('training diverged: ')
  assert 'at step ' in message


def test_restoring_a_different_architecture_fails_in_one_line(records,
                                                              tmp_path):
  cfg = _cfg(records, tmp_path / 'run', train_steps=2, depth=3,
             train={'steps_per_loop': 2})
  trainer.train(cfg)
  smaller = config.merge(cfg, {'depth': 2})
  with pytest.raises(RunError, match='checkpoint does not match the '
                     'configured model') as info:
    run_dir.restore_model(smaller)
  assert '\n' not in str(info.value)


def test_second_run_on_a_model_dir_is_refused(records, tmp_path):
  cfg = _cfg(records, tmp_path / 'run', train_steps=2)
  lock = tmp_path / 'run' / run_dir.LOCK_FILE
  lock.parent.mkdir()
  lock.write_text(json.dumps({'host': 'another-host', 'pid': 1,
                              'time': __import__('time').time()}))
  with pytest.raises(RunError, match='another training run .*another-host'):
    trainer.train(cfg)
  # A lock left by a process of this host that is gone is taken over.
  dead = subprocess.run([sys.executable, '-c', 'import os; print(os.getpid())'],
                        capture_output=True, text=True, check=True)
  lock.write_text(json.dumps({'host': os.uname().nodename,
                              'pid': int(dead.stdout), 'time': 0}))
  assert trainer.train(cfg)['step'] == 2
  assert not lock.exists()


def test_bad_train_keys_fail_before_anything_is_written(records, tmp_path):
  for override, message in (
      ({'train': {'eval_every_n_steps': -1}},
       'train.eval_every_n_steps: must be >= 0'),
      ({'train': {'keep_checkpoint_max': 0}},
       'train.keep_checkpoint_max: must be >= 1')):
    with pytest.raises(config.ConfigError, match=message):
      _cfg(records, tmp_path / 'x', **override)
  cfg = _cfg(records, tmp_path / 'run',
             training_file_pattern=str(tmp_path / 'none-*'))
  with pytest.raises(config.ConfigError, match='training_file_pattern: .*no '
                     'files match'):
    trainer.train(cfg)
  assert not (tmp_path / 'run').exists()


def test_too_few_records_for_a_batch_is_one_line(records, tmp_path):
  cfg = _cfg(records, tmp_path / 'run', train_batch_size=8,
             training_file_pattern=str(records / 'train-0.tfrecord'))
  with pytest.raises(config.ConfigError, match='gives 3 training record.* '
                     'batch needs 8'):
    trainer.train(cfg)


@pytest.mark.parametrize('split, message', [
    ('{"folds": [{"train": ["nobody"], "val": []}]}',
     'data.split_file: no training case of fold 0'),
    ('not json', 'data.split_file: .* is not valid JSON'),
])
def test_an_input_error_writes_nothing_into_model_dir(records, tmp_path,
                                                      split, message):
  """The input is checked before params.yaml or summaries are written, so
  a failed start leaves no run behind for the next start to resume."""
  split_file = tmp_path / 'splits.json'
  split_file.write_text(split)
  run = tmp_path / 'run'
  cfg = _cfg(records, run, data={'split_file': str(split_file)})
  with pytest.raises(config.ConfigError, match=message):
    trainer.train(cfg)
  assert not run.exists() or not [p for p in run.rglob('*') if p.is_file()]


def _main(*args, **kwargs):
  return subprocess.Popen(
      [sys.executable, os.path.join(REPO, 'unet_main.py')] + list(args),
      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
      env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL='3'), **kwargs)


def _override(records, **extra):
  values = ['input_image_size=[16,16,16]', 'num_classes=4',
            'num_base_filters=2', 'depth=2', 'train_batch_size=2',
            'loss=dice_ce', 'use_index_label_in_train=true',
            'distribution_strategy=cpu', 'seed=3', 'deterministic=true',
            'data.shuffle_buffer=4', 'train.progress_interval_seconds=0.01',
            f"training_file_pattern={records / 'train-*'}",
            f"eval_file_pattern={records / 'val-*'}"]
  values += [f'{k}={v}' for k, v in extra.items()]
  return '--params_override=' + ','.join(values)


def test_sigterm_saves_and_a_rerun_resumes_exactly(records, tmp_path):
  # Many short loops, so the signal lands mid-run.
  common = dict(train_steps=30, **{'train.steps_per_loop': 1,
                                   'train.checkpoint_every_n_steps': 1000})
  proc = _main('--mode=train', f'--model_dir={tmp_path / "run"}',
               _override(records, **common))
  for line in proc.stdout:
    if line.startswith('step '):  # training is under way
      proc.terminate()
      break
  out, err = proc.communicate(timeout=300)
  assert proc.returncode == 128 + 15, err[-2000:]
  errors = [l for l in err.splitlines() if l.startswith('error: ')]
  assert len(errors) == 1 and errors[0].startswith('error: SIGTERM: stopped '
                                                   'at step '), err[-2000:]
  stopped = int(errors[0].split('at step ')[1].split(';')[0])
  assert 0 < stopped < 30
  saved = run_dir.latest_checkpoint(str(tmp_path / 'run'))
  assert saved.endswith(f'ckpt-{stopped}')
  # The same command resumes and finishes; the weights equal a run that was
  # never interrupted.
  rerun = _main('--mode=train', f'--model_dir={tmp_path / "run"}',
                _override(records, **common))
  _, err = rerun.communicate(timeout=600)
  assert rerun.returncode == 0, err[-2000:]
  # The uninterrupted run: the same config (the same --params_override
  # string, as the command resolves it) trained in this process, which has
  # TensorFlow started already.
  trainer.train(config.build_config(
      params_override=_override(records, **common)[len('--params_override='):],
      flag_values={'model_dir': str(tmp_path / 'straight')}))
  cfg = run_dir.load_params(str(tmp_path / 'run'))
  other = run_dir.load_params(str(tmp_path / 'straight'))
  _assert_same_weights(_weights(None, cfg), _weights(None, other))


def test_eval_without_model_dir_is_an_error(records):
  proc = _main('--mode=eval', _override(records))
  _, err = proc.communicate(timeout=300)
  assert proc.returncode == 1
  errors = [l for l in err.splitlines() if l.startswith('error: ')]
  assert errors == ['error: model_dir: required (the run whose checkpoint to '
                    'use)'], err[-2000:]

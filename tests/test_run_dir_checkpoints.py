"""Damaged checkpoints in a run folder (unet3d/run_dir.py): found from the
`ckpt-N` files, not only the index file; a corrupt newest one named in one
line and skipped for the newest intact one; never a silent restart at step
0; the leftovers of a killed save removed.

One tiny run (checkpoints at steps 2 and 4) is trained once and copied into
each test's folder before it is damaged."""

import logging
import os
import shutil

import pytest
import tensorflow as tf

from tests import runs
from unet3d import run_dir
from unet3d.errors import RunError
from unet3d.inference import ensemble
from unet3d.training import trainer


@pytest.fixture(scope='module')
def records(tmp_path_factory):
  root = tmp_path_factory.mktemp('records')
  runs.make_records(root)
  return root


@pytest.fixture(scope='module')
def trained(records, tmp_path_factory):
  """A run folder with ckpt-2 and ckpt-4."""
  model_dir = tmp_path_factory.mktemp('trained') / 'run'
  trainer.train(runs.run_config(records, model_dir))
  return model_dir


@pytest.fixture
def run(trained, records, tmp_path):
  """(cfg, folder) of a fresh copy of the trained run."""
  folder = tmp_path / 'run'
  shutil.copytree(trained, folder)
  return runs.run_config(records, folder), folder


def _data(folder, step):
  return folder / f'ckpt-{step}.data-00000-of-00001'


def _truncate(path, fraction):
  with open(path, 'r+b') as f:
    f.truncate(int(os.path.getsize(path) * fraction))


def _flip_bytes(path):
  data = bytearray(path.read_bytes())
  for i in range(0, len(data), 97):  # in every tensor
    data[i] ^= 0xFF
  path.write_bytes(bytes(data))


def _remove_shard(folder, step):
  # The second shard of two: the index still lists a 2-shard checkpoint.
  _data(folder, step).rename(folder / f'ckpt-{step}.data-00000-of-00002')


DAMAGE = {
    'data_truncated_to_0': lambda f: _truncate(_data(f, 4), 0),
    'data_truncated_to_half': lambda f: _truncate(_data(f, 4), 0.5),
    'index_truncated': lambda f: _truncate(f / 'ckpt-4.index', 0.5),
    'data_shard_missing': lambda f: _data(f, 4).unlink(),
    'shard_of_two_missing': lambda f: _remove_shard(f, 4),
    'bytes_flipped': lambda f: _flip_bytes(_data(f, 4)),
}


def _resumed_step(cfg):
  strategy = tf.distribute.OneDeviceStrategy('/cpu:0')
  return trainer.build_train_state(cfg, strategy).step


def _warnings(caplog):
  return [r.getMessage() for r in caplog.records
          if r.levelno >= logging.WARNING]


def test_missing_index_file_resumes_from_the_checkpoint_files(run, caplog):
  cfg, folder = run
  (folder / 'checkpoint').unlink()
  assert run_dir.list_checkpoints(str(folder)) == [
      str(folder / 'ckpt-4'), str(folder / 'ckpt-2')]
  with caplog.at_level(logging.INFO):
    assert _resumed_step(cfg) == 4
  assert any('checkpoint was missing; rewrote it' in m
             for m in _warnings(caplog))
  state = tf.train.get_checkpoint_state(str(folder))
  assert list(state.all_model_checkpoint_paths) == [
      str(folder / 'ckpt-2'), str(folder / 'ckpt-4')]


def test_index_naming_deleted_files_resumes_from_the_files(run, caplog):
  cfg, folder = run
  (folder / 'checkpoint').write_text(
      'model_checkpoint_path: "ckpt-8"\n'
      'all_model_checkpoint_paths: "ckpt-6"\n'
      'all_model_checkpoint_paths: "ckpt-8"\n')
  with caplog.at_level(logging.INFO):
    assert _resumed_step(cfg) == 4
  assert any('named ckpt-6, ckpt-8, which are gone' in m
             for m in _warnings(caplog))
  assert run_dir.find_checkpoint(str(folder)) == str(folder / 'ckpt-4')


@pytest.mark.parametrize('damage', sorted(DAMAGE))
def test_training_resumes_from_the_newest_intact_checkpoint(run, damage,
                                                            caplog):
  cfg, folder = run
  DAMAGE[damage](folder)
  with caplog.at_level(logging.INFO):
    assert _resumed_step(cfg) == 2
  assert any(m.startswith(f'{folder}/ckpt-4 is corrupt (') and
             m.endswith('; using ckpt-2') for m in _warnings(caplog))
  # Moved aside (kept), so that it is neither picked again nor lost.
  aside = [p for p in folder.iterdir() if p.name.startswith('ckpt-4.corrupt-')]
  assert len(aside) == 1 and any(aside[0].iterdir())
  assert run_dir.list_checkpoints(str(folder)) == [str(folder / 'ckpt-2')]
  assert tf.train.latest_checkpoint(str(folder)) == str(folder / 'ckpt-2')


def test_training_over_a_truncated_newest_checkpoint_continues(run, records):
  cfg, folder = run
  (folder / 'checkpoint').unlink()
  _truncate(_data(folder, 4), 0.5)
  trainer.train(runs.run_config(records, folder, train_steps=6))
  # Resumed at 2 (not 0): ckpt-2 is kept, ckpt-4 and ckpt-6 are new.
  assert [run_dir.checkpoint_step(p) for p in
          run_dir.list_checkpoints(str(folder))] == [6, 4, 2]
  assert run_dir.checkpoint_problem(str(folder / 'ckpt-4')) is None
  del cfg


def test_training_stops_when_no_checkpoint_can_be_read(run):
  cfg, folder = run
  _truncate(_data(folder, 4), 0)
  _truncate(folder / 'ckpt-2.index', 0.5)
  (folder / 'checkpoint').unlink()
  with pytest.raises(RunError, match='every checkpoint .2. is corrupt or '
                     'truncated') as raised:
    _resumed_step(cfg)
  assert '\n' not in str(raised.value)
  # Nothing was moved, rewritten or started over.
  assert sorted(p.name for p in folder.iterdir() if 'ckpt' in p.name) == [
      'ckpt-2.data-00000-of-00001', 'ckpt-2.index',
      'ckpt-4.data-00000-of-00001', 'ckpt-4.index']


@pytest.mark.parametrize('damage', ['data_truncated_to_half', 'bytes_flipped',
                                    'index_truncated'])
def test_inference_falls_back_from_a_corrupt_latest(run, damage, caplog):
  cfg, folder = run
  DAMAGE[damage](folder)
  with caplog.at_level(logging.WARNING):
    _, step = run_dir.restore_model(cfg)
    planned = ensemble.members(cfg)
    _, steps = ensemble.restore_models(planned)
  assert step == 2 and steps == [2]
  assert any(m.endswith('; using ckpt-2') for m in _warnings(caplog))
  # Inference reads only: the corrupt checkpoint stays where it is.
  assert (folder / 'ckpt-4.index').exists()


@pytest.mark.parametrize('damage', ['data_truncated_to_half', 'bytes_flipped'])
def test_a_named_corrupt_checkpoint_is_one_line_not_a_mismatch(run, damage):
  cfg, folder = run
  DAMAGE[damage](folder)
  with pytest.raises(run_dir.CorruptCheckpoint) as raised:
    run_dir.restore_model(cfg, checkpoint=str(folder / 'ckpt-4'))
  message = str(raised.value)
  assert message.startswith(f'{folder}/ckpt-4 is corrupt or truncated (')
  assert '\n' not in message
  assert 'does not match the configured model' not in message


def test_a_corrupt_best_checkpoint_is_one_line(run):
  cfg, folder = run
  best = folder / run_dir.BEST_DIR
  best.mkdir()
  for path in folder.glob('ckpt-4.*'):
    shutil.copy(path, best / path.name)
  assert run_dir.find_checkpoint(str(folder), 'best') == str(best / 'ckpt-4')
  _truncate(_data(best, 4), 0.5)
  with pytest.raises(run_dir.CorruptCheckpoint,
                     match=r'best/ckpt-4 is corrupt or truncated \(its data'):
    run_dir.restore_model(cfg, checkpoint='best')


def test_leftovers_of_a_killed_save_are_removed_at_start(run, monkeypatch):
  cfg, folder = run
  # What TF 2.21 leaves when a save is killed (seen with SIGKILL).
  leftovers = [folder / 'ckpt-6_temp', folder / 'best' / 'ckpt-6_temp']
  for temp in leftovers:
    temp.mkdir(parents=True)
    (temp / 'part-00000-of-00001.data-00000-of-00001.tempstate123').write_bytes(
        b'\0' * 10)
  index_tmp = folder / ('checkpoint.tmp' + 'a' * 32)
  index_tmp.write_text('model_checkpoint_path: "ckpt-6"\n')
  kept = [folder / 'ckpt-6_temp_notes', folder / 'my_temp']
  for path in kept:
    path.mkdir()
  # absl's verbosity depends on what ran before in this process: record the
  # info lines themselves.
  infos = []
  monkeypatch.setattr(run_dir.logging, 'info',
                      lambda message, *args: infos.append(message % args))
  trainer.train(cfg)  # at step 4 already: nothing to train
  assert not any(p.exists() for p in leftovers + [index_tmp])
  assert all(p.exists() for p in kept)
  assert any('interrupted checkpoint save' in m and 'ckpt-6_temp' in m
             for m in infos)

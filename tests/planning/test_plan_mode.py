"""--mode=plan end to end: convert -> plan (a measured CPU step) -> the
recipe trains and evaluates unchanged; and its one-line errors."""

import glob
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import yaml
from scipy import ndimage

from tests import demo_records
from tests import test_unet_main
from tests.preprocess import test_convert_common as common
from unet3d import config
from unet3d import run_dir
from unet3d.input import dataset_info
from unet3d.input import schema
from unet3d.planning import budgets
from unet3d.planning import fingerprint
from unet3d.planning import planner
from unet3d.planning import run as plan_run
from unet3d.preprocess import datasets
from unet3d.training import trainer

REPO = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='3')


def _main(*argv, timeout=300):
  return subprocess.run(
      [sys.executable, os.path.join(REPO, 'unet_main.py')] + list(argv),
      capture_output=True, text=True, timeout=timeout, env=ENV)


@pytest.fixture(scope='module')
def records(tmp_path_factory):
  return demo_records.convert_demo_task(
      tmp_path_factory.mktemp('plan'), 4, (16, 16, 16), seed=0,
      validation_fraction=0.25)


def test_planned_recipe_trains_unchanged_and_params_record_the_plan(
    records, tmp_path):
  proc = _main('--mode=plan', f'--data_dir={records}', '--budget=cpu2',
               '--train_hours=0.2')
  assert proc.returncode == 0, proc.stderr[-2000:]
  plan_file = os.path.join(records, 'plan_cpu2.yaml')
  assert f'wrote {plan_file}' in proc.stdout
  recipe = yaml.safe_load(open(plan_file))
  info = dataset_info.read(os.path.join(records, 'dataset.json'))
  assert recipe['plan']['fingerprint_sha256'] == (
      dataset_info.fingerprint_sha256(info))
  assert recipe['num_classes'] == 4 and recipe['num_channels'] == 1
  # train_steps fills 0.2 h at the step time the reason above it gives,
  # measured on the budget's 2 cores (or this machine's, if fewer).
  text = open(plan_file).read().splitlines()
  reason = text[text.index(f"train_steps: {recipe['train_steps']}") - 1]
  match = re.search(r'at the ([0-9.]+) s per step measured with its input '
                    r'pipeline on (\d+) cores', reason)
  assert match, reason
  step, cores = float(match.group(1)), int(match.group(2))
  assert cores == min(2, os.cpu_count())
  # The steps fill 0.2 h less the measured startup, evaluation and
  # checkpoints: the estimate the header gives is within one rounding of
  # the steps (50) of 12 minutes, and never over.
  wall = re.search(r'estimated wall time of train_and_eval: ([0-9.]+) min: '
                   r'(\d+) s startup', '\n'.join(text))
  assert wall, text[:40]
  minutes = float(wall.group(1))
  assert 12 - 50 * (step + 0.005) / 60 - 0.05 <= minutes <= 12.05
  assert recipe['train_steps'] <= int(0.2 * 3600 / max(step - 0.005, 1e-3))
  assert int(wall.group(2)) > 0
  assert recipe['distribution_strategy'] == 'cpu'
  # The file as written; only the step count is cut for the test. The
  # command's main with these flags, in this process (which has TensorFlow
  # started already; a failure exits as the command does).
  model_dir = tmp_path / 'run'
  flags = test_unet_main._flags([  # pylint: disable=protected-access
      '--mode=train_and_eval', f'--config_file={plan_file}',
      f'--model_dir={model_dir}',
      '--params_override=train_steps=2,train.checkpoint_every_n_steps=2'])
  try:
    test_unet_main.unet_main.main([])
  finally:
    flags.unparse_flags()
  saved = run_dir.load_params(str(model_dir))
  assert saved.plan.fingerprint_sha256 == recipe['plan']['fingerprint_sha256']
  assert saved.plan.budget == 'cpu2'
  assert saved.model.pool_sizes == recipe['model']['pool_sizes']
  report = json.load(open(model_dir / 'eval_results.json'))
  # 4 cases are too few to hold one out: training and evaluation read all.
  assert report['num_cases'] == 4
  assert recipe['training_file_pattern'].endswith('/*.tfrecord')


def test_training_warns_when_the_dataset_changed_since_planning(records,
                                                                 tmp_path):
  fp = fingerprint.read(records)
  cfg = config.build_config(params_override={
      'training_file_pattern': os.path.join(records, 'train-*'),
      'plan': {'fingerprint_sha256': fp.sha256}})
  assert not trainer.warn_if_data_changed_since_plan(cfg)
  cfg.plan.fingerprint_sha256 = '0' * 64
  assert trainer.warn_if_data_changed_since_plan(cfg)


def test_fingerprint_hash_follows_the_content(records):
  info = dataset_info.read(os.path.join(records, 'dataset.json'))
  before = dataset_info.fingerprint_sha256(info)
  info['seconds'] = 123.0  # not part of the fingerprint
  assert dataset_info.fingerprint_sha256(info) == before
  info['cases'][0]['stored']['spacing'][0] += 0.5
  assert dataset_info.fingerprint_sha256(info) != before


def test_fingerprint_reads_the_converted_cases(records):
  fp = fingerprint.read(records)
  assert len(fp.cases) == 4 and len(fp.training_cases()) == 3
  assert fp.reoriented and fp.num_classes == 4
  # Each case against its stored record: classes present, face-connected
  # components (scipy), centroids, shape and spacing.
  stored = {}
  for shard in glob.glob(os.path.join(records, '*.tfrecord')):
    for serialized in schema.read_records(shard):
      volume = schema.decode_volume(serialized)
      stored[volume.case_id] = volume
  assert sorted(stored) == sorted(c.case_id for c in fp.cases)
  for case in fp.cases:
    volume = stored[case.case_id]
    label = volume.label
    present = [k for k in range(1, 4) if (label == k).any()]
    assert present, case.case_id
    assert sorted(case.component_counts) == [str(k) for k in present]
    for k in present:
      _, count = ndimage.label(label == k)
      assert case.component_counts[str(k)] == count
      np.testing.assert_allclose(case.centroid_voxel[str(k)],
                                 np.argwhere(label == k).mean(0), rtol=1e-6)
    assert case.stored_shape == label.shape
    np.testing.assert_allclose(case.stored_spacing, volume.spacing, rtol=1e-6)
    assert case.stored_spacing == (1.0, 1.0, 1.5)


@pytest.mark.parametrize('nonzero_mask, warned', [(None, False),
                                                   (False, True)])
def test_a_zero_background_dataset_converted_by_default_plans_without_a_warning(
    tmp_path, nonzero_mask, warned):
  """Converter and planner share nnU-Net's nonzero-mask rule: with the
  default (None, "auto") a skull-stripped-like dataset is planned without a
  normalisation warning; forcing the other choice still warns."""
  task = tmp_path / 'Task01_BrainFake'
  common.skull_strip(str(task), common.write_msd_task(str(task),
                                                      common.SPECS[:3]))
  out = str(tmp_path / 'records')
  options = {} if nonzero_mask is None else {'nonzero_mask': nonzero_mask}
  datasets.convert_decathlon(str(task), out, num_shards=1,
                             validation_fraction=0.34, **options)
  budget = budgets.get_budget('cpu2', train_hours=0.5)
  plan = planner.make_plan(fingerprint.read(out), budget, out,
                           lambda sizing: 0.01)
  normalisation = [w for w in plan.warnings if 'normalisation' in w]
  assert bool(normalisation) == warned, normalisation
  if warned:
    assert '--nonzero_mask' in normalisation[0]
  else:
    assert any('channel 0 normalisation' in n and 'non-zero voxels' in n
               for n in plan.notes), plan.notes


def test_old_dataset_json_names_the_file_and_what_to_do(tmp_path):
  (tmp_path / 'dataset.json').write_text(json.dumps({'labels': {}}))
  proc = _main('--mode=plan', f'--data_dir={tmp_path}', timeout=120)
  assert proc.returncode == 1
  errors = [l for l in proc.stderr.splitlines() if l.startswith('error: ')]
  assert errors == [f'error: {tmp_path}/dataset.json: fingerprint_version is '
                    'None, expected 1; re-convert the dataset with this '
                    'version of data_preprocess/ to record the fingerprint '
                    'the planner reads'], proc.stderr[-2000:]
  assert not (tmp_path / 'plan_cpu2.yaml').exists()


def test_a_malformed_dataset_json_is_one_line(records, tmp_path):
  info = dataset_info.read(os.path.join(records, 'dataset.json'))
  info['cases'][1]['stored']['shape'] = [16, 16]
  (tmp_path / 'dataset.json').write_text(json.dumps(info))
  with pytest.raises(ValueError) as raised:
    plan_run.plan_dataset(str(tmp_path), 'cpu2')
  assert str(raised.value) == (
      f'{tmp_path}/dataset.json: cases[1].stored.shape must be a list of 3 '
      'per-axis values, got [16, 16]')
  assert not (tmp_path / 'plan_cpu2.yaml').exists()


@pytest.mark.parametrize('argv, message', [
    (['--mode=plan'], '--data_dir: required with --mode=plan'),
    (['--mode=plan', '--data_dir=/no/such'],
     '/no/such/dataset.json: not found (--data_dir'),
    (['--mode=plan', '--data_dir=/no/such', '--budget=gpu17g'],
     "--budget: unknown budget 'gpu17g'"),
])
def test_plan_mode_bad_input_is_one_line(argv, message):
  proc = _main(*argv, timeout=120)
  assert proc.returncode == 1
  errors = [l for l in proc.stderr.splitlines() if l.startswith('error: ')]
  assert len(errors) == 1 and message in errors[0], proc.stderr[-2000:]


def test_a_cpu_plan_without_its_records_or_with_a_corrupt_shard_names_them(
    records, tmp_path):
  # dataset.json away from its records: a CPU plan cannot time steps.
  (tmp_path / 'dataset.json').write_text(
      open(os.path.join(records, 'dataset.json')).read())
  with pytest.raises(ValueError) as raised:
    plan_run.plan_dataset(str(tmp_path), 'cpu2')
  assert str(raised.value) == (
      f'{tmp_path}/train-*.tfrecord: no training records beside '
      f'{tmp_path}/dataset.json (budget cpu2 times training steps on them; '
      "keep dataset.json with the converter's records)")
  shard = glob.glob(os.path.join(records, 'train-*.tfrecord'))[0]
  bad = tmp_path / 'train-00000-of-00001.tfrecord'
  bad.write_bytes(open(shard, 'rb').read()[:500])  # truncated
  with pytest.raises(ValueError) as raised:
    plan_run.plan_dataset(str(tmp_path), 'cpu2')
  assert str(raised.value).startswith(
      f'{bad}: cannot read this TFRecord shard ('), str(raised.value)
  assert '\n' not in str(raised.value)
  assert not (tmp_path / 'plan_cpu2.yaml').exists()

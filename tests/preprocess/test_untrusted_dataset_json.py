"""dataset.json is data: its paths stay inside the task folder, its
recorded geometry is checked when read, errors are one line naming it."""

import json
import math
import os

import pytest

from tests.planning import fabricate
from tests.preprocess import test_convert_common as common
from unet3d.planning import fingerprint
from unet3d.preprocess import dataset_json
from unet3d.preprocess import datasets
from unet3d.preprocess import decathlon


def _task(tmp_path, image):
  task = tmp_path / 'Task01_Fake'
  common.write_msd_task(str(task), common.SPECS[:2])
  meta = json.loads((task / 'dataset.json').read_text())
  meta['training'][1]['image'] = image(tmp_path, task)
  (task / 'dataset.json').write_text(json.dumps(meta))
  return task


def _outside_file(tmp_path, task):
  target = tmp_path / 'secret.nii.gz'
  target.write_bytes((task / 'imagesTr' / 'case_001.nii.gz').read_bytes())
  return target


def _symlink_out(tmp_path, task):
  link = task / 'imagesTr' / 'link.nii.gz'
  os.symlink(_outside_file(tmp_path, task), link)
  return './imagesTr/link.nii.gz'


OUTSIDE = {
    'dotdot': lambda tmp, task: '../' + _outside_file(tmp, task).name,
    'nested_dotdot': lambda tmp, task: ('./imagesTr/../../' +
                                        _outside_file(tmp, task).name),
    'absolute': lambda tmp, task: str(_outside_file(tmp, task)),
    'symlink': _symlink_out,
}


@pytest.mark.parametrize('kind', sorted(OUTSIDE))
def test_paths_outside_the_task_folder_are_refused(tmp_path, kind):
  task = _task(tmp_path, OUTSIDE[kind])
  with pytest.raises(ValueError) as e:
    decathlon.read_task(str(task))
  message = str(e.value)
  assert message.startswith(str(task / 'dataset.json'))
  assert 'training[1].image' in message and 'outside the task folder' in (
      message)
  assert '--allow_outside_paths' in message and '\n' not in message
  _, _, found = decathlon.read_task(str(task), allow_outside_paths=True)
  assert len(found) == 2


@pytest.mark.parametrize('value', [None, 3, '', ['a'], 'a\0b'])
def test_entry_paths_that_are_not_paths_are_refused(tmp_path, value):
  task = _task(tmp_path, lambda tmp, task: value)
  with pytest.raises(ValueError, match=r'training\[1\].image: expected a '
                     'file path'):
    decathlon.read_task(str(task))


def test_cli_refuses_outside_paths_unless_allowed(tmp_path):
  task = _task(tmp_path, OUTSIDE['dotdot'])
  out = tmp_path / 'records'
  result = common.run_cli('convert_decathlon.py', input_path=task,
                          output_path=out, num_shards=1,
                          validation_fraction=0.5)
  assert result.returncode != 0
  assert 'error:' in result.stderr and 'outside the task folder' in (
      result.stderr)
  result = common.run_cli('convert_decathlon.py', input_path=task,
                          output_path=out, num_shards=1,
                          validation_fraction=0.5, allow_outside_paths=True)
  assert result.returncode == 0, result.stderr


def test_output_records_paths_relative_to_the_task(tmp_path):
  task = tmp_path / 'Task01_Fake'
  common.write_msd_task(str(task), common.SPECS[:2])
  out = tmp_path / 'records'
  datasets.convert_decathlon(str(task), str(out), num_shards=1,
                             validation_fraction=0.5)
  info = json.loads((out / 'dataset.json').read_text())
  for case in info['cases']:
    files = case['image_files'] + [case['label_file']]
    assert not any(os.path.isabs(f) or f.startswith('..') for f in files)
    assert str(tmp_path) not in json.dumps(case)


BAD_SPACINGS = [0, -1, -1e-9, math.nan, math.inf, -math.inf, '1.0', None,
                True, [1.0, 1.0], [1.0, 1.0, 1.0, 1.0]]


def _plan_info(**resample):
  return {'preprocessing': {
      'orientation': 'RAS', 'crop_to_nonzero': True, 'resample': resample,
      'image_interpolation': 'spline order 3',
      'normalization': [{'scheme': 'zscore', 'within_nonzero_mask': False}]}}


@pytest.mark.parametrize('bad', BAD_SPACINGS)
def test_target_spacing_must_be_positive_and_finite(bad):
  spacing = bad if isinstance(bad, list) or bad is None else [1.0, bad, 1.0]
  if bad is None:
    spacing = [1.0, None, 1.0]
  with pytest.raises(ValueError) as e:
    dataset_json.plan_from_dataset_info(_plan_info(target_spacing=spacing),
                                        'x/dataset.json')
  assert str(e.value).startswith(
      'x/dataset.json: preprocessing.resample.target_spacing: expected 3 '
      'finite spacings > 0')


@pytest.mark.parametrize('bad', [0, -4, 1.5, math.nan, '8', True, [8, 8]])
def test_target_shape_must_be_positive_integers(bad):
  shape = bad if isinstance(bad, list) else [8, bad, 8]
  with pytest.raises(ValueError, match='x/dataset.json: preprocessing.'
                     'resample.target_shape: expected 3 positive integers'):
    dataset_json.plan_from_dataset_info(_plan_info(target_shape=shape),
                                        'x/dataset.json')


def test_a_valid_resample_still_reads():
  plan = dataset_json.plan_from_dataset_info(
      _plan_info(target_spacing=[1, 1.5, 2.0]), 'x')
  assert plan.target_spacing == (1.0, 1.5, 2.0)


SINGULAR = [[1, 0, 0, 0], [0, 0, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]]
NAN = [[math.nan, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]]


@pytest.mark.parametrize('key', ['stored', 'original'])
@pytest.mark.parametrize('affine', [SINGULAR, NAN, [[1, 0], [0, 1]], 'eye'])
def test_recorded_affines_must_be_finite_and_invertible(key, affine):
  info = fabricate.dataset_info()
  for case in info['cases']:
    case.setdefault(key, {})['affine'] = affine
  with pytest.raises(ValueError, match=rf'd.json: cases\[0\].{key}.affine '
                     'must be a finite, invertible 4x4 matrix'):
    fingerprint.from_dataset_info(info, 'd.json')


@pytest.mark.parametrize('bad', [0, -1, math.nan, math.inf, '1'])
def test_fingerprint_spacing_must_be_positive_and_finite(bad):
  with pytest.raises(ValueError, match=r'd.json: cases\[0\].'
                     '(cropped|stored).spacing must be'):
    fingerprint.from_dataset_info(
        fabricate.dataset_info(spacing=(1.0, bad, 1.0)), 'd.json')

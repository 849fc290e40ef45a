"""unet3d/inference/channel_files.py: nnU-Net `_0000` channel files in
predict."""

import os
import shutil

import nibabel as nib
import numpy as np
import pytest

from tests.inference import test_predict
from tests.inference.test_predict import converted, trained  # pylint: disable=unused-import
from tests.preprocess import test_convert_common as common
from unet3d import config
from unet3d.inference import channel_files
from unet3d.inference import predict
from unet3d.preprocess import io

_scan = test_predict._scan  # pylint: disable=protected-access


def test_channel_files_are_one_case_in_index_order(tmp_path):
  a1 = _scan(tmp_path / 'a_0001.nii.gz')
  a0 = _scan(tmp_path / 'a_0000.nii.gz')
  b0 = _scan(tmp_path / 'b_0000.nii')
  plain = _scan(tmp_path / 'plain.nii.gz')
  year = _scan(tmp_path / 'scan_2019.nii.gz')
  found = channel_files.input_cases(str(tmp_path))
  assert found == [
      channel_files.InputCase('a', (a0, a1), f'{tmp_path}/a_XXXX.nii.gz'),
      channel_files.InputCase('b', (b0,), b0),
      channel_files.InputCase('plain', (plain,), plain),
      channel_files.InputCase('scan_2019', (year,), year)]


def test_a_missing_channel_index_is_one_line_naming_the_case(tmp_path):
  _scan(tmp_path / 'a_0000.nii.gz')
  _scan(tmp_path / 'a_0002.nii.gz')
  with pytest.raises(ValueError) as error:
    channel_files.input_cases(f'{tmp_path}/*.nii.gz')
  assert str(error.value) == (f'{tmp_path}/a_XXXX.nii.gz: case a has no '
                              'channel file _0001 (expected _0000.._0002 '
                              'without gaps)')


def test_outputs_are_named_after_the_case(tmp_path):
  (tmp_path / 'in').mkdir()
  _scan(tmp_path / 'in' / 'a_0000.nii.gz')
  _scan(tmp_path / 'in' / 'a_0001.nii.gz')
  _scan(tmp_path / 'in' / 'x.nii.gz')
  cfg = config.merge(config.Config(), {'predict': {
      'input_pattern': str(tmp_path / 'in'),
      'output_dir': str(tmp_path / 'out')}})
  pairs = predict._plan_outputs(cfg)  # pylint: disable=protected-access
  assert [(c.name, os.path.basename(o)) for c, o in pairs] == [
      ('a', 'a_seg.nii.gz'), ('x', 'x_seg.nii.gz')]


def test_predict_file_stacks_channel_files_in_order(tmp_path):
  label = common.blobs((12, 10, 8), seed=1)
  affine = common.lps_affine((1.0, 1.0, 1.5))
  io.save_nifti(str(tmp_path / 'c_0000.nii.gz'),
                np.zeros(label.shape, np.float32), affine)
  io.save_nifti(str(tmp_path / 'c_0001.nii.gz'), label.astype(np.float32),
                affine)
  (case,) = channel_files.input_cases(str(tmp_path))

  def from_channel_1(batch):  # one-hot of channel 1's value
    return np.eye(3, dtype=np.float32)[np.rint(batch[..., 1]).astype(int)]

  cfg = test_predict._cfg(num_channels=2)  # pylint: disable=protected-access
  out = predict.predict_file(case.files, str(tmp_path / 'c_seg.nii.gz'),
                             from_channel_1, cfg, None)
  written = nib.load(out)
  np.testing.assert_allclose(written.affine, affine)
  np.testing.assert_array_equal(np.asarray(written.dataobj), label)


def test_cli_predicts_a_channel_file_case(converted, trained, tmp_path):
  task_dir, _, _ = converted
  scans = tmp_path / 'imagesTs'
  scans.mkdir()
  shutil.copy(task_dir / 'imagesTr' / 'case_000.nii.gz',
              scans / 'patient_0000.nii.gz')
  out = tmp_path / 'seg'
  proc = test_predict._run_main(  # pylint: disable=protected-access
      '--mode=predict', f'--model_dir={trained}', f'--input={scans}',
      f'--output_dir={out}')
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert os.listdir(out) == ['patient_seg.nii.gz']
  assert nib.load(out / 'patient_seg.nii.gz').shape == nib.load(
      scans / 'patient_0000.nii.gz').shape

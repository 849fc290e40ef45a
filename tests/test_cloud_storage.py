"""gs:// paths for the converters, predict, configs and the plan, with
TensorFlow's in-memory `ram://` filesystem standing in for a bucket.

ram:// lives in one process: everything here runs in-process, single
process (the multi-process converter is tested on local paths).
"""

import json
import os
import subprocess
import sys
import uuid

import nibabel as nib
import numpy as np
import pytest

from tests.inference.test_predict import converted  # pylint: disable=unused-import
from tests.inference.test_predict import trained  # pylint: disable=unused-import
from tests.preprocess import test_convert_common as common
from unet3d import config
from unet3d import fileio
from unet3d import run_dir
from unet3d.cli import main as unet_main
from unet3d.inference import prediction_files
from unet3d.planning import run as plan_run
from unet3d.preprocess import io

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SPECS = [((12, 12, 10), (1.0, 1.0, 1.5)), ((12, 10, 12), (1.0, 1.0, 1.5)),
         ((10, 12, 12), (1.0, 1.0, 1.5))]


def _bucket() -> str:
  return f'ram://bucket-{uuid.uuid4().hex}'


def write_remote_task(local_dir, raw=None) -> str:
  """A Decathlon task made in local_dir and written to ram:// (the NIfTI
  files' bytes through fileio); returns the ram:// task folder."""
  raw_arrays = common.write_msd_task(str(local_dir), SPECS)
  if raw is not None:
    raw.update(raw_arrays)
  task = fileio.join(_bucket(), 'Task09_Fake')
  fileio.copy_tree(str(local_dir), task)
  return task


@pytest.fixture(scope='module')
def remote_task(tmp_path_factory):
  """(the ram:// task folder, {case_id: (image, label, affine)})."""
  raw = {}
  task = write_remote_task(tmp_path_factory.mktemp('task') / 'Task09_Fake',
                           raw)
  return task, raw


# Runs in a child process: the convert command's flags and the unet3d
# command's (imported by the predict tests) cannot share one process.
CONVERT_IN_ONE_PROCESS = """
import json, sys
from tests.preprocess import test_convert_common as common
from unet3d import fileio
from unet3d.cli import convert
local, task, out = sys.argv[1:4]
common.write_msd_task(local, %r)
fileio.copy_tree(local, task)  # the NIfTI files' bytes, to ram://
try:
  convert.main(['unet3d-convert', 'decathlon', '--input_path=' + task,
                '--output_path=' + out, '--num_shards=1',
                '--validation_fraction=0.34', '--num_processes=1'])
except SystemExit as e:
  assert not e.code, e.code
records = common.read_back(fileio.join(out, '*.tfrecord'))
print(json.dumps({
    'files': fileio.listdir(out),
    'summary': fileio.read_json(fileio.join(out, 'dataset.json')),
    'cases': {k: [list(r['image'].shape), sorted(set(r['label'].ravel()
                                                      .tolist()))]
              for k, r in records.items()}}))
""" % (SPECS,)


def test_cli_converts_a_decathlon_task_from_and_to_a_bucket(tmp_path):
  bucket = _bucket()
  proc = subprocess.run(
      [sys.executable, '-c', CONVERT_IN_ONE_PROCESS, str(tmp_path / 'task'),
       fileio.join(bucket, 'Task09_Fake'), fileio.join(bucket, 'records')], cwd=tmp_path, capture_output=True,
      text=True, timeout=300, env=dict(os.environ, PYTHONPATH=REPO,
                                       TF_CPP_MIN_LOG_LEVEL='3'))
  assert proc.returncode == 0, proc.stderr[-2000:]
  result = json.loads(proc.stdout.splitlines()[-1])
  assert {'dataset.json', 'splits.json'} <= set(result['files'])
  assert sum(f.endswith('.tfrecord') for f in result['files']) == 2
  assert result['summary']['num_channels'] == 1
  assert sorted(result['cases']) == ['case_000', 'case_001', 'case_002']
  for shape, labels in result['cases'].values():
    assert shape[-1] == 1 and set(labels) <= {0, 1, 2}
  # Nothing went to a local folder named 'ram:'.
  assert os.listdir(tmp_path) == ['task']


def test_volumes_read_from_a_bucket_equal_the_local_ones(remote_task,
                                                         tmp_path):
  task, raw = remote_task
  image, affine, spacing = io.load_nifti(
      fileio.join(task, 'imagesTr', 'case_001.nii.gz'))
  np.testing.assert_allclose(image, raw['case_001'][0][..., 0])
  np.testing.assert_allclose(affine, raw['case_001'][2])
  np.testing.assert_allclose(spacing, [1.0, 1.0, 1.5])
  shape, _ = io.nifti_geometry(fileio.join(task, 'labelsTr', 'case_002.nii.gz'))
  assert shape == (10, 12, 12)
  # .nii (uncompressed) and a NIfTI written straight to the bucket.
  path = fileio.join(_bucket(), 'out', 'x.nii')
  io.save_nifti(path, raw['case_000'][1], raw['case_000'][2])
  label, label_affine, _ = io.load_volume(path)
  np.testing.assert_array_equal(label, raw['case_000'][1])
  np.testing.assert_allclose(label_affine, raw['case_000'][2])
  assert fileio.listdir(fileio.dirname(path)) == ['x.nii']


def test_a_config_file_on_a_bucket_loads():
  path = fileio.join(_bucket(), 'configs', 'run.yaml')
  fileio.write_text(path, 'num_classes: 5\ntrain_steps: 7\n')
  cfg = config.build_config(path)
  assert cfg.num_classes == 5 and cfg.train_steps == 7
  with pytest.raises(config.ConfigError, match=r'nope.yaml: not found'):
    config.build_config(fileio.join(_bucket(), 'nope.yaml'))


def test_predict_reads_inputs_from_and_writes_outputs_to_a_bucket(
    converted, trained):
  task_dir, _, _ = converted
  inputs = fileio.join(_bucket(), 'scans')
  fileio.copy_tree(str(task_dir / 'imagesTr'), inputs)
  out = fileio.join(_bucket(), 'seg')
  assert prediction_files.input_files(inputs) == [
      fileio.join(inputs, f'case_00{i}.nii.gz') for i in range(4)]
  cfg = config.merge(run_dir.load_params(trained), {'predict': {
      'input_pattern': fileio.join(inputs, 'case_00[01].nii.gz'),
      'output_dir': out, 'save_probabilities': 'nifti'}})
  unet_main.run('predict', cfg)
  assert fileio.listdir(out) == [
      'case_000_probabilities.nii.gz', 'case_000_seg.nii.gz',
      'case_001_probabilities.nii.gz', 'case_001_seg.nii.gz']
  for case_id in ('case_000', 'case_001'):
    source = nib.load(task_dir / 'imagesTr' / f'{case_id}.nii.gz')
    labels, affine, _ = io.load_nifti(fileio.join(out, f'{case_id}_seg.nii.gz'))
    assert labels.shape == source.shape and labels.dtype == np.uint8
    np.testing.assert_allclose(affine, source.affine)


def test_plan_mode_with_data_dir_and_plan_file_on_a_bucket(converted):
  _, records, _ = converted
  data_dir = fileio.join(_bucket(), 'records')
  fileio.copy_tree(str(records), data_dir)
  plan_file = fileio.join(_bucket(), 'plans', 'gpu.yaml')
  result = plan_run.plan_dataset(data_dir, 'gpu16g', plan_file)
  assert result['plan_file'] == plan_file
  cfg = config.build_config(plan_file)
  assert cfg.training_file_pattern.startswith(data_dir + '/')

"""unet3d/preprocess/convert.py: output folder, splits, dataset.json, bad input.

Also holds the helpers the per-dataset converter tests share: running a
data_preprocess CLI, reading records back through the training pipeline,
and a tiny fake Decathlon task.
"""

import json
import os
import re
import subprocess
import uuid
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from unet3d import config
from unet3d.preprocess import cases
from unet3d import fileio
from unet3d.preprocess import convert
from unet3d.preprocess import datasets
from unet3d.preprocess import io
from unet3d.input import pipeline
from unet3d.preprocess import spatial
from unet3d.preprocess import intensity
from unet3d.preprocess import survey as survey_lib
from unet3d.input import schema

REPO = Path(__file__).resolve().parents[2]
LABELS = {'0': 'background', '1': 'organ', '2': 'lesion'}


# ----------------------------------------------------------------------------
# Shared helpers
# ----------------------------------------------------------------------------


def run_cli(script: str, **flags) -> subprocess.CompletedProcess:
  """Runs data_preprocess/<script> with --key=value flags."""
  args = [sys.executable, str(REPO / 'data_preprocess' / script)]
  for key, value in flags.items():
    if isinstance(value, bool):
      value = 'true' if value else 'false'
    args.append(f'--{key}={value}')
  # This checkout's package, even where another one is pip-installed.
  path = os.pathsep.join([str(REPO)] + [p for p in [os.environ.get(
      'PYTHONPATH')] if p])
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='3', PYTHONPATH=path)
  return subprocess.run(args, capture_output=True, text=True, env=env,
                        timeout=300, check=False)


def error_lines(result: subprocess.CompletedProcess) -> list[str]:
  return [l for l in result.stderr.splitlines() if l.startswith('error:')]


def read_back(pattern, num_classes: int = 3, multi_label: bool = False
             ) -> dict[str, dict[str, np.ndarray]]:
  """Every record matching pattern, parsed by the training pipeline (which
  checks the channels: num_channels is the first record's)."""
  first = next(iter(tf.data.TFRecordDataset(
      sorted(tf.io.gfile.glob(str(pattern)))[:1], 'GZIP')))
  channels = schema.decode_volume(first.numpy()).image.shape[-1]
  override = {'num_classes': num_classes, 'compressed_input': True,
              'num_channels': int(channels)}
  if multi_label:
    override['model'] = {'output_activation': 'sigmoid'}
  cfg = config.build_config(None, override)
  out = {}
  for example in pipeline.build_volume_dataset(cfg, str(pattern)):
    record = {k: v.numpy() for k, v in example.items()}
    out[record['case_id'].decode()] = record
  return out


def lps_affine(spacing, origin=(30.0, -20.0, 12.0)) -> np.ndarray:
  """DICOM-like axes: array axes 0, 1 point left and posterior."""
  affine = np.diag([-spacing[0], -spacing[1], spacing[2], 1.0])
  affine[:3, 3] = origin
  return affine


def blobs(shape, seed: int) -> np.ndarray:
  """Labels {0, 1, 2}: an ellipsoid (1) holding a smaller one (2)."""
  rng = np.random.default_rng(seed)
  grid = np.meshgrid(*[np.arange(s) for s in shape], indexing='ij')
  centre = [s / 2 + rng.uniform(-1, 1) for s in shape]
  radius = [s / 3.5 for s in shape]
  dist = sum(((g - c) / r)**2 for g, c, r in zip(grid, centre, radius))
  return ((dist <= 1).astype(np.uint8) + (dist <= 0.3)).astype(np.uint8)


def write_msd_task(task_dir, specs, modalities=None, labels=None,
                   suffix='.nii.gz'):
  """A tiny Decathlon task: specs = [(shape, spacing)], one case each.

  Images are 3D (one modality) or 4D (several), intensity depends on the
  class plus noise. Returns {case_id: (image [X,Y,Z,C], label, affine)}.
  """
  modalities = modalities or {'0': 'MRI'}
  labels = labels or LABELS
  os.makedirs(os.path.join(task_dir, 'imagesTr'), exist_ok=True)
  os.makedirs(os.path.join(task_dir, 'labelsTr'), exist_ok=True)
  out, training = {}, []
  for i, (shape, spacing) in enumerate(specs):
    rng = np.random.default_rng(i)
    label = blobs(shape, i)
    channels = []
    for c in range(len(modalities)):
      base = np.array([100.0, 250.0, 400.0])[label] * (c + 1)
      channels.append((base + rng.normal(0, 20, shape)).astype(np.float32))
    image = np.stack(channels, axis=-1)
    affine = lps_affine(spacing)
    name = f'case_{i:03d}'
    io.save_nifti(os.path.join(task_dir, 'imagesTr', name + suffix),
                  image[..., 0] if image.shape[-1] == 1 else image, affine)
    io.save_nifti(os.path.join(task_dir, 'labelsTr', name + suffix), label,
                  affine)
    training.append({'image': f'./imagesTr/{name}{suffix}',
                     'label': f'./labelsTr/{name}{suffix}'})
    out[name] = (image, label, affine)
  with open(os.path.join(task_dir, 'dataset.json'), 'w') as f:
    json.dump({'name': 'fake', 'modality': modalities, 'labels': labels,
               'training': training}, f)
  return out


def skull_strip(task_dir, raw, suffix='.nii.gz'):
  """Zeroes every image of write_msd_task's task outside a centred
  ellipsoid (radii 0.4 of the axes, holding the labels): a brain in a zero
  background, whose nonzero box holds about half of the volume. Updates
  and returns raw."""
  for case_id, (image, label, affine) in raw.items():
    shape = image.shape[:3]
    grid = np.meshgrid(*[np.arange(n) for n in shape], indexing='ij')
    inside = sum(((g - (n - 1) / 2) / (0.4 * n))**2
                 for g, n in zip(grid, shape)) <= 1
    assert np.all(inside[label > 0])
    image = image * inside[..., None]
    io.save_nifti(os.path.join(task_dir, 'imagesTr', case_id + suffix),
                  image[..., 0] if image.shape[-1] == 1 else image, affine)
    raw[case_id] = (image, label, affine)
  return raw


def nonzero_box_fraction(image):
  """A numpy reference for dataset.json's nonzero_fraction."""
  hits = np.argwhere(np.any(image != 0, axis=-1))
  return float(np.prod(hits.max(0) - hits.min(0) + 1) /
               np.prod(image.shape[:3]))


def world_of(affine, index):
  return np.asarray(affine)[:3, :3] @ np.asarray(index, float) + np.asarray(
      affine)[:3, 3]


SPECS = [((16, 18, 14), (1.0, 1.0, 1.5)), ((18, 16, 16), (1.2, 1.0, 1.5)),
         ((16, 16, 12), (1.0, 1.1, 2.0)), ((16, 17, 15), (1.0, 1.0, 1.5))]


@pytest.fixture
def task(tmp_path):
  task_dir = tmp_path / 'Task01_Fake'
  return task_dir, write_msd_task(str(task_dir), SPECS)


def _leftovers(tmp_path, name='out'):
  return sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(name))


# ----------------------------------------------------------------------------
# Output folder
# ----------------------------------------------------------------------------


def test_existing_output_is_refused_without_overwrite(task, tmp_path):
  task_dir, _ = task
  out = tmp_path / 'out'
  datasets.convert_decathlon(str(task_dir), str(out))
  (out / 'stale.txt').write_text('from an earlier run')
  with pytest.raises(ValueError, match=f'^{out}: output folder exists and is '
                     r'not empty \(pass --overwrite to replace it\)$'):
    datasets.convert_decathlon(str(task_dir), str(out))
  assert (out / 'stale.txt').exists()
  datasets.convert_decathlon(str(task_dir), str(out), overwrite=True)
  assert not (out / 'stale.txt').exists()
  assert (out / 'dataset.json').exists()
  assert _leftovers(tmp_path) == ['out']


def test_output_on_a_tensorflow_filesystem(task, tmp_path):
  # gs:// on Cloud TPU; ram:// here. Staged locally, copied up when complete.
  task_dir, _ = task
  local = datasets.convert_decathlon(str(task_dir), str(tmp_path / 'local'))
  remote = f'ram://records-{uuid.uuid4().hex}'
  summary = datasets.convert_decathlon(str(task_dir), remote)
  assert summary['cases'] == local['cases']
  names = sorted(os.listdir(tmp_path / 'local'))
  assert fileio.listdir(remote) == names
  assert not fileio.glob(remote + "*tmp*")
  assert read_back(remote + '/train-*').keys() == read_back(
      tmp_path / 'local' / 'train-*').keys()
  with pytest.raises(ValueError, match='output folder exists and is not empty'):
    datasets.convert_decathlon(str(task_dir), remote)


def test_output_inside_the_input_is_refused(task):
  task_dir, _ = task
  with pytest.raises(ValueError, match='output folder holds input file'):
    datasets.convert_decathlon(str(task_dir), str(task_dir / 'imagesTr'),
                              overwrite=True)
  assert (task_dir / 'imagesTr' / 'case_000.nii.gz').exists()


def _explode(case):
  if case.case_id == 'case_002':
    raise RuntimeError('worker crashed')
  return cases.RawCase(np.ones((8, 8, 8, 1), np.float32),
                       np.zeros((8, 8, 8), np.uint8), np.eye(4))


def test_a_crash_mid_run_leaves_no_output(task, tmp_path):
  task_dir, _ = task
  source = cases.Source(
      name='crash', cases=tuple(cases.Case(f'case_{i:03d}', ('x',))
                                for i in range(4)),
      load=_explode, geometry=lambda c: ((8, 8, 8), np.eye(4)),
      modalities={'0': 'MRI'}, labels=LABELS, norms=(intensity.ChannelNorm(),))
  with pytest.raises(RuntimeError, match='worker crashed'):
    convert.convert(source, str(tmp_path / 'out'),
                    convert.Options(num_shards=1, validation_fraction=0.0))
  assert _leftovers(tmp_path) == []


# ----------------------------------------------------------------------------
# Bad input: one line naming the file, nothing written; or skip and report
# ----------------------------------------------------------------------------


def _bad_shape(task_dir):
  path = task_dir / 'labelsTr' / 'case_001.nii.gz'
  io.save_nifti(str(path), np.zeros((18, 16, 15), np.uint8),
                lps_affine((1.2, 1.0, 1.5)))
  return path, (r'label shape \(18, 16, 15\) does not match image shape '
                r'\(18, 16, 16\) of .*case_001.nii.gz$')


def _bad_affine(task_dir):
  path = task_dir / 'labelsTr' / 'case_001.nii.gz'
  label, affine, _ = io.load_nifti(str(path))
  affine[0, 3] += 5.0
  io.save_nifti(str(path), label, affine)
  return path, (r'label affine differs from the image affine of '
                r'.*imagesTr/case_001.nii.gz \(voxels up to 5 mm apart\)$')


def _missing_label(task_dir):
  path = task_dir / 'labelsTr' / 'case_001.nii.gz'
  path.unlink()
  return path, (r'label file not found \(for image .*imagesTr/'
                r'case_001.nii.gz\)$')


def _truncated(task_dir):
  path = task_dir / 'imagesTr' / 'case_001.nii.gz'
  data = path.read_bytes()
  path.write_bytes(data[:len(data) // 2])
  return path, r'cannot read NIfTI \(EOFError: .+\)$'


def _unknown_label(task_dir):
  path = task_dir / 'labelsTr' / 'case_001.nii.gz'
  label, affine, _ = io.load_nifti(str(path))
  label[0, 0, 0] = 7
  io.save_nifti(str(path), label, affine)
  return path, r'unknown label values \[7\] \(expected \[0, 1, 2\]\)$'


BAD_INPUTS = {'shape': _bad_shape, 'affine': _bad_affine,
              'missing_label': _missing_label, 'truncated': _truncated,
              'unknown_label': _unknown_label}


@pytest.mark.parametrize('kind', sorted(BAD_INPUTS))
def test_bad_input_stops_with_one_line_naming_the_file(task, tmp_path, kind):
  task_dir, _ = task
  path, problem = BAD_INPUTS[kind](task_dir)
  with pytest.raises(ValueError) as info:
    datasets.convert_decathlon(str(task_dir), str(tmp_path / 'out'))
  message = str(info.value)
  assert '\n' not in message
  assert message.startswith(f'{path}: '), message
  assert re.search(problem, message), message
  assert _leftovers(tmp_path) == []


@pytest.mark.parametrize('kind', ['truncated', 'unknown_label'])
def test_on_error_skip_records_the_case_and_converts_the_rest(task, tmp_path,
                                                              kind):
  task_dir, _ = task
  path, problem = BAD_INPUTS[kind](task_dir)
  out = tmp_path / 'out'
  summary = datasets.convert_decathlon(str(task_dir), str(out),
                                      on_error='skip', num_shards=1)
  assert [s['case_id'] for s in summary['skipped']] == ['case_001']
  assert summary['skipped'][0]['error'].startswith(f'{path}: ')
  assert re.search(problem, summary['skipped'][0]['error'])
  assert json.loads((out / 'dataset.json').read_text()) == summary
  records = read_back(out / '*.tfrecord')
  assert sorted(records) == ['case_000', 'case_002', 'case_003']
  assert summary['num_cases'] == 3
  split_file = json.loads((out / 'splits.json').read_text())
  fold = split_file['folds'][0]
  assert sorted(fold['train'] + fold['val']) == sorted(records)


def test_empty_folders_are_clear_errors(tmp_path):
  empty = tmp_path / 'empty'
  empty.mkdir()
  with pytest.raises(ValueError, match=f'^{empty}: no dataset.json'):
    datasets.convert_decathlon(str(empty), str(tmp_path / 'out'))
  with pytest.raises(ValueError, match=f'^{empty}: no BraTS case folders'):
    datasets.convert_brats(str(empty), str(tmp_path / 'out'))
  with pytest.raises(ValueError, match=f'^{empty}: no HDF5 files found'):
    datasets.convert_hdf5(str(empty), str(tmp_path / 'out'))
  pattern = str(empty / 'volume-{}.nii')
  with pytest.raises(ValueError, match='no LiTS volumes match'):
    datasets.convert_lits(pattern, str(empty / 'segmentation-{}.nii'),
                         str(tmp_path / 'out'))
  with pytest.raises(ValueError, match=f'^{empty}: no LiTS volume-N.nii'):
    datasets.convert_lits_to_npy(str(empty), str(tmp_path / 'out'))
  assert _leftovers(tmp_path) == []


def test_cli_prints_one_error_line_and_exits_1(task, tmp_path):
  task_dir, _ = task
  # Cut inside the header, so the run stops in the survey, before the
  # (slow) TensorFlow import; the library tests cover a cut in the data.
  path = task_dir / 'imagesTr' / 'case_001.nii.gz'
  path.write_bytes(path.read_bytes()[:60])
  result = run_cli('convert_decathlon.py', input_path=task_dir,
                   output_path=tmp_path / 'out')
  assert result.returncode == 1, result.stderr
  assert error_lines(result) == [
      line for line in result.stderr.splitlines()
      if line.startswith(f'error: {path}: cannot read NIfTI (')]
  assert len(error_lines(result)) == 1
  assert _leftovers(tmp_path) == []


# ----------------------------------------------------------------------------
# Splits and dataset.json
# ----------------------------------------------------------------------------


def test_k_fold_shards_hold_the_chosen_fold(task, tmp_path):
  task_dir, _ = task
  out = tmp_path / 'out'
  summary = datasets.convert_decathlon(str(task_dir), str(out), num_folds=2,
                                      fold=1, seed=5,
                                      target_spacing=None)
  split_file = json.loads((out / 'splits.json').read_text())
  assert split_file['num_folds'] == 2 and split_file['seed'] == 5
  fold = split_file['folds'][1]
  assert sorted(read_back(out / 'train-*.tfrecord')) == fold['train']
  assert sorted(read_back(out / 'val-*.tfrecord')) == fold['val']
  assert (summary['num_train'], summary['num_val']) == (2, 2)
  # The same seed gives the same folds.
  again = datasets.convert_decathlon(str(task_dir), str(tmp_path / 'again'),
                                    num_folds=2, fold=0, seed=5,
                                    target_spacing=None)
  assert json.loads((tmp_path / 'again' / 'splits.json').read_text()) == (
      split_file)
  assert again['num_val'] == len(split_file['folds'][0]['val'])
  # The training pipeline's split-file filter picks the same cases.
  cfg = config.build_config(None, {
      'num_classes': 3, 'data': {'split_file': str(out / 'splits.json'),
                                 'fold': 0}})
  ids = sorted(e['case_id'].numpy().decode() for e in
               pipeline.build_volume_dataset(cfg, str(out / '*.tfrecord')))
  assert ids == split_file['folds'][0]['val']


def test_dataset_json_summarises_cases_classes_and_geometry(task, tmp_path):
  task_dir, raw = task
  out = tmp_path / 'out'
  summary = datasets.convert_decathlon(str(task_dir), str(out), num_shards=2,
                                      validation_fraction=0.25)
  records = read_back(out / '*.tfrecord')
  assert summary['labels'] == LABELS
  assert summary['modalities'] == {'0': 'MRI'}
  assert (summary['num_train'], summary['num_val']) == (3, 1)
  assert summary['shards'] == {
      'train': ['train-00000-of-00002.tfrecord',
                'train-00001-of-00002.tfrecord'],
      'val': ['val-00000-of-00001.tfrecord']}
  counts = sum(np.bincount(r['label'].reshape(-1), minlength=3)
               for r in records.values())
  assert summary['class_voxel_counts'] == {str(k): int(counts[k])
                                           for k in range(3)}
  oriented = np.array([spatial.oriented_spacing(raw[c][2])
                       for c in sorted(raw)])
  np.testing.assert_allclose(summary['spacing']['median'],
                             np.median(oriented, axis=0))
  np.testing.assert_allclose(
      summary['preprocessing']['resample']['target_spacing'],
      np.median(oriented, axis=0))
  assert summary['preprocessing']['orientation'] == 'RAS'
  assert json.loads((out / 'dataset.json').read_text())[
      'fingerprint_version'] == 1
  by_id = {c['case_id']: c for c in summary['cases']}
  for case_id, record in records.items():
    entry = by_id[case_id]
    image, label, affine = raw[case_id]
    assert entry['original']['shape'] == list(label.shape)
    assert entry['original']['orientation'] == 'LPS'
    assert entry['stored']['orientation'] == 'RAS'
    assert entry['stored']['shape'] == list(record['label'].shape)
    np.testing.assert_allclose(entry['stored']['affine'], record['affine'],
                               rtol=1e-6, atol=1e-4)
    np.testing.assert_allclose(record['spacing'], np.median(oriented, axis=0),
                               rtol=1e-6)
    # Foreground intensity statistics before normalisation (class means
    # are 100 / 250 / 400 plus noise).
    assert 150 < entry['intensity']['mean'][0] < 400
    # The fingerprint: noisy images are nonzero everywhere, so the crop
    # keeps the reoriented grid; each class is one blob (2 inside 1).
    assert entry['cropped']['shape'] == list(label.shape)
    np.testing.assert_allclose(entry['cropped']['spacing'],
                               spatial.oriented_spacing(affine))
    assert entry['nonzero_fraction'] == 1.0
    assert sorted(entry['components']) == ['1', '2']
    for k in (1, 2):
      assert entry['components'][str(k)]['count'] == 1
      assert entry['components'][str(k)]['largest_voxels'] == [
          int(np.sum(record['label'] == k))]
      np.testing.assert_allclose(entry['centroid_voxel'][str(k)],
                                 np.argwhere(record['label'] == k).mean(0))
    # Predictions map back onto the original grid.
    restored = spatial.restore_original(record['label'].astype(np.uint8), entry)
    dice = 2 * np.sum((restored > 0) & (label > 0)) / (
        np.sum(restored > 0) + np.sum(label > 0))
    assert dice > 0.9, (case_id, dice)


# ----------------------------------------------------------------------------
# Non-finite voxels and signals
# ----------------------------------------------------------------------------


def _with_nan(task_dir, case='case_002'):
  path = task_dir / 'imagesTr' / f'{case}.nii.gz'
  image, affine, _ = io.load_nifti(str(path))
  image = image.astype(np.float32)
  image[3, 4, 5] = np.nan
  image[1, 1, 1] = np.inf
  io.save_nifti(str(path), image, affine)
  return path


def test_a_nan_voxel_stops_at_its_file_or_is_replaced(task, tmp_path):
  task_dir, _ = task
  path = _with_nan(task_dir)
  result = run_cli('convert_decathlon.py', input_path=task_dir,
                   output_path=tmp_path / 'out')
  assert result.returncode == 1
  assert error_lines(result) == [
      f'error: {path}: 2 non-finite voxel(s) (NaN or inf); fix the file, or '
      "convert with --nan_to_num (NaN and -inf -> the channel's smallest "
      'finite value, +inf -> its largest)']
  assert _leftovers(tmp_path) == []
  datasets.convert_decathlon(str(task_dir), str(tmp_path / 'fixed'),
                             nan_to_num=True, target_spacing=None,
                             crop_nonzero=False)
  records = read_back(tmp_path / 'fixed' / '*.tfrecord')
  assert all(np.isfinite(r['image']).all() for r in records.values())


def test_sigterm_leaves_no_staging_folder(tmp_path):
  # Enough cases that the run is still converting when the signal comes.
  task_dir = tmp_path / 'Task02_Big'
  write_msd_task(str(task_dir), [((40, 40, 32), (1.0, 1.0, 1.5))] * 24)
  out = tmp_path / 'out'
  args = [sys.executable, str(REPO / 'data_preprocess' /
                              'convert_decathlon.py'),
          f'--input_path={task_dir}', f'--output_path={out}']
  proc = subprocess.Popen(args, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True)
  deadline = time.time() + 120
  while not list(tmp_path.glob('out.tmp-*')) and time.time() < deadline:
    time.sleep(0.05)
  proc.terminate()
  _, err = proc.communicate(timeout=120)
  assert proc.returncode == 128 + 15, err[-2000:]
  assert [l for l in err.splitlines() if l.startswith('error: ')] == [
      f'error: SIGTERM: conversion stopped; nothing was written to {out}']
  assert _leftovers(tmp_path) == []


def test_a_sigterm_that_lands_in_a_destructor_still_stops_the_run():
  # Python ignores an exception raised in __del__; the handler must not
  # lose the signal there.
  script = textwrap.dedent('''
      import signal, sys, time
      from unet3d.cli.convert import common_flags
      signal.signal(signal.SIGTERM, common_flags._raise_terminated)

      class Collected:
        def __del__(self):
          signal.raise_signal(signal.SIGTERM)

      try:
        Collected()
        time.sleep(5)
      except common_flags._Terminated:
        sys.exit(3)
      sys.exit(0)
      ''')
  proc = subprocess.run([sys.executable, '-c', script], capture_output=True,
                        text=True, timeout=60, cwd=str(REPO))
  assert proc.returncode == 3, proc.stderr[-2000:]


# ----------------------------------------------------------------------------
# Dataset fingerprint (what a planner reads from dataset.json)
# ----------------------------------------------------------------------------


# An LPS volume [14, 12, 10] whose nonzero voxels fill the box
# [2:12, 1:11, 2:8] (10 x 10 x 6 = 600 of 1680 voxels).
BOX = (slice(2, 12), slice(1, 11), slice(2, 8))
# Array axes of the transposed volume -> axes of the LPS one.
TO_LPS_AXES = np.array([[0, 1, 0], [0, 0, 1], [1, 0, 0]])


def _fingerprint_volume(layout: str):
  """(image [X, Y, Z, 2], label, affine) of the boxed volume; 'lps', or
  'transposed' (array axes (S, L, P): reoriented, the same RAS volume)."""
  rng = np.random.default_rng(3)
  image = np.zeros((14, 12, 10, 2), np.float32)
  image[BOX] = rng.uniform(10, 100, (10, 10, 6, 2))
  label = np.zeros((14, 12, 10), np.uint8)
  label[3:6, 2:5, 2:5] = 1  # 27 voxels
  label[8:10, 7:9, 5:7] = 1  # 8 voxels, apart from the first
  label[3:5, 7:10, 6:8] = 2  # 12 voxels
  affine = lps_affine((0.8, 0.8, 3.0))
  if layout == 'transposed':
    image, label = image.transpose(2, 0, 1, 3), label.transpose(2, 0, 1)
    permute = np.eye(4)
    permute[:3, :3] = TO_LPS_AXES
    affine = affine @ permute
  return image, label, affine


def _process(image, label, affine, **plan):
  raw = cases.RawCase(image, label, affine)
  plan = cases.Plan(norms=(intensity.ChannelNorm(),) * image.shape[-1], **plan)
  return cases.process_case(cases.Case('case_000', ('image.nii.gz',),
                                       'label.nii.gz'),
                            lambda case: raw, plan, is_train=True)


@pytest.mark.parametrize('layout', ['lps', 'transposed'])
def test_case_fingerprint_of_a_cropped_reoriented_case(layout):
  image, label, affine = _fingerprint_volume(layout)
  records, info = _process(image, label, affine)
  # RAS: the LPS box with its first two axes flipped, not resampled.
  lps_image, lps_label, _ = _fingerprint_volume('lps')
  stored = np.flip(lps_label[BOX], (0, 1))
  np.testing.assert_array_equal(records[0].label, stored)
  assert info['cropped']['shape'] == [10, 10, 6]
  np.testing.assert_allclose(info['cropped']['spacing'], [0.8, 0.8, 3.0])
  assert info['nonzero_fraction'] == pytest.approx(600 / 1680)
  assert info['components'] == {
      '1': {'count': 2, 'largest_voxels': [27, 8]},
      '2': {'count': 1, 'largest_voxels': [12]}}
  assert sorted(info['centroid_voxel']) == ['1', '2']
  for k in (1, 2):
    np.testing.assert_allclose(info['centroid_voxel'][str(k)],
                               np.argwhere(stored == k).mean(0))
  # Class 2 at LPS [3:5, 7:10, 6:8]: cropped [1:3, 6:9, 4:6], then axes
  # 0 and 1 flipped within 10 voxels.
  np.testing.assert_allclose(info['centroid_voxel']['2'], [7.5, 2.0, 4.5])
  # Foreground intensities before normalisation, per channel.
  values = lps_image[lps_label > 0].astype(np.float64)
  assert info['intensity']['count'] == [47, 47]
  for key, q in (('percentile_00_5', 0.5), ('median', 50),
                 ('percentile_99_5', 99.5)):
    np.testing.assert_allclose(info['intensity'][key],
                               np.percentile(values, q, axis=0))
  # Plain Python, as dataset.json stores it.
  entry = {k: v for k, v in info.items() if k != 'samples'}
  assert json.loads(json.dumps(entry)) == entry


# nonzero_fraction is the nonzero box's 600 of 1680 voxels whether or not
# the plan crops to it: the planner reads it as "zero background".
@pytest.mark.parametrize('layout, plan, shape, spacing, fraction', [
    ('lps', dict(crop_nonzero=False), [14, 12, 10], [0.8, 0.8, 3.0],
     600 / 1680),
    ('transposed', dict(crop_nonzero=False), [14, 12, 10], [0.8, 0.8, 3.0],
     600 / 1680),
    ('transposed', dict(reorient=False, crop_nonzero=False), [10, 14, 12],
     [3.0, 0.8, 0.8], 600 / 1680),
    ('transposed', dict(reorient=False), [6, 10, 10], [3.0, 0.8, 0.8],
     600 / 1680),
])
def test_cropped_geometry_follows_the_plan(layout, plan, shape, spacing,
                                           fraction):
  image, label, affine = _fingerprint_volume(layout)
  # Resampling comes after: it changes the stored grid, not `cropped`.
  _, info = _process(image, label, affine, target_spacing=(1.6, 1.6, 1.5),
                     **plan)
  assert info['cropped']['shape'] == shape
  np.testing.assert_allclose(info['cropped']['spacing'], spacing)
  assert info['nonzero_fraction'] == pytest.approx(fraction)
  np.testing.assert_allclose(info['stored']['spacing'], [1.6, 1.6, 1.5])
  # The survey, which decides the nonzero mask before any case is
  # processed, finds the very number dataset.json records.
  survey = survey_lib.survey_case(
      cases.Case('case_000', ('image.nii.gz',)),
      lambda case: (image.shape, affine),
      lambda case: cases.RawCase(image, label, affine),
      reorient=plan.get('reorient', True), sample_channels=[],
      num_samples=0, seed=0, nonzero_fraction=True)
  assert survey['nonzero_fraction'] == info['nonzero_fraction']


def test_the_survey_reads_images_only_for_what_it_reports():
  image, label, affine = _fingerprint_volume('lps')
  loads = []

  def load(case):
    loads.append(case.case_id)
    return cases.RawCase(image, label, affine)

  case = cases.Case('case_000', ('image.nii.gz',))
  header = survey_lib.survey_case(case, lambda c: (image.shape, affine), load,
                                  True, [], 10, 0)
  assert not loads and set(header) == {'spacing', 'shape'}
  both = survey_lib.survey_case(case, lambda c: (image.shape, affine), load,
                                True, [0], 10, 0, nonzero_fraction=True)
  assert loads == ['case_000']
  assert both['nonzero_fraction'] == pytest.approx(600 / 1680)
  assert both['samples'].shape == (10, 1)


def test_components_are_face_connected_per_mask_channel():
  masks = np.zeros((12, 12, 12, 4), np.uint8)
  # Channel 0: two cubes sharing only an edge; channel 1: only a corner;
  # channel 2: a face (one component); channel 3 is empty.
  masks[0:3, 0:3, 0:3, 0] = 1
  masks[3:5, 3:5, 0:2, 0] = 1
  masks[6:8, 6:8, 6:8, 1] = 1
  masks[8:9, 8:9, 8:9, 1] = 1
  masks[0:2, 8:10, 8:10, 2] = 1
  masks[2:4, 8:10, 8:10, 2] = 1
  image = np.ones((12, 12, 12, 1), np.float32)
  _, info = _process(image, masks, np.eye(4), reorient=False,
                     crop_nonzero=False)
  assert info['label_type'] == 'multi_label'
  assert info['components'] == {
      '0': {'count': 2, 'largest_voxels': [27, 8]},
      '1': {'count': 2, 'largest_voxels': [8, 1]},
      '2': {'count': 1, 'largest_voxels': [16]}}
  for k in range(3):
    np.testing.assert_allclose(info['centroid_voxel'][str(k)],
                               np.argwhere(masks[..., k]).mean(0))
  assert '3' not in info['centroid_voxel']


def test_at_most_ten_component_sizes_largest_first():
  label = np.zeros((12, 24, 3), np.uint8)
  # 12 bars along axis 0, of 1..12 voxels, a voxel apart along axis 1.
  for length in range(1, 13):
    label[:length, 2 * (length - 1), 1] = 1
  image = np.ones(label.shape + (1,), np.float32)
  _, info = _process(image, label, np.eye(4), reorient=False,
                     crop_nonzero=False)
  assert info['components'] == {
      '1': {'count': 12, 'largest_voxels': list(range(12, 2, -1))}}

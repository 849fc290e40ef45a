"""Tests for unet3d/inference/predict.py and `unet_main.py --mode=predict`."""

import csv
import os
import re
import shutil
import subprocess
import sys

import nibabel as nib
import numpy as np
import pytest

from tests import test_unet_main
from tests.preprocess import test_convert_common as common
from unet3d import config
from unet3d import run_dir
from unet3d.preprocess import cases
from unet3d.preprocess import datasets
from unet3d.preprocess import io
from unet3d.preprocess import dataset_json
from unet3d.inference import predict
from unet3d.inference import prediction_files

unet_main = test_unet_main.unet_main

SIZE = 16
# Class intensities of common.write_msd_task (channel 0): 100, 250, 400.
THRESHOLDS = (175.0, 325.0)


def _cfg(**values):
  cfg = config.merge(config.Config(), {
      'num_classes': 3, 'num_base_filters': 2, 'depth': 2,
      'input_image_size': [SIZE] * 3, 'predict_batch_size': 4,
      'distribution_strategy': 'cpu'})
  cfg = config.merge(cfg, values)
  config.validate(cfg)
  return cfg


def _zero_border(path, width=2):
  """Zeroes the image's outer voxels, so crop_to_nonzero has work to do,
  and one inner corner, so a nonzero mask differs from the crop box."""
  image, affine, _ = io.load_nifti(str(path))
  image = image.copy()
  inner = tuple(slice(width, s - width) for s in image.shape[:3])
  kept = image[inner].copy()
  image[...] = 0
  image[inner] = kept
  image[width:width + 4, width:width + 4, width:width + 4] = 0
  io.save_nifti(str(path), image, affine)


def _convert(root, modalities=None, **options):
  """A tiny LPS, anisotropic MSD task (zero border on case_000), converted
  with median-spacing resampling. Returns (task_dir, out_dir, dataset_info)."""
  task_dir = root / 'Task01_Fake'
  common.write_msd_task(str(task_dir), common.SPECS, modalities=modalities)
  _zero_border(task_dir / 'imagesTr' / 'case_000.nii.gz')
  out = root / 'records'
  dataset_info = datasets.convert_decathlon(
      str(task_dir), str(out), num_shards=1, validation_fraction=0.25,
      **options)
  return task_dir, out, dataset_info


@pytest.fixture(scope='module')
def converted(tmp_path_factory):
  """One MRI channel, z-scored within the nonzero mask."""
  return _convert(tmp_path_factory.mktemp('converted'), nonzero_mask=True)


# ----------------------------------------------------------------------------
# Preprocessing: the converter's steps, replayed from dataset.json
# ----------------------------------------------------------------------------


@pytest.mark.parametrize('modalities', [None, {'0': 'CT', '1': 'MRI'}])
def test_preprocessing_reproduces_the_stored_records(converted, tmp_path,
                                                     modalities):
  # MRI in the nonzero mask; CT (dataset clip, mean, std) + MRI in 4D files.
  task_dir, out, dataset_info = (converted if modalities is None else
                                 _convert(tmp_path, modalities))
  assert dataset_info['preprocessing']['resample']['target_spacing']
  records = common.read_back(out / '*.tfrecord')
  by_id = {c['case_id']: c for c in dataset_info['cases']}
  assert by_id['case_000']['nonzero_crop']['start'] == [2, 2, 2]
  for case_id in ('case_000', 'case_001'):
    image, affine = cases.read_images(
        [str(task_dir / 'imagesTr' / f'{case_id}.nii.gz')])
    stored, stored_affine, record = predict.preprocess_for_inference(
        image, affine, dataset_info)
    entry = by_id[case_id]
    np.testing.assert_array_equal(stored, records[case_id]['image'])
    np.testing.assert_array_equal(stored_affine, entry['stored']['affine'])
    assert record['original']['shape'] == entry['original']['shape']
    np.testing.assert_array_equal(record['original']['affine'],
                                  entry['original']['affine'])


@pytest.mark.parametrize('mutate, message', [
    (lambda p: p.pop('resample'), "preprocessing has no key 'resample'"),
    (lambda p: p.update(orientation='LPS'),
     'preprocessing.orientation: expected RAS or unchanged'),
    (lambda p: p['normalization'][0].update(scheme='minmax'),
     r'preprocessing.normalization\[0\].scheme: expected ct, zscore or none'),
])
def test_unreadable_preprocessing_names_the_key(converted, mutate, message):
  _, _, dataset_info = converted
  info = {'preprocessing': {k: (list(map(dict, v)) if k == 'normalization'
                                else v)
                            for k, v in dataset_info['preprocessing'].items()}}
  mutate(info['preprocessing'])
  with pytest.raises(ValueError, match=f'^ds.json: {message}'):
    dataset_json.plan_from_dataset_info(info, source='ds.json')


# ----------------------------------------------------------------------------
# Back onto the input grid
# ----------------------------------------------------------------------------


def _ct_info(resample):
  """dataset.json preprocessing for one CT-like channel with fixed values."""
  return {'preprocessing': {
      'orientation': 'RAS', 'crop_to_nonzero': True, 'resample': resample,
      'image_interpolation': 'spline order 3',
      'label_interpolation': 'one-hot linear',
      'normalization': [{'scheme': 'ct', 'clip': [0.0, 500.0], 'mean': 250.0,
                         'std': 100.0}]}}


def _threshold_predict_fn(batch):
  """One-hot of the class whose intensity range holds the voxel, from the
  normalised image ((x - 250) / 100)."""
  raw = batch[..., 0] * 100.0 + 250.0
  classes = np.digitize(raw, THRESHOLDS)
  return np.eye(3, dtype=np.float32)[classes]


@pytest.mark.parametrize('resample, min_agreement', [
    (None, 1.0), ({'target_spacing': [1.4, 1.4, 1.4]}, 0.95)])
def test_segmentation_lands_on_the_input_grid(tmp_path, resample,
                                              min_agreement):
  shape, spacing = (18, 16, 12), (1.0, 1.2, 2.0)
  label = common.blobs(shape, seed=3)
  rng = np.random.default_rng(0)
  image = (np.array([100.0, 250.0, 400.0])[label] +
           rng.normal(0, 10, shape)).astype(np.float32)
  image[:2] = 0  # a zero slab that crop_to_nonzero removes
  label[:2] = 0
  affine = common.lps_affine(spacing)
  source = tmp_path / 'scan.nii.gz'
  io.save_nifti(str(source), image, affine)
  out = predict.predict_file(str(source), str(tmp_path / 'out' / 'seg.nii.gz'),
                             _threshold_predict_fn, _cfg(),
                             _ct_info(resample))
  written = nib.load(out)
  assert written.shape == shape
  assert written.get_data_dtype() == np.uint8
  np.testing.assert_allclose(written.affine, nib.load(source).affine)
  segmentation = np.asarray(written.dataobj)
  agreement = np.mean(segmentation == label)
  assert agreement >= min_agreement, agreement
  if resample is None:
    np.testing.assert_array_equal(segmentation, label)
  assert sorted(os.listdir(tmp_path / 'out')) == ['seg.nii.gz']


def test_sigmoid_models_write_one_mask_per_channel(tmp_path):
  shape = (12, 10, 8)
  label = common.blobs(shape, seed=1)
  image = np.array([100.0, 250.0, 400.0], np.float32)[label]
  source = tmp_path / 'scan.nii'
  io.save_nifti(str(source), image, common.lps_affine((1.0, 1.0, 1.5)))

  def masks(batch):  # two region masks: class >= 1 and class 2
    classes = _threshold_predict_fn(batch).argmax(-1)
    return np.stack([classes >= 1, classes == 2], -1).astype(np.float32)

  out = predict.predict_file(
      str(source), str(tmp_path / 'seg.nii.gz'), masks,
      _cfg(model={'output_activation': 'sigmoid'}), _ct_info(None))
  segmentation = np.asarray(nib.load(out).dataobj)
  assert segmentation.shape == shape + (2,)
  np.testing.assert_array_equal(segmentation[..., 0], label >= 1)
  np.testing.assert_array_equal(segmentation[..., 1], label == 2)


# ----------------------------------------------------------------------------
# The mode, end to end
# ----------------------------------------------------------------------------


@pytest.fixture(scope='module')
def trained(converted, tmp_path_factory):
  """Two training steps on the converted task; returns the model_dir."""
  _, out, _ = converted
  model_dir = tmp_path_factory.mktemp('model')
  cfg = _cfg(model_dir=str(model_dir),
             training_file_pattern=str(out / 'train-*'),
             train_batch_size=1, train_steps=2, loss='dice_ce',
             use_index_label_in_train=True,
             train={'steps_per_loop': 2}, data={'shuffle_buffer': 1})
  unet_main.run('train', cfg)
  return str(model_dir)


def _run_main(*argv):
  return subprocess.run(
      [sys.executable, os.path.join(test_unet_main.REPO, 'unet_main.py')] +
      list(argv),
      capture_output=True, text=True, timeout=300,
      env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL='3'))


@pytest.fixture(scope='module')
def predicted(converted, trained, tmp_path_factory):
  """`--mode=predict` through the CLI on case_000 and case_001; returns
  (the finished process, the output folder)."""
  task_dir, _, _ = converted
  out = tmp_path_factory.mktemp('predicted') / 'seg'
  # dataset.json is found beside the training shards of params.yaml.
  proc = _run_main('--mode=predict', f'--model_dir={trained}',
                   '--params_override=predict.input_pattern='
                   f'{task_dir}/imagesTr/case_00[01].nii.gz,'
                   f'predict.output_dir={out}')
  return proc, out


def test_cli_segments_nifti_files_with_their_geometry(converted, predicted):
  task_dir, _, _ = converted
  proc, out = predicted
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert sorted(os.listdir(out)) == ['case_000_seg.nii.gz',
                                     'case_001_seg.nii.gz']
  for case_id in ('case_000', 'case_001'):
    source = nib.load(task_dir / 'imagesTr' / f'{case_id}.nii.gz')
    written = nib.load(out / f'{case_id}_seg.nii.gz')
    assert written.shape == source.shape
    np.testing.assert_allclose(written.affine, source.affine)
    assert written.get_data_dtype() == np.uint8
    values = np.unique(np.asarray(written.dataobj))
    assert values.min() >= 0 and values.max() < 3
    assert f'{case_id}.nii.gz -> {out / case_id}_seg.nii.gz' in proc.stdout


def test_evaluate_folder_scores_what_predict_wrote(converted, predicted,
                                                   tmp_path):
  """Our own predict's `_seg` outputs, scored against the task's labels:
  dice per case and class equals numpy's on the written files."""
  from unet3d.evaluation import folder  # pylint: disable=g-import-not-at-top
  task_dir, _, _ = converted
  proc, out = predicted
  assert proc.returncode == 0, proc.stderr[-2000:]
  labels = tmp_path / 'labels'
  labels.mkdir()
  for case_id in ('case_000', 'case_001'):
    shutil.copy(task_dir / 'labelsTr' / f'{case_id}.nii.gz', labels)
  report_dir = tmp_path / 'scores'
  folder.evaluate_folder(
      config.Config(), folder.FolderOptions(str(labels), str(out),
                                            str(report_dir), num_classes=3))
  with open(report_dir / 'metrics.csv') as f:
    rows = list(csv.DictReader(f))
  assert {r['case'] for r in rows} == {'case_000', 'case_001'}
  for row in rows:
    label = np.asarray(nib.load(labels / f"{row['case']}.nii.gz").dataobj)
    seg = np.asarray(nib.load(out / f"{row['case']}_seg.nii.gz").dataobj)
    c = int(row['class'].rsplit('_', 1)[-1])  # class_N without names
    p, t = seg == c, label == c
    expected = (1.0 if not p.any() and not t.any() else
                2.0 * (p & t).sum() / (p.sum() + t.sum()))
    assert float(row['dice']) == pytest.approx(expected, abs=1e-6)


def _truncated(tmp_path):
  good = tmp_path / 'good.nii.gz'
  io.save_nifti(str(good), np.random.default_rng(0).normal(
      size=(16, 16, 16)).astype(np.float32), np.eye(4))
  bad = tmp_path / 'bad.nii.gz'
  bad.write_bytes(good.read_bytes()[:len(good.read_bytes()) // 2])
  good.unlink()
  return str(bad), r'cannot read NIfTI \(EOFError: .+\)$'


def _header_cut(tmp_path):
  path, _ = _truncated(tmp_path)
  with open(path, 'r+b') as f:
    f.truncate(60)
  return path, r'cannot read NIfTI \(.+\)$'


def _missing(tmp_path):
  return str(tmp_path / 'nope.nii.gz'), 'file not found'


def _no_match(tmp_path):
  return str(tmp_path / 'scans' / '*.nii.gz'), 'no files match'


def _two_channels(tmp_path):
  path = tmp_path / 'two.nii.gz'
  io.save_nifti(str(path), np.ones((8, 8, 8, 2), np.float32), np.eye(4))
  return str(path), (r'2 channel\(s\), but the model expects num_channels=1 '
                     r'\(a 3D volume, or 4D \[X, Y, Z, C\]\)$')


BAD_INPUTS = {'truncated': _truncated, 'header_cut': _header_cut,
              'missing': _missing, 'no_match': _no_match,
              'two_channels': _two_channels}


@pytest.mark.parametrize('kind', sorted(BAD_INPUTS))
def test_bad_input_is_one_line_naming_the_file(trained, tmp_path, kind):
  path, problem = BAD_INPUTS[kind](tmp_path)
  out = tmp_path / 'seg'
  cfg = config.merge(run_dir.load_params(trained), {
      'predict': {'input_pattern': path, 'output_dir': str(out)}})
  with pytest.raises(ValueError) as info:
    unet_main.run('predict', cfg)
  message = str(info.value)
  assert '\n' not in message
  assert message.startswith(f'{path}: '), message
  assert re.search(problem, message), message
  assert not out.exists() or not os.listdir(out)


def test_cli_error_for_a_corrupt_file_leaves_no_output(trained, tmp_path):
  path, _ = _truncated(tmp_path)
  out = tmp_path / 'seg'
  proc = _run_main('--mode=predict', f'--model_dir={trained}',
                   f'--params_override=predict.input_pattern={path},'
                   f'predict.output_dir={out}')
  assert proc.returncode == 1
  errors = common.error_lines(proc)
  assert len(errors) == 1, proc.stderr[-2000:]
  assert errors[0].startswith(f'error: {path}: cannot read NIfTI (')
  # One input: its error is the one line, not also a live `failed:` line.
  assert not [l for l in proc.stderr.splitlines() if l.startswith('failed:')]
  assert not out.exists() or not os.listdir(out)


def test_missing_keys_and_checkpoint_name_the_key(trained, tmp_path):
  scan = tmp_path / 'scan.nii.gz'
  io.save_nifti(str(scan), np.ones((8, 8, 8), np.float32), np.eye(4))
  base = {'predict': {'input_pattern': str(scan),
                      'output_dir': str(tmp_path / 'seg')}}
  cases = [
      ({'predict': {'input_pattern': None}},
       'predict.input_pattern: required for predict'),
      ({'predict': {'output_dir': None}},
       'predict.output_dir: required for predict'),
      ({}, 'predict.dataset_json: required'),
      ({'predict': {'dataset_json': str(tmp_path / 'x.json')}},
       f'predict.dataset_json: {tmp_path}/x.json not found'),
      ({'predict': {'preprocessing': 'none'},
        'model_dir': str(tmp_path / 'empty')},
       'model_dir: no checkpoint in'),
  ]
  for override, message in cases:
    cfg = config.merge(config.merge(_cfg(), base), override)
    with pytest.raises(config.ConfigError, match=f'^{message}'):
      predict.predict_files(cfg)



# ----------------------------------------------------------------------------
# Bad files do not stop the batch; inputs; optional outputs
# ----------------------------------------------------------------------------


def _scan(path, shape=(16, 16, 12), channels=None, seed=0):
  rng = np.random.default_rng(seed)
  size = shape + ((channels,) if channels else ())
  io.save_nifti(str(path), rng.normal(size=size).astype(np.float32),
                np.diag([1.0, 1.0, 1.5, 1.0]))
  return str(path)


def test_a_folder_with_bad_files_predicts_the_others_and_names_them(
    converted, trained, tmp_path):
  task_dir, _, _ = converted
  scans = tmp_path / 'scans'
  scans.mkdir()
  for case_id in ('case_000', 'case_001'):
    shutil.copy(task_dir / 'imagesTr' / f'{case_id}.nii.gz', scans)
  corrupt, _ = _truncated(tmp_path)
  shutil.move(corrupt, scans / 'corrupt.nii.gz')
  _scan(scans / 'two.nii.gz', channels=2)
  (scans / 'notes.txt').write_text('not a volume')  # not listed
  out = tmp_path / 'seg'
  proc = _run_main('--mode=predict', f'--model_dir={trained}',
                   f'--input={scans}', f'--output_dir={out}')
  assert proc.returncode == 1, proc.stderr[-2000:]
  assert sorted(os.listdir(out)) == ['case_000_seg.nii.gz',
                                     'case_001_seg.nii.gz']
  failures = [l for l in proc.stderr.splitlines() if l.startswith('failed:')]
  assert failures == [
      f'failed: {scans}/two.nii.gz: 2 channel(s), but the model expects '
      'num_channels=1 (a 3D volume, or 4D [X, Y, Z, C])',
      f'failed: {scans}/corrupt.nii.gz: cannot read NIfTI (EOFError: '
      + failures[1].split('(EOFError: ', 1)[1]]
  assert 'predicted 2 of 4 file(s)' in proc.stdout
  assert f'  {scans}/corrupt.nii.gz: cannot read NIfTI' in proc.stdout
  errors = common.error_lines(proc)
  assert errors == [f'error: 2 of 4 input files failed: '
                    f'{scans}/corrupt.nii.gz, {scans}/two.nii.gz']


def test_input_accepts_files_folders_and_globs(tmp_path):
  (tmp_path / 'a').mkdir()
  first = _scan(tmp_path / 'a' / 'x.nii.gz')
  second = _scan(tmp_path / 'a' / 'y.nii')
  (tmp_path / 'a' / 'z.json').write_text('{}')
  third = _scan(tmp_path / 'w.nii.gz')
  files = prediction_files
  assert files.input_files(str(tmp_path / 'a')) == [first, second]
  assert files.input_files(f'{tmp_path}/a/*.nii*, {third}') == [
      first, second, third]
  # A glob keeps other files; they fail one by one in the run.
  assert files.input_files(f'{tmp_path}/a/z*') == [
      str(tmp_path / 'a' / 'z.json')]
  with pytest.raises(ValueError, match=r'z.json: expected a .nii or .nii.gz'):
    files.check_input(str(tmp_path / 'a' / 'z.json'), 1)
  (tmp_path / 'empty').mkdir()
  with pytest.raises(ValueError, match='empty: no .nii or .nii.gz files'):
    files.input_files(str(tmp_path / 'empty'))


def test_largest_component_keeps_the_biggest_blob_per_class():
  labels = np.zeros((12, 12, 12), np.uint8)
  labels[0:3, 0:3, 0:3] = 1    # 27 voxels
  labels[6:8, 6:8, 6:8] = 1    # 8 voxels
  labels[10, 10, 10] = 1       # 1 voxel, diagonal neighbour of nothing
  labels[0:2, 8:10, 0:2] = 2   # 8 voxels
  labels[5, 0, 0] = 2          # 1 voxel
  kept = predict.keep_largest_component(labels, [1])
  expected = labels.copy()
  expected[6:8, 6:8, 6:8] = 0
  expected[10, 10, 10] = 0
  np.testing.assert_array_equal(kept, expected)  # class 2 untouched
  both = predict.keep_largest_component(labels, [1, 2])
  assert both[5, 0, 0] == 0 and (both == 2).sum() == 8
  # Face connectivity: two voxels touching at an edge are two components.
  edge = np.zeros((4, 4, 4), np.uint8)
  edge[0, 0, 0] = edge[1, 1, 0] = edge[2, 2, 0] = 1
  edge[3, 3, 3] = 1
  assert predict.keep_largest_component(edge, [1]).sum() == 1
  # Masks [X, Y, Z, K]: per channel.
  masks = np.stack([labels == 1, labels == 2], -1).astype(np.uint8)
  kept = predict.keep_largest_component(masks, [0, 1])
  np.testing.assert_array_equal(kept[..., 0], expected == 1)
  assert kept[..., 1].sum() == 8


def test_probabilities_are_written_as_nifti_and_hdf5(tmp_path):
  import h5py  # pylint: disable=g-import-not-at-top
  shape = (18, 16, 12)
  label = common.blobs(shape, seed=3)
  image = np.array([100.0, 250.0, 400.0], np.float32)[label]
  image[:3] = 0  # cropped away by crop_to_nonzero
  source = tmp_path / 'scan.nii.gz'
  io.save_nifti(str(source), image, common.lps_affine((1.0, 1.2, 2.0)))

  def soft(batch):  # smooth probabilities of the threshold classes
    return 0.7 * _threshold_predict_fn(batch) + 0.1

  cfg = _cfg(predict={'largest_component': True})
  outputs = {}
  for kind in ('nifti', 'hdf5'):
    out = tmp_path / kind / 'scan_seg.nii.gz'
    probabilities = prediction_files.probabilities_path(
        str(tmp_path / kind), str(source), kind)
    predict.predict_file(str(source), str(out), soft, cfg, _ct_info(None),
                         probabilities_out=probabilities,
                         class_names=['bg', 'a', 'b'])
    outputs[kind] = probabilities
    segmentation = np.asarray(nib.load(out).dataobj)
  written = nib.load(outputs['nifti'])
  assert outputs['nifti'].endswith('scan_probabilities.nii.gz')
  assert written.get_data_dtype() == np.uint16  # scaled: 2 bytes a voxel
  np.testing.assert_allclose(written.affine, nib.load(source).affine)
  probs = written.get_fdata().astype(np.float32)
  assert probs.shape == shape + (3,)
  np.testing.assert_allclose(probs.sum(-1), 1.0, atol=2e-3)
  # Inside the crop: the model's values; the zero slab: background 1.
  np.testing.assert_allclose(
      probs[3:], 0.7 * np.eye(3)[np.digitize(image[3:], THRESHOLDS)] + 0.1,
      atol=1e-3)
  np.testing.assert_allclose(probs[:3], np.broadcast_to([1.0, 0, 0],
                                                        probs[:3].shape),
                             atol=1e-3)
  expected = predict.keep_largest_component(np.argmax(probs, -1), [1, 2])
  np.testing.assert_array_equal(segmentation, expected)
  with h5py.File(outputs['hdf5']) as f:
    dataset = f['predictions']
    assert dataset.dtype == np.float16 and dataset.shape == (3, 12, 16, 18)
    assert dataset.attrs['axis_order'] == 'CZYX'
    assert list(dataset.attrs['class_names']) == ['bg', 'a', 'b']
    np.testing.assert_allclose(dataset[...].astype(np.float32),
                               np.transpose(probs, (3, 2, 1, 0)), atol=1e-3)


def test_an_ensemble_of_copies_predicts_what_the_model_does(
    converted, trained, tmp_path):
  task_dir, _, _ = converted
  copy = tmp_path / 'copy'
  shutil.copytree(trained, copy)
  scan = str(task_dir / 'imagesTr' / 'case_001.nii.gz')
  # The command's config resolution and predict mode, in this process (the
  # CLI's exit codes and stderr have their own tests).
  for name, model_dir in (('single', trained), ('pair', f'{trained},{copy}')):
    flags = test_unet_main._flags([  # pylint: disable=protected-access
        '--mode=predict', f'--model_dir={model_dir}', f'--input={scan}',
        f'--output_dir={tmp_path / name}',
        '--params_override=inference.mirror_axes=[0,2]'])
    try:
      cfg = unet_main.resolve_config(flags)
      assert cfg.inference.ensemble == (
          [] if name == 'single' else [trained, str(copy)])
      unet_main.run('predict', cfg)
    finally:
      flags.unparse_flags()
  single = np.asarray(nib.load(tmp_path / 'single' / 'case_001_seg.nii.gz')
                      .dataobj)
  pair = np.asarray(nib.load(tmp_path / 'pair' / 'case_001_seg.nii.gz')
                    .dataobj)
  np.testing.assert_array_equal(single, pair)


# ----------------------------------------------------------------------------
# Non-finite voxels; an output folder that cannot be written
# ----------------------------------------------------------------------------


def _blob_scan(path, spoil=None):
  """A CT-like scan that `_threshold_predict_fn` segments into blobs, its
  voxels spoiled by `spoil(image)`; returns (path, label)."""
  shape = (18, 16, 12)
  label = common.blobs(shape, seed=3)
  image = np.array([100.0, 250.0, 400.0], np.float32)[label]
  if spoil:
    spoil(image)
  io.save_nifti(str(path), image, common.lps_affine((1.0, 1.2, 2.0)))
  return str(path), label


def _nan(v):
  v[4, 5, 6] = np.nan


def _posinf(v):
  v[1, 1, 1] = np.inf


def _neginf(v):
  v[9, 9, 9] = -np.inf


def _nan_slab(v):
  v[:, :, 5] = np.nan


NONFINITE = {'nan': _nan, 'posinf': _posinf, 'neginf': _neginf,
             'nan_slab': _nan_slab}


@pytest.mark.parametrize('kind', sorted(NONFINITE))
def test_nonfinite_voxels_follow_the_converters_rule(tmp_path, kind):
  path, label = _blob_scan(tmp_path / 'scan.nii.gz', NONFINITE[kind])
  image, _, count = predict.read_input(path, 1)
  raw = np.asarray(nib.load(path).dataobj)
  bad = ~np.isfinite(raw)
  assert count == int(bad.sum()) > 0 and np.isfinite(image).all()
  finite = raw[~bad]
  replaced = image[..., 0][bad]
  expected = np.where(raw[bad] == np.inf, finite.max(), finite.min())
  np.testing.assert_array_equal(replaced, expected)
  notes = {}
  out = predict.predict_file(path, str(tmp_path / 'seg.nii.gz'),
                             _threshold_predict_fn, _cfg(), _ct_info(None),
                             notes=notes)
  assert notes == {'nonfinite_voxels': count}
  segmentation = np.asarray(nib.load(out).dataobj)
  # Not a silent empty output: every finite voxel keeps its class.
  np.testing.assert_array_equal(segmentation[~bad], label[~bad])


@pytest.mark.parametrize('fill', [np.nan, np.inf, -np.inf])
def test_a_channel_without_finite_voxels_fails_its_file(tmp_path, fill):
  path, _ = _blob_scan(tmp_path / 'scan.nii.gz', lambda v: v.fill(fill))
  with pytest.raises(ValueError, match=(
      f'^{path}: channel 0 has no finite voxel \\(all NaN or inf\\); '
      'nothing to predict$')):
    predict.read_input(path, 1)


def test_predict_warns_and_reports_replaced_voxels_and_runs_the_others(
    trained, tmp_path):
  scans = tmp_path / 'scans'
  scans.mkdir()
  nan_path, _ = _blob_scan(scans / 'a_nan.nii.gz', _nan_slab)
  empty_path, _ = _blob_scan(scans / 'b_empty.nii.gz',
                             lambda v: v.fill(np.nan))
  clean_path, _ = _blob_scan(scans / 'c_clean.nii.gz')
  out = tmp_path / 'seg'
  proc = _run_main('--mode=predict', f'--model_dir={trained}',
                   f'--input={scans}', f'--output_dir={out}')
  assert proc.returncode == 1, proc.stderr[-2000:]
  assert sorted(os.listdir(out)) == ['a_nan_seg.nii.gz', 'c_clean_seg.nii.gz']
  count = 18 * 16
  # Quality control may flag the blob scans too: only non-finite lines here.
  warnings = [l for l in proc.stderr.splitlines()
              if l.startswith('warning: ') and 'non-finite' in l]
  assert warnings == [
      f'warning: {nan_path}: {count} non-finite voxel(s) (NaN or inf) '
      f"replaced (NaN and -inf -> the channel's smallest finite value, +inf "
      '-> its largest)']
  assert (f'{nan_path} -> {out}/a_nan_seg.nii.gz ({count} non-finite '
          'voxel(s) replaced)') in proc.stdout
  assert common.error_lines(proc) == [
      f'error: {empty_path}: channel 0 has no finite voxel (all NaN or inf); '
      'nothing to predict']
  del clean_path


def test_an_output_dir_that_cannot_be_written_stops_before_the_model(
    trained, tmp_path, monkeypatch):
  scan, _ = _blob_scan(tmp_path / 'scan.nii.gz')
  (tmp_path / 'afile').write_text('x')
  out = tmp_path / 'afile' / 'seg'  # a folder under a regular file
  cfg = config.merge(run_dir.load_params(trained), {
      'predict': {'input_pattern': scan, 'output_dir': str(out)}})

  def built(*args, **kwargs):
    raise AssertionError('the model was built before the write check')

  monkeypatch.setattr(predict.restore, 'restore_for_inference', built)
  with pytest.raises(ValueError) as info:
    predict.predict_files(cfg)
  assert re.fullmatch(f'predict.output_dir: cannot write to {out} '
                      r'\([^\n]+\)', str(info.value)), str(info.value)

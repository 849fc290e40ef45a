"""data_preprocess/convert_lits*.py and unet3d/preprocess/lits.py."""

import json

import numpy as np
import pytest

from tests.preprocess import test_convert_common as common
from unet3d.preprocess import datasets
from unet3d.preprocess import io
from unet3d.preprocess import preprocessing as pp

WINDOW = (-200.0, 250.0)
SPECS = [((20, 18, 16), (0.8, 0.8, 2.0)), ((22, 20, 14), (0.7, 0.7, 2.5)),
         ((18, 18, 16), (0.9, 0.9, 2.0))]


def _fake_ct(shape, seed):
  """HU volume: air, body, liver (1) with a tumour (2)."""
  rng = np.random.default_rng(seed)
  label = common.blobs(shape, seed)
  grid = np.meshgrid(*[np.arange(s) for s in shape], indexing='ij')
  body = sum(((g - s / 2) / (s / 2.2))**2 for g, s in zip(grid[:2],
                                                          shape[:2])) <= 1
  image = np.full(shape, -1000.0)
  image[body] = 30.0
  image[label == 1] = 80.0
  image[label == 2] = 300.0  # above the window's top
  image = (image + rng.normal(0, 30, shape)).astype(np.int16)
  return image, label


def _write_lits(folder, suffix='.nii'):
  raw = {}
  folder.mkdir(parents=True, exist_ok=True)
  for i, (shape, spacing) in enumerate(SPECS):
    image, label = _fake_ct(shape, i)
    affine = common.lps_affine(spacing)
    io.save_nifti(str(folder / f'volume-{i}{suffix}'), image, affine)
    io.save_nifti(str(folder / f'segmentation-{i}{suffix}'), label, affine)
    raw[f'volume-{i}'] = (image, label, affine)
  return raw


def _window_statistics(raw):
  """Mean and std of the windowed foreground (liver + tumour) voxels."""
  foreground = np.concatenate([np.clip(image[label > 0], *WINDOW)
                               for image, label, _ in raw.values()])
  return foreground.mean(), foreground.std()


def _source_index(record_affine, affine, shape):
  """For each stored voxel, the original voxel at the same world point."""
  to_original = np.linalg.inv(affine) @ np.asarray(record_affine, np.float64)
  index = np.argwhere(np.ones(shape, bool))
  source = np.rint(index @ to_original[:3, :3].T + to_original[:3, 3])
  return tuple(source.astype(int).T)


def test_npy_step_then_cli_with_two_processes(tmp_path):
  raw = _write_lits(tmp_path / 'Train')
  npy = tmp_path / 'Train_np'
  result = common.run_cli('convert_lits_nii_to_npy.py',
                          input_path=tmp_path / 'Train', output_path=npy,
                          num_processes=2)
  assert result.returncode == 0, result.stderr
  for case_id, (image, label, affine) in raw.items():
    number = case_id.split('-')[1]
    np.testing.assert_array_equal(np.load(npy / f'volume-{number}.npy'),
                                  image)
    np.testing.assert_array_equal(
        np.load(npy / f'segmentation-{number}.npy'), label)
    sidecar = json.loads((npy / f'volume-{number}.json').read_text())
    np.testing.assert_allclose(sidecar['affine'], affine, rtol=1e-6)

  out = tmp_path / 'records'
  result = common.run_cli(
      'convert_lits.py', image_file_pattern=npy / 'volume-{}.npy',
      label_file_pattern=npy / 'segmentation-{}.npy', output_path=out,
      output_size=8, validation_fraction=0.34, num_processes=2)
  assert result.returncode == 0, result.stderr
  summary = json.loads((out / 'dataset.json').read_text())
  assert summary['labels'] == {'0': 'background', '1': 'liver',
                               '2': 'tumor'}
  mean, std = _window_statistics(raw)
  norm = summary['preprocessing']['normalization'][0]
  assert norm['clip'] == list(WINDOW)
  np.testing.assert_allclose([norm['mean'], norm['std']], [mean, std],
                             rtol=1e-6)
  records = {**common.read_back(out / 'train-*.tfrecord'),
             **common.read_back(out / 'val-*.tfrecord')}
  assert sorted(records) == sorted(raw)
  assert (summary['num_train'], summary['num_val']) == (2, 1)
  median = np.median([pp.oriented_spacing(a) for _, _, a in raw.values()],
                     axis=0)
  for case_id, record in records.items():
    image, label, affine = raw[case_id]
    np.testing.assert_allclose(record['spacing'], median, rtol=1e-6)
    stored = record['image'][..., 0]
    assert stored.min() >= (WINDOW[0] - mean) / std - 1e-4
    assert stored.max() <= (WINDOW[1] - mean) / std + 1e-4
    # Cropped to the liver: each axis is the liver's extent, or 8 voxels.
    start, stop = pp.nonzero_bbox(record['label'] > 0)
    extent = stop - start
    assert np.all((extent == record['label'].shape) |
                  (np.array(record['label'].shape) == 8)), (extent,)
    # ... at the liver's place in the world.
    centroid = common.world_of(record['affine'],
                               np.argwhere(record['label'] > 0).mean(0))
    np.testing.assert_allclose(
        centroid, common.world_of(affine, np.argwhere(label > 0).mean(0)),
        atol=0.5)


def test_nifti_gz_directly_gives_windowed_hu_voxel_for_voxel(tmp_path):
  raw = _write_lits(tmp_path / 'Train', suffix='.nii.gz')
  out = tmp_path / 'records'
  datasets.convert_lits(str(tmp_path / 'Train' / 'volume-{}.nii.gz'),
                       str(tmp_path / 'Train' / 'segmentation-{}.nii.gz'),
                       str(out), crop_liver_region=False,
                       target_spacing=None, validation_fraction=0.0)
  mean, std = _window_statistics(raw)
  records = common.read_back(out / 'train-*.tfrecord')
  assert sorted(records) == sorted(raw)
  for case_id, record in records.items():
    image, label, affine = raw[case_id]
    # LPS -> RAS flips the first two axes.
    assert pp.axcodes(record['affine'].astype(np.float64)) == 'RAS'
    np.testing.assert_array_equal(record['label'], label[::-1, ::-1])
    source = _source_index(record['affine'], affine, record['label'].shape)
    np.testing.assert_allclose(
        record['image'][..., 0].reshape(-1),
        (np.clip(image[source], *WINDOW) - mean) / std, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(record['label'].reshape(-1), label[source])


def test_model_garden_resize_and_augmented_crops(tmp_path):
  raw = _write_lits(tmp_path / 'Train')
  out = tmp_path / 'records'
  summary = datasets.convert_lits(
      str(tmp_path / 'Train' / 'volume-{}.nii'),
      str(tmp_path / 'Train' / 'segmentation-{}.nii'), str(out),
      crop_liver_region=False, target_shape=(12, 12, 12), output_size=6,
      apply_data_aug=True, augment_times=3, validation_fraction=0.34)
  train = common.read_back(out / 'train-*.tfrecord')
  val = common.read_back(out / 'val-*.tfrecord')
  assert len(val) == 1 and summary['num_records'] == {'train': 8, 'val': 1}
  for case_id, record in {**train, **val}.items():
    if '_aug' in case_id:
      continue
    image, label, affine = raw[case_id]
    assert record['label'].shape == (12, 12, 12)
    # The field of view is kept: spacing = extent / 12 per (RAS) axis.
    extent = pp.oriented_spacing(affine) * np.array(label.shape)
    np.testing.assert_allclose(record['spacing'], extent / 12, rtol=1e-5)
  main_ids = [c for c in train if '_aug' not in c]
  assert sorted(train) == sorted(
      main_ids + [f'{c}_aug{k:02d}' for c in main_ids for k in range(3)])
  for case_id in main_ids:
    main = train[case_id]
    for k in range(3):
      crop = train[f'{case_id}_aug{k:02d}']
      assert crop['image'].shape == (6, 6, 6, 1)
      # A crop of the case, intensities scaled by one factor in [0.9, 1.1].
      offset = (np.linalg.inv(main['affine'].astype(np.float64)) @
                crop['affine'].astype(np.float64))[:3, 3]
      start = np.rint(offset).astype(int)
      window = tuple(slice(s, s + 6) for s in start)
      np.testing.assert_array_equal(crop['label'], main['label'][window])
      ratio = crop['image'] / main['image'][window]
      assert 0.9 - 1e-5 <= np.median(ratio) <= 1.1 + 1e-5
      np.testing.assert_allclose(crop['image'],
                                 main['image'][window] * np.median(ratio),
                                 rtol=1e-4, atol=1e-5)


def test_lits_flags_are_checked(tmp_path):
  with pytest.raises(ValueError, match='--image_file_pattern: .* must '
                     'contain one {}'):
    datasets.convert_lits(str(tmp_path / 'volume.nii'),
                         str(tmp_path / 'seg-{}.nii'), str(tmp_path / 'o'))
  _write_lits(tmp_path / 'Train')
  with pytest.raises(ValueError, match='--hu_window: expected low,high'):
    datasets.convert_lits(str(tmp_path / 'Train' / 'volume-{}.nii'),
                         str(tmp_path / 'Train' / 'segmentation-{}.nii'),
                         str(tmp_path / 'o'), hu_window=(250, -200))
  # shard_start/shard_stride select case numbers 1, 3, ...
  summary = datasets.convert_lits(
      str(tmp_path / 'Train' / 'volume-{}.nii'),
      str(tmp_path / 'Train' / 'segmentation-{}.nii'), str(tmp_path / 'o'),
      shard_start=1, shard_stride=2, validation_fraction=0.0)
  assert [c['case_id'] for c in summary['cases']] == ['volume-1']

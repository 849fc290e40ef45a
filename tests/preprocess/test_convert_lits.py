"""data_preprocess/convert_lits*.py and unet3d/preprocess/lits.py."""

import json

import numpy as np
import pytest

from tests.preprocess import test_convert_common as common
from unet3d.preprocess import datasets
from unet3d.preprocess import io
from unet3d.preprocess import spatial

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
  median = np.median([spatial.oriented_spacing(a) for _, _, a in raw.values()],
                     axis=0)
  for case_id, record in records.items():
    image, label, affine = raw[case_id]
    np.testing.assert_allclose(record['spacing'], median, rtol=1e-6)
    stored = record['image'][..., 0]
    assert stored.min() >= (WINDOW[0] - mean) / std - 1e-4
    assert stored.max() <= (WINDOW[1] - mean) / std + 1e-4
    # Cropped to the liver: each axis is the liver's extent, or 8 voxels.
    start, stop = spatial.nonzero_bbox(record['label'] > 0)
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
    assert spatial.axcodes(record['affine'].astype(np.float64)) == 'RAS'
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
    if '#aug' in case_id:
      continue
    image, label, affine = raw[case_id]
    assert record['label'].shape == (12, 12, 12)
    # The field of view is kept: spacing = extent / 12 per (RAS) axis.
    extent = spatial.oriented_spacing(affine) * np.array(label.shape)
    np.testing.assert_allclose(record['spacing'], extent / 12, rtol=1e-5)
  main_ids = [c for c in train if '#aug' not in c]
  assert sorted(train) == sorted(
      main_ids + [f'{c}#aug{k:02d}' for c in main_ids for k in range(3)])
  for case_id in main_ids:
    main = train[case_id]
    for k in range(3):
      crop = train[f'{case_id}#aug{k:02d}']
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


def _read_2d(pattern, size=(8, 8), channels=3):
  """2D records of `channels` channels (2 * context_slices + 1) parsed by
  the training pipeline, by record id."""
  from unet3d import config  # pylint: disable=g-import-not-at-top
  from unet3d.input import pipeline  # pylint: disable=g-import-not-at-top
  cfg = config.build_config(None, {
      'num_classes': 3, 'input_image_size': list(size),
      'num_channels': channels, 'model': {'spatial_dims': 2}})
  return {ex['case_id'].numpy().decode(): {k: v.numpy()
                                           for k, v in ex.items()}
          for ex in pipeline.build_volume_dataset(cfg, str(pattern))}


def test_2d_slices_with_neighbours_window_and_empty_slice_skipping(tmp_path):
  raw = _write_lits(tmp_path / 'Train')
  out = tmp_path / 'slices'
  result = common.run_cli(
      'convert_lits_2d.py',
      image_file_pattern=tmp_path / 'Train' / 'volume-{}.nii',
      label_file_pattern=tmp_path / 'Train' / 'segmentation-{}.nii',
      output_path=out, slice_size=0, skip_empty_slices=True,
      reorient=False, crop_nonzero=False, validation_fraction=0.34)
  assert result.returncode == 0, result.stderr
  summary = json.loads((out / 'dataset.json').read_text())
  assert summary['modalities'] == {'0': 'CT slice -1', '1': 'CT',
                                   '2': 'CT slice +1'}
  assert summary['labels'] == {'0': 'background', '1': 'liver', '2': 'tumor'}
  mean, std = _window_statistics(raw)
  train, val = _read_2d(out / 'train-*'), _read_2d(out / 'val-*')
  val_cases = {r.split('#')[0] for r in val}
  assert len(val_cases) == 1 and not val_cases & {r.split('#')[0]
                                                  for r in train}
  for records, is_train in ((train, True), (val, False)):
    by_case = {}
    for record_id, record in records.items():
      case_id, part = record_id.split('#')
      by_case.setdefault(case_id, []).append(int(part[1:]))
      image, label, affine = raw[case_id]
      k, depth = int(part[1:]), image.shape[2]
      assert record['image'].shape == image.shape[:2] + (3,)
      np.testing.assert_array_equal(record['label'], label[..., k])
      for c, z in enumerate((max(k - 1, 0), k, min(k + 1, depth - 1))):
        want = (np.clip(image[..., z], *WINDOW) - mean) / std
        np.testing.assert_allclose(record['image'][..., c], want, atol=2e-3)
      # In-plane spacing, and voxel (i, j) of slice k at original (i, j, k).
      np.testing.assert_allclose(record['spacing'], SPECS[int(case_id[-1])][
          1][:2], rtol=1e-6)
      np.testing.assert_allclose(common.world_of(record['affine'], (2, 3, 0)),
                                 common.world_of(affine, (2, 3, k)), atol=1e-4)
    for case_id, ks in by_case.items():
      label = raw[case_id][1]
      want = [k for k in range(label.shape[2])
              if label[..., k].any() or not is_train]
      assert sorted(ks) == want, (case_id, is_train)


def test_2d_slices_resized_in_plane_feed_the_2d_pipeline(tmp_path):
  raw = _write_lits(tmp_path / 'Train')
  out = tmp_path / 'slices'
  summary = datasets.convert_lits_2d(
      str(tmp_path / 'Train' / 'volume-{}.nii'),
      str(tmp_path / 'Train' / 'segmentation-{}.nii'), str(out),
      slice_size=8, context_slices=0, validation_fraction=0.0)
  assert summary['num_records']['train'] == sum(
      r[0].shape[2] for r in raw.values())
  from unet3d import config  # pylint: disable=g-import-not-at-top
  from unet3d.input import pipeline  # pylint: disable=g-import-not-at-top
  cfg = config.build_config(None, {
      'num_classes': 3, 'input_image_size': [8, 8], 'num_channels': 1,
      'train_batch_size': 4, 'training_file_pattern': str(out / 'train-*'),
      'model': {'spatial_dims': 2}, 'use_index_label_in_train': True,
      'seed': 0})
  images, labels = next(iter(pipeline.build_dataset(cfg, 'train')))
  assert images.shape == (4, 8, 8, 1) and labels.shape == (4, 8, 8)
  for record_id, record in _read_2d(out / 'train-*', channels=1).items():
    image, _, affine = raw[record_id.split('#')[0]]
    assert record['image'].shape == (8, 8, 1)
    # The field of view is kept: in-plane spacing = extent / 8 (RAS axes).
    extent = (spatial.oriented_spacing(affine) * np.array(image.shape))[:2]
    np.testing.assert_allclose(record['spacing'], extent / 8, rtol=1e-5)

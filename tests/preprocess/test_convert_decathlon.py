"""data_preprocess/convert_decathlon.py and unet3d/preprocess/decathlon.py."""

import json

import numpy as np

from tests.preprocess import test_convert_common as common
from unet3d.preprocess import datasets
from unet3d.preprocess import io
from unet3d.preprocess import preprocessing as pp

SPECS = [((16, 18, 14), (1.0, 1.0, 1.5)), ((18, 16, 16), (1.2, 1.0, 1.5)),
         ((16, 16, 12), (1.0, 1.1, 2.0)), ((16, 17, 15), (0.9, 1.0, 1.5))]


def _world_centroid(label, affine):
  index = np.argwhere(label > 0).mean(axis=0)
  return common.world_of(affine, index)


def test_cli_converts_a_4d_mri_task_with_resampling(tmp_path):
  task = tmp_path / 'Task01_BrainFake'
  raw = common.write_msd_task(str(task), SPECS,
                              modalities={'0': 'FLAIR', '1': 'T2'})
  out = tmp_path / 'records'
  result = common.run_cli('convert_decathlon.py', input_path=task,
                          output_path=out, num_folds=2, fold=1,
                          num_shards=1)
  assert result.returncode == 0, result.stderr
  assert 'wrote' in result.stdout
  summary = json.loads((out / 'dataset.json').read_text())
  splits = json.loads((out / 'splits.json').read_text())
  assert summary['modalities'] == {'0': 'FLAIR', '1': 'T2'}
  assert summary['num_channels'] == 2
  train = common.read_back(out / 'train-*.tfrecord')
  val = common.read_back(out / 'val-*.tfrecord')
  assert sorted(train) == splits['folds'][1]['train']
  assert sorted(val) == splits['folds'][1]['val']
  median = np.median([pp.oriented_spacing(raw[c][2]) for c in raw], axis=0)
  for case_id, record in {**train, **val}.items():
    image, label, affine = raw[case_id]
    assert record['image'].shape[-1] == 2
    np.testing.assert_allclose(record['spacing'], median, rtol=1e-6)
    np.testing.assert_allclose(io.spacing_of(record['affine']), median,
                               rtol=1e-5)
    # Each channel z-scored over the whole (resampled) image.
    for c in range(2):
      channel = record['image'][..., c]
      assert abs(channel.mean()) < 1e-4 and abs(channel.std() - 1) < 1e-4
      # The mean it was shifted by is the raw channel's (resampling
      # preserves it closely).
      assert abs(record['channel_mean'][c] / image[..., c].mean() - 1) < 0.03
    assert set(np.unique(record['label'])) <= {0, 1, 2}
    # The labelled region lies at the same place in the world.
    np.testing.assert_allclose(_world_centroid(record['label'],
                                               record['affine']),
                               _world_centroid(label, affine), atol=0.5)


def test_ct_channels_are_clipped_to_foreground_percentiles(tmp_path):
  task = tmp_path / 'Task03_LiverFake'
  raw = common.write_msd_task(str(task), SPECS[:3], modalities={'0': 'CT'})
  # Shift to CT-like values with outliers in the foreground.
  for i, case_id in enumerate(sorted(raw)):
    image, label, affine = raw[case_id]
    image = image - 1100.0
    image[..., 0][label > 0] += np.random.default_rng(i).normal(
        0, 300, np.count_nonzero(label))
    raw[case_id] = (image, label, affine)
    io.save_nifti(str(task / 'imagesTr' / f'{case_id}.nii.gz'),
                         image[..., 0], affine)
  out = tmp_path / 'records'
  summary = datasets.convert_decathlon(str(task), str(out),
                                      target_spacing=None,
                                      validation_fraction=0.0)
  foreground = np.concatenate([image[..., 0][label > 0]
                               for image, label, _ in raw.values()])
  low, high = np.percentile(foreground.astype(np.float64), [0.5, 99.5])
  clipped = np.clip(foreground.astype(np.float64), low, high)
  norm = summary['preprocessing']['normalization'][0]
  assert norm['scheme'] == 'ct'
  np.testing.assert_allclose(norm['clip'], [low, high], rtol=1e-6)
  np.testing.assert_allclose([norm['mean'], norm['std']],
                             [clipped.mean(), clipped.std()], rtol=1e-6)
  records = common.read_back(out / 'train-*.tfrecord')
  assert sorted(records) == sorted(raw)
  for case_id, record in records.items():
    image, label, affine = raw[case_id]
    # Stored voxel v holds original voxel inv(A0) A_s v (reoriented, maybe
    # cropped, never resampled here).
    to_original = np.linalg.inv(affine) @ record['affine'].astype(np.float64)
    index = np.argwhere(np.ones(record['label'].shape, bool))
    source = np.rint(index @ to_original[:3, :3].T + to_original[:3, 3])
    source = tuple(source.astype(int).T)
    expected = (np.clip(image[..., 0][source], low, high) - clipped.mean()
               ) / clipped.std()
    np.testing.assert_allclose(record['image'][..., 0].reshape(-1), expected,
                               rtol=1e-4, atol=1e-4)
    np.testing.assert_array_equal(record['label'].reshape(-1), label[source])

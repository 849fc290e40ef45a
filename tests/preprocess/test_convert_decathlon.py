"""data_preprocess/convert_decathlon.py and unet3d/preprocess/decathlon.py."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from tests.preprocess import test_convert_common as common
from unet3d.preprocess import cases
from unet3d.preprocess import dataset_json
from unet3d.preprocess import datasets
from unet3d.preprocess import decathlon
from unet3d.preprocess import intensity
from unet3d.preprocess import io
from unet3d.preprocess import spatial

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
  # No zero background (noise everywhere): nnU-Net's rule, the default,
  # z-scores the whole image.
  assert summary['preprocessing']['normalization'] == [
      {'scheme': 'zscore', 'within_nonzero_mask': False}] * 2
  train = common.read_back(out / 'train-*.tfrecord')
  val = common.read_back(out / 'val-*.tfrecord')
  assert sorted(train) == splits['folds'][1]['train']
  assert sorted(val) == splits['folds'][1]['val']
  median = np.median([spatial.oriented_spacing(raw[c][2]) for c in raw], axis=0)
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


# Any modality name with the word CT gets the CT scheme (the planner's test
# too); the channel's other name keeps its z-score.
def test_modality_names_with_the_word_ct_get_the_ct_scheme(tmp_path):
  task = tmp_path / 'Task03_LiverFake'
  common.write_msd_task(str(task), SPECS[:1],
                        modalities={'0': 'non-contrast CT', '1': 'CTA'})
  norms = decathlon.source(str(task)).norms
  assert [n.scheme for n in norms] == ['ct', 'zscore']


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


def test_default_zscores_a_zero_background_dataset_within_its_nonzero_mask(
    tmp_path):
  """A skull-stripped-like task converted with the default options: the
  nonzero box holds < 75% of each volume, so MRI is z-scored within the
  nonzero mask (nnU-Net's rule), and dataset.json replays that."""
  task = tmp_path / 'Task01_BrainFake'
  raw = common.skull_strip(str(task), common.write_msd_task(str(task), SPECS))
  out = tmp_path / 'records'
  summary = datasets.convert_decathlon(str(task), str(out), num_shards=1,
                                       validation_fraction=0.0)
  assert summary['preprocessing']['normalization'] == [
      {'scheme': 'zscore', 'within_nonzero_mask': True}]
  by_id = {c['case_id']: c for c in summary['cases']}
  for case_id, (image, _, _) in raw.items():
    fraction = common.nonzero_box_fraction(image)
    assert fraction < 0.75
    assert by_id[case_id]['nonzero_fraction'] == pytest.approx(fraction)
  records = common.read_back(out / '*.tfrecord')
  assert sorted(records) == sorted(raw)
  for record in records.values():
    stored = record['image'][..., 0].astype(np.float64)
    inside = stored[stored != 0]
    assert inside.size < 0.8 * stored.size  # the box's corners stay 0
    assert abs(inside.mean()) < 1e-4 and abs(inside.std() - 1) < 1e-4
  # Predict's plan, read back from dataset.json, makes the same record.
  plan = dataset_json.plan_from_dataset_info(
      json.loads((out / 'dataset.json').read_text()))
  assert [n.nonzero_mask for n in plan.norms] == [True]
  image, affine = cases.read_images(
      [str(task / 'imagesTr' / 'case_001.nii.gz')])
  grid = cases.to_stored_grid(image, None, affine, plan)
  replayed, _, _ = intensity.normalize(grid.image, plan.norms, grid.mask)
  np.testing.assert_allclose(replayed, records['case_001']['image'],
                             atol=1e-5)


@pytest.mark.parametrize('skull_stripped, flag', [(True, False),
                                                  (False, True)])
def test_cli_nonzero_mask_flags_force_the_choice(tmp_path, skull_stripped,
                                                 flag):
  """--nononzero_mask on a zero background, --nonzero_mask without one:
  each overrides what the rule would pick."""
  task = tmp_path / 'Task01_BrainFake'
  raw = common.write_msd_task(str(task), SPECS[:2])
  if skull_stripped:
    common.skull_strip(str(task), raw)
  out = tmp_path / 'records'
  result = common.run_cli('convert_decathlon.py', input_path=task,
                          output_path=out, nonzero_mask=flag, num_shards=1,
                          validation_fraction=0.0, **_no_geometry_flags())
  assert result.returncode == 0, result.stderr
  summary = json.loads((out / 'dataset.json').read_text())
  assert summary['preprocessing']['normalization'] == [
      {'scheme': 'zscore', 'within_nonzero_mask': flag}]
  for case_id, record in common.read_back(out / '*.tfrecord').items():
    image = raw[case_id][0][..., 0].astype(np.float64)  # same grid
    mask = image != 0 if flag else np.ones(image.shape, bool)
    want = np.where(mask, (image - image[mask].mean()) / image[mask].std(), 0)
    np.testing.assert_allclose(record['image'][..., 0], want, atol=1e-4)


def test_cli_help_says_the_nonzero_mask_default_follows_the_rule():
  result = subprocess.run(
      [sys.executable, '-m', 'unet3d.cli.convert', 'decathlon', '--helpfull'],
      capture_output=True, text=True, check=False, timeout=120,
      env=dict(os.environ, PYTHONPATH=str(common.REPO)))
  text = ' '.join(result.stdout.split())
  assert '--[no]nonzero_mask' in text
  assert "Unset: nnU-Net's rule decides" in text and '75%' in text


BRAIN_MODALITIES = {'0': 'FLAIR', '1': 'T1w', '2': 't1gd', '3': 'T2w'}
BRAIN_LABELS = {'0': 'background', '1': 'edema', '2': 'non-enhancing tumor',
                '3': 'enhancing tumour'}


def _no_geometry_flags():
  return dict(reorient=False, crop_nonzero=False, target_spacing='original')


def test_cli_picks_modalities_by_name_and_merges_labels_to_masks(tmp_path):
  """Intel's recipe: FLAIR (and here T2w) by name, labels 1-3 merged into
  one whole-tumour mask for a sigmoid model."""
  task = tmp_path / 'Task01_BrainTumour'
  raw = common.write_msd_task(str(task), SPECS[:2],
                              modalities=BRAIN_MODALITIES,
                              labels=BRAIN_LABELS)
  out = tmp_path / 'records'
  result = common.run_cli(
      'convert_decathlon.py', input_path=task, output_path=out,
      modalities='flair,T2w', label_map='1:1,2:1,3:1',
      label_names='background,whole_tumor', multi_label=True,
      validation_fraction=0.0, **_no_geometry_flags())
  assert result.returncode == 0, result.stderr
  summary = json.loads((out / 'dataset.json').read_text())
  assert summary['modalities'] == {'0': 'FLAIR', '1': 'T2w'}
  assert summary['num_channels'] == 2
  assert summary['labels'] == {'0': 'whole_tumor'}
  assert summary['label_type'] == 'multi_label'
  assert summary['preprocessing']['input_channels'] == [0, 3]
  records = common.read_back(out / '*.tfrecord', num_classes=1,
                             multi_label=True)
  for case_id, record in records.items():
    image, label, _ = raw[case_id]
    for c, source in enumerate((0, 3)):
      want = (image[..., source] - image[..., source].mean()) / (
          image[..., source].std())
      np.testing.assert_allclose(record['image'][..., c], want, atol=1e-4)
    np.testing.assert_array_equal(record['label'][..., 0], label > 0)


def test_label_map_to_index_labels_with_merged_names(tmp_path):
  task = tmp_path / 'task'
  raw = common.write_msd_task(str(task), SPECS[:2],
                              modalities=BRAIN_MODALITIES,
                              labels=BRAIN_LABELS)
  out = tmp_path / 'records'
  # 2 -> 1, 3 -> 2: tumour core kept apart from the rest.
  summary = datasets.convert_decathlon(
      str(task), str(out), modalities=['0'], label_map={2: 1, 3: 2},
      validation_fraction=0.0, reorient=False, crop_nonzero=False,
      target_spacing=None)
  assert summary['labels'] == {'0': 'background',
                               '1': 'edema+non-enhancing tumor',
                               '2': 'enhancing tumour'}
  records = common.read_back(out / '*.tfrecord')
  for case_id, record in records.items():
    label = raw[case_id][1]
    np.testing.assert_array_equal(record['label'],
                                  np.array([0, 1, 1, 2])[label])
    assert record['image'].shape[-1] == 1


@pytest.mark.parametrize('kwargs, message', [
    ({'modalities': ['DWI']}, "--modalities: 'DWI' is not a modality of .*"
                              "0=FLAIR, 1=T1w"),
    ({'label_map': {1: 2}}, '--label_map: the new labels must be 0..K-1'),
    ({'label_map': {7: 1}}, r'--label_map: labels \[7\] are not in'),
    ({'label_map': {1: 1, 2: 1, 3: 1}, 'label_names': ['a', 'b', 'c']},
     '--label_names: expected 2 names'),
])
def test_bad_modality_and_label_options_name_the_flag(tmp_path, kwargs,
                                                      message):
  task = tmp_path / 'task'
  common.write_msd_task(str(task), SPECS[:1], modalities=BRAIN_MODALITIES,
                        labels=BRAIN_LABELS)
  with pytest.raises(ValueError, match=message):
    datasets.convert_decathlon(str(task), str(tmp_path / 'out'), **kwargs)
  assert not (tmp_path / 'out').exists()


def test_malformed_label_map_flag_is_a_one_line_error(tmp_path):
  task = tmp_path / 'task'
  common.write_msd_task(str(task), SPECS[:1], modalities=BRAIN_MODALITIES,
                        labels=BRAIN_LABELS)
  result = common.run_cli('convert_decathlon.py', input_path=task,
                          output_path=tmp_path / 'out', label_map='1-1')
  assert result.returncode == 1
  lines = common.error_lines(result)
  assert lines == ["error: --label_map: expected old:new integer pairs like "
                   "1:1,2:1, got '1-1'"], result.stderr

"""unet3d/preprocess/nnunet.py and data_preprocess/convert_nnunet.py."""

import glob
import json
import os
import re
import uuid

import numpy as np
import pytest

from tests.preprocess import test_convert_common as common
from unet3d import fileio
from unet3d.input import schema
from unet3d.preprocess import datasets
from unet3d.preprocess import io
from unet3d.preprocess import nnunet

SHAPE = (12, 12, 12)
AFFINE = np.diag([1.0, 1.0, 1.5, 1.0])
# Keep the grid, so stored labels equal the files'.
SAME_GRID = dict(reorient=False, crop_nonzero=False, target_spacing=None,
                 num_shards=1)


def _channel(label, c, seed):
  """Channel c: class-dependent intensity (rising for c even, falling for c
  odd) plus noise, all positive."""
  rng = np.random.default_rng(seed)
  base = np.array([100.0, 250.0, 400.0])[label]
  base = base if c % 2 == 0 else 600.0 - base
  return (base + rng.normal(0, 10, label.shape)).astype(np.float32)


def write_v2(root, channel_names, labels, num_cases=3, ending='.nii.gz',
             **extra):
  """A tiny nnU-Net v2 raw dataset; returns (folder, {case: (image, label)})."""
  folder = root / 'Dataset042_Fake'
  (folder / 'imagesTr').mkdir(parents=True)
  (folder / 'labelsTr').mkdir()
  (folder / 'imagesTs').mkdir()
  out = {}
  for i in range(num_cases):
    case = f'fake_{i:03d}'
    label = common.blobs(SHAPE, i)
    image = np.stack([_channel(label, c, 10 * i + c)
                      for c in range(len(channel_names))], -1)
    for c in range(image.shape[-1]):
      io.save_nifti(str(folder / 'imagesTr' / f'{case}_{c:04d}{ending}'),
                    image[..., c], AFFINE)
    io.save_nifti(str(folder / 'labelsTr' / f'{case}{ending}'), label, AFFINE)
    out[case] = (image, label)
  io.save_nifti(str(folder / 'imagesTs' / f'test_0000{ending}'),
                image[..., 0], AFFINE)
  meta = {'channel_names': channel_names, 'labels': labels,
          'numTraining': num_cases, 'file_ending': ending, **extra}
  (folder / 'dataset.json').write_text(json.dumps(meta))
  return folder, out


def records(out_dir):
  """{case_id: schema.Volume} of every shard."""
  found = {}
  for path in glob.glob(str(out_dir / '*.tfrecord')):
    for raw in schema.read_records(path):
      volume = schema.decode_volume(raw)
      found[volume.case_id] = volume
  return found


def test_v2_ct_dataset_gets_ct_normalisation(tmp_path):
  folder, raw = write_v2(tmp_path, {'0': 'ct'},
                         {'background': 0, 'organ': 1, 'lesion': 2})
  out = tmp_path / 'records'
  summary = datasets.convert_nnunet(str(folder), str(out), **SAME_GRID)
  meta = json.loads((out / 'dataset.json').read_text())
  assert meta['modalities'] == {'0': 'ct'}
  assert meta['labels'] == {'0': 'background', '1': 'organ', '2': 'lesion'}
  norms = meta['preprocessing']['normalization']
  assert [n['scheme'] for n in norms] == ['ct']
  assert meta['preprocessing']['nnunet_version'] == 2
  assert summary['num_cases'] == 3  # imagesTs/ is not converted
  stored = records(out)
  assert sorted(stored) == sorted(raw)
  for case, (image, label) in raw.items():
    assert stored[case].image.shape == SHAPE + (1,)
    np.testing.assert_array_equal(stored[case].label, label)


def test_mri_nonzero_mask_follows_the_zero_background_even_uncropped(
    tmp_path):
  """Default: nnU-Net's rule on the cases' nonzero boxes (recorded whether
  or not the converter crops), for z-score channels only; forced by the
  argument."""
  folder, raw = write_v2(tmp_path, {'0': 'T1', '1': 'CT', '2': 'noNorm'},
                         {'background': 0, 'organ': 1, 'lesion': 2})
  assert [n.nonzero_mask for n in nnunet.source(str(folder)).norms] == [
      None, False, False]
  assert [n.nonzero_mask for n in nnunet.source(
      str(folder), nonzero_mask=False).norms] == [False, False, False]
  # A zero border two voxels wide: the nonzero box holds 8^3 of 12^3.
  border = np.ones(SHAPE, bool)
  border[2:-2, 2:-2, 2:-2] = False
  for case, (image, _) in raw.items():
    image[border] = 0
    for c in range(image.shape[-1]):
      io.save_nifti(str(folder / 'imagesTr' / f'{case}_{c:04d}.nii.gz'),
                    image[..., c], AFFINE)
  out = tmp_path / 'records'
  meta = datasets.convert_nnunet(str(folder), str(out), **SAME_GRID)
  norms = meta['preprocessing']['normalization']
  assert [n['scheme'] for n in norms] == ['zscore', 'ct', 'none']
  assert norms[0]['within_nonzero_mask'] is True
  assert [c['nonzero_fraction'] for c in meta['cases']] == pytest.approx(
      [8**3 / 12**3] * 3)
  stored = records(out)
  for case, (image, _) in raw.items():
    channel = stored[case].image[..., 0]  # the same grid: no crop
    assert np.all(channel[border] == 0)
    inside = channel[~border].astype(np.float64)
    assert abs(inside.mean()) < 1e-4 and abs(inside.std() - 1) < 1e-4


def test_cli_converts_a_two_channel_v2_dataset(tmp_path):
  folder, raw = write_v2(tmp_path, {'0': 'T2', '1': 'noNorm'},
                         {'background': 0, 'a': 1, 'b': 2})
  out = tmp_path / 'records'
  result = common.run_cli('convert_nnunet.py', input_path=folder,
                          output_path=out, reorient=False, crop_nonzero=False,
                          target_spacing='original', num_shards=1)
  assert result.returncode == 0, result.stderr
  meta = json.loads((out / 'dataset.json').read_text())
  assert meta['modalities'] == {'0': 'T2', '1': 'noNorm'}
  assert meta['num_channels'] == 2
  assert [n['scheme'] for n in meta['preprocessing']['normalization']] == [
      'zscore', 'none']
  for case, volume in records(out).items():
    image, label = raw[case]
    # Channel 0 z-scored; channel 1 (noNorm) stored as read: in file order.
    assert abs(volume.image[..., 0].mean()) < 1e-4
    np.testing.assert_allclose(volume.image[..., 1], image[..., 1], rtol=1e-6)
    np.testing.assert_array_equal(volume.label, label)


def test_v2_region_labels_become_one_mask_per_region(tmp_path):
  folder, raw = write_v2(tmp_path, {'0': 'FLAIR'},
                         {'background': 0, 'whole': [1, 2], 'core': 2},
                         regions_class_order=[1, 2])
  out = tmp_path / 'records'
  datasets.convert_nnunet(str(folder), str(out), **SAME_GRID)
  meta = json.loads((out / 'dataset.json').read_text())
  assert meta['labels'] == {'0': 'whole', '1': 'core'}
  assert meta['preprocessing']['regions'] == {'whole': [1, 2], 'core': [2]}
  assert meta['preprocessing']['regions_class_order'] == [1, 2]
  for case, volume in records(out).items():
    label = raw[case][1]
    assert volume.label.shape == SHAPE + (2,)
    np.testing.assert_array_equal(volume.label[..., 0], label >= 1)
    np.testing.assert_array_equal(volume.label[..., 1], label == 2)
    np.testing.assert_array_equal(
        nnunet.labels_from_regions(volume.label, [1, 2]), label)


def test_v1_task_folder_reads_the_channel_files(tmp_path):
  folder, raw = write_v2(tmp_path, {'0': 'CT', '1': 'MRI'},
                         {'background': 0, 'a': 1, 'b': 2})
  folder = folder.rename(tmp_path / 'Task042_Fake')
  (folder / 'dataset.json').write_text(json.dumps({
      'modality': {'0': 'CT', '1': 'MRI'},
      'labels': {'0': 'background', '1': 'a', '2': 'b'},
      'numTraining': 3,
      'training': [{'image': f'./imagesTr/{c}.nii.gz',
                    'label': f'./labelsTr/{c}.nii.gz'} for c in raw],
      'test': ['./imagesTs/test.nii.gz']}))
  out = tmp_path / 'records'
  datasets.convert_nnunet(str(folder), str(out), **SAME_GRID)
  meta = json.loads((out / 'dataset.json').read_text())
  assert meta['modalities'] == {'0': 'CT', '1': 'MRI'}
  assert [n['scheme'] for n in meta['preprocessing']['normalization']] == [
      'ct', 'zscore']
  assert meta['preprocessing']['nnunet_version'] == 1
  for case, volume in records(out).items():
    assert volume.image.shape == SHAPE + (2,)
    np.testing.assert_array_equal(volume.label, raw[case][1])


@pytest.mark.parametrize('ending', ['.png', '.tif', '.nrrd', '.mha'])
def test_other_file_endings_are_one_line_naming_the_ending(tmp_path, ending):
  folder, _ = write_v2(tmp_path, {'0': 'CT'}, {'background': 0, 'a': 1},
                       num_cases=1)
  meta = json.loads((folder / 'dataset.json').read_text())
  (folder / 'dataset.json').write_text(json.dumps({**meta,
                                                   'file_ending': ending}))
  with pytest.raises(ValueError) as error:
    nnunet.source(str(folder))
  message = str(error.value)
  assert '\n' not in message
  assert message == (f"{folder}/dataset.json: file_ending '{ending}' is not "
                     'supported (expected .nii.gz or .nii; convert the '
                     'images to NIfTI)')


@pytest.mark.parametrize('change, message', [
    ({'channel_names': {'0': 'rescale_to_0_1'}},
     "channel_names: 'rescale_to_0_1' normalisation is not supported"),
    ({'numTraining': 5}, 'numTraining is 5, but imagesTr/ holds 2 cases'),
    ({'regions_class_order': [1]}, 'regions_class_order must list 2'),
])
def test_bad_dataset_json_is_one_line_naming_the_key(tmp_path, change,
                                                     message):
  folder, _ = write_v2(tmp_path, {'0': 'CT'},
                       {'background': 0, 'whole': [1, 2], 'core': 2},
                       num_cases=2)
  meta = json.loads((folder / 'dataset.json').read_text())
  (folder / 'dataset.json').write_text(json.dumps({**meta, **change}))
  with pytest.raises(ValueError, match=message):
    nnunet.source(str(folder))


def test_missing_channel_file_is_one_line_naming_it(tmp_path):
  folder, _ = write_v2(tmp_path, {'0': 'T1', '1': 'T2'},
                       {'background': 0, 'a': 1, 'b': 2}, num_cases=2)
  missing = folder / 'imagesTr' / 'fake_001_0001.nii.gz'
  missing.unlink()
  with pytest.raises(ValueError) as error:
    datasets.convert_nnunet(str(folder), str(tmp_path / 'out'), **SAME_GRID)
  assert str(error.value) == (f'{missing}: channel file missing for case '
                              'fake_001 (expected 2 channel files _0000..)')
  assert not os.path.exists(tmp_path / 'out')


def test_files_leading_out_of_the_dataset_are_refused(tmp_path):
  folder, _ = write_v2(tmp_path, {'0': 'CT'}, {'background': 0, 'a': 1},
                       num_cases=1)
  outside = tmp_path / 'elsewhere.nii.gz'
  (folder / 'labelsTr' / 'fake_000.nii.gz').rename(outside)
  os.symlink(outside, folder / 'labelsTr' / 'fake_000.nii.gz')
  with pytest.raises(ValueError, match='is outside the task folder'):
    nnunet.source(str(folder))
  assert len(nnunet.source(str(folder), allow_outside_paths=True).cases) == 1


def test_unet3d_convert_lists_nnunet(capsys):
  from unet3d.cli import convert as dispatcher  # pylint: disable=g-import-not-at-top
  dispatcher.main(['unet3d-convert', '--help'])
  assert re.search(r'\n  nnunet +an nnU-Net raw dataset',
                   capsys.readouterr().out)


def test_v2_dataset_on_a_bucket_converts_like_the_local_one(tmp_path):
  """gs:// stand-in: the same dataset read from ram:// gives the same
  records as from the local folder."""
  folder, _ = write_v2(tmp_path, {'0': 'T2'},
                       {'background': 0, 'organ': 1, 'lesion': 2})
  remote = f'ram://nnunet-{uuid.uuid4().hex}/{folder.name}'
  fileio.copy_tree(str(folder), remote)
  local_out, remote_out = tmp_path / 'local', tmp_path / 'remote'
  datasets.convert_nnunet(str(folder), str(local_out), **SAME_GRID)
  datasets.convert_nnunet(remote, str(remote_out), **SAME_GRID)
  local, from_bucket = records(local_out), records(remote_out)
  assert sorted(from_bucket) == sorted(local)
  for case, volume in local.items():
    np.testing.assert_array_equal(from_bucket[case].image, volume.image)
    np.testing.assert_array_equal(from_bucket[case].label, volume.label)

"""data_preprocess/convert_brats.py (unet3d/cli/convert/brats.py) and
unet3d/preprocess/brats.py."""

import json
import os
import subprocess
import sys

import numpy as np

from tests.preprocess import test_convert_common as common
from unet3d.preprocess import datasets
from unet3d.preprocess import io
from unet3d.preprocess import spatial

MODALITIES = ('t1', 't1ce', 't2', 'flair')
SHAPES = [(20, 22, 16), (22, 20, 18), (20, 20, 16)]


def _write_brats(root):
  """Case folders as BraTS ships them: LPS-like affine, 1 mm voxels, zero
  outside the brain, labels {0, 1, 2, 4}."""
  raw = {}
  for i, shape in enumerate(SHAPES):
    rng = np.random.default_rng(i)
    name = f'BraTS20_Training_{i + 1:03d}'
    folder = root / name
    folder.mkdir(parents=True)
    grid = np.meshgrid(*[np.arange(s) for s in shape], indexing='ij')
    centre = [s / 2 + 1 for s in shape]
    brain = sum(((g - c) / (s / 2.8))**2
                for g, c, s in zip(grid, centre, shape)) <= 1
    label = np.zeros(shape, np.uint8)
    tumour = sum(((g - c) / 3.0)**2 for g, c in zip(grid, centre))
    label[tumour <= 1.5] = 2
    label[tumour <= 0.8] = 1
    label[tumour <= 0.3] = 4
    affine = np.diag([-1.0, -1.0, 1.0, 1.0])
    affine[:3, 3] = [0.0, 239.0, 0.0]
    channels = []
    for m, modality in enumerate(MODALITIES):
      image = np.where(brain, 200.0 * (m + 1) + 50.0 * label +
                       rng.normal(0, 15, shape), 0.0).astype(np.float32)
      io.save_nifti(str(folder / f'{name}_{modality}.nii.gz'), image, affine)
      channels.append(image)
    io.save_nifti(str(folder / f'{name}_seg.nii.gz'), label, affine)
    raw[name] = (np.stack(channels, axis=-1), label, affine)
  return raw


def _expected(image, label):
  """Reorient (flip i, j), crop to the nonzero box, z-score in the mask."""
  image, label = image[::-1, ::-1], label[::-1, ::-1]
  mask = np.any(image != 0, axis=-1)
  idx = np.argwhere(mask)
  box = tuple(slice(a, b + 1) for a, b in zip(idx.min(0), idx.max(0)))
  image, label, mask = image[box], label[box], mask[box]
  out = np.zeros(image.shape, np.float64)
  for c in range(image.shape[-1]):
    values = image[..., c][mask].astype(np.float64)
    out[..., c][mask] = (values - values.mean()) / values.std()
  return out, label, mask, np.array([s.start for s in box])


def test_cli_converts_case_folders(tmp_path):
  raw = _write_brats(tmp_path / 'BraTS')
  out = tmp_path / 'records'
  result = common.run_cli('convert_brats.py', input_path=tmp_path / 'BraTS',
                          output_path=out, validation_fraction=0.34)
  assert result.returncode == 0, result.stderr
  summary = json.loads((out / 'dataset.json').read_text())
  assert summary['modalities'] == {'0': 't1', '1': 't1ce', '2': 't2',
                                   '3': 'flair'}
  assert summary['labels']['3'] == 'enhancing_tumor'
  records = common.read_back(out / '*.tfrecord', num_classes=4)
  assert sorted(records) == sorted(raw)
  for case_id, record in records.items():
    image, label, affine = raw[case_id]
    expected, expected_label, mask, start = _expected(image, label)
    assert record['image'].shape == expected.shape
    np.testing.assert_allclose(record['image'], expected, atol=1e-4)
    # {0, 1, 2, 4} -> {0, 1, 2, 3}, voxel for voxel.
    np.testing.assert_array_equal(record['label'],
                                  np.where(expected_label == 4, 3,
                                           expected_label))
    for c in range(4):
      inside = record['image'][..., c][mask]
      assert abs(inside.mean()) < 1e-4 and abs(inside.std() - 1) < 1e-4
    # The stored affine: RAS, and the crop's first voxel is where the
    # flipped original's voxel `start` was.
    stored_affine = record['affine'].astype(np.float64)
    assert spatial.axcodes(stored_affine) == 'RAS'
    flipped = np.array(label.shape) - 1 - start
    np.testing.assert_allclose(
        common.world_of(stored_affine, (0, 0, 0)),
        common.world_of(affine, (flipped[0], flipped[1], start[2])),
        atol=1e-4)


def test_region_targets(tmp_path):
  raw = _write_brats(tmp_path / 'BraTS')
  out = tmp_path / 'records'
  summary = datasets.convert_brats(str(tmp_path / 'BraTS'), str(out),
                                  regions=True, validation_fraction=0.0)
  assert summary['labels'] == {'0': 'whole_tumor', '1': 'tumor_core',
                               '2': 'enhancing_tumor'}
  assert summary['label_type'] == 'multi_label'
  records = common.read_back(out / 'train-*.tfrecord', multi_label=True)
  for case_id, record in records.items():
    _, label, _, _ = _expected(*raw[case_id][:2])
    assert record['label'].shape == label.shape + (3,)
    np.testing.assert_array_equal(record['label'][..., 0],
                                  np.isin(label, [1, 2, 4]))
    np.testing.assert_array_equal(record['label'][..., 1],
                                  np.isin(label, [1, 4]))
    np.testing.assert_array_equal(record['label'][..., 2], label == 4)
  assert summary['class_voxel_counts'] == {
      '0': sum(int(np.isin(l, [1, 2, 4]).sum()) for _, l, _ in raw.values()),
      '1': sum(int(np.isin(l, [1, 4]).sum()) for _, l, _ in raw.values()),
      '2': sum(int((l == 4).sum()) for _, l, _ in raw.values())}


def test_missing_modality_is_named(tmp_path):
  _write_brats(tmp_path / 'BraTS')
  missing = (tmp_path / 'BraTS' / 'BraTS20_Training_002' /
             'BraTS20_Training_002_t1ce.nii.gz')
  missing.unlink()
  summary = datasets.convert_brats(str(tmp_path / 'BraTS'),
                                  str(tmp_path / 'out'), on_error='skip')
  assert summary['skipped'] == [{'case_id': 'BraTS20_Training_002',
                                 'stage': 'convert',
                                 'error': f'{missing}: file not found'}]


def _write_case(folder, name, naming_2023=False, seg_name=None, seed=0,
                shape=(12, 12, 10)):
  """One tiny case folder; returns (image [X, Y, Z, 4], label) as written.

  2023 naming: `<case>-t1n/-t1c/-t2w/-t2f/-seg`, labels {0, 1, 2, 3};
  otherwise `<case>_t1/_t1ce/_t2/_flair/_seg`, labels {0, 1, 2, 4}.
  """
  rng = np.random.default_rng(seed)
  folder.mkdir(parents=True)
  label = np.zeros(shape, np.uint8)
  label[3:9, 3:9, 3:7] = 2
  label[4:7, 4:7, 4:6] = 1
  label[5, 5, 5] = 3 if naming_2023 else 4
  names = ({'t1': 't1n', 't1ce': 't1c', 't2': 't2w', 'flair': 't2f'}
           if naming_2023 else {m: m for m in MODALITIES})
  sep = '-' if naming_2023 else '_'
  affine = np.eye(4)
  channels = []
  for m, modality in enumerate(MODALITIES):
    image = (100.0 * (m + 1) + 30.0 * label +
             rng.normal(0, 5, shape)).astype(np.float32)
    io.save_nifti(str(folder / f'{name}{sep}{names[modality]}.nii.gz'), image,
                  affine)
    channels.append(image)
  io.save_nifti(str(folder / (seg_name or f'{name}{sep}seg.nii.gz')), label,
                affine)
  return np.stack(channels, -1), label


def test_every_brats_layout_and_naming(tmp_path):
  """2019 HGG/LGG, 2020 (with case 355's odd segmentation name), 2021 and
  2023 naming: cases found, channels in t1, t1ce, t2, flair order, labels
  mapped to {0, 1, 2, 3}."""
  layouts = {
      'brats2019': [('HGG/BraTS19_2013_10_1', {}),
                    ('LGG/BraTS19_TCIA09_141_1', {})],
      'brats2020': [('BraTS20_Training_001', {}),
                    ('BraTS20_Training_355',
                     {'seg_name': 'W39_1998.09.19_Segm.nii'})],
      'brats2021': [('BraTS2021_00000', {}), ('BraTS2021_00002', {})],
      'brats2023': [('BraTS-GLI-00000-000', {'naming_2023': True}),
                    ('BraTS-GLI-00002-000', {'naming_2023': True})],
  }
  for layout, case_list in layouts.items():
    raw = {}
    for seed, (rel, kwargs) in enumerate(case_list):
      name = rel.split('/')[-1]
      raw[name] = _write_case(tmp_path / layout / rel, name, seed=seed,
                              **kwargs)
    out = tmp_path / f'{layout}_records'
    datasets.convert_brats(str(tmp_path / layout), str(out),
                           validation_fraction=0.0, reorient=False,
                           crop_nonzero=False, target_spacing=None)
    records = common.read_back(out / '*.tfrecord', num_classes=4)
    assert sorted(records) == sorted(raw), layout
    for name, (image, label) in raw.items():
      want = np.where(label == 4, 3, label)
      np.testing.assert_array_equal(records[name]['label'], want,
                                    err_msg=name)
      # Channel order t1, t1ce, t2, flair: the written means rise with m.
      means = [image[..., c].mean() for c in range(4)]
      assert means == sorted(means)
      stored = records[name]['image']
      for c in range(4):
        expected = (image[..., c] - image[..., c].mean()) / image[..., c].std()
        np.testing.assert_allclose(stored[..., c], expected, atol=1e-4,
                                   err_msg=f'{layout} {name} channel {c}')


def test_label_4_in_2023_naming_is_an_error(tmp_path):
  image, label = _write_case(tmp_path / 'in' / 'BraTS-GLI-00001-000',
                             'BraTS-GLI-00001-000', naming_2023=True)
  del image
  label[0, 0, 0] = 4
  io.save_nifti(str(tmp_path / 'in' / 'BraTS-GLI-00001-000' /
                    'BraTS-GLI-00001-000-seg.nii.gz'), label, np.eye(4))
  try:
    datasets.convert_brats(str(tmp_path / 'in'), str(tmp_path / 'out'))
  except ValueError as e:
    assert 'BraTS-GLI-00001-000-seg.nii.gz' in str(e) and '4' in str(e)
  else:
    raise AssertionError('label 4 in 2023 naming was accepted')


def test_nvidia_command_line_short_flags(tmp_path):
  """NVIDIA's `preprocess_data.py -i <in> -o <out> -v --vol_per_file 1`
  runs as written on a BraTS 2019 HGG/LGG folder."""
  for seed, rel in enumerate(['HGG/BraTS19_A_1', 'HGG/BraTS19_B_1',
                              'LGG/BraTS19_C_1']):
    _write_case(tmp_path / 'in' / rel, rel.split('/')[-1], seed=seed)
  out = tmp_path / 'out'
  args = [sys.executable, str(common.REPO / 'data_preprocess' /
                              'convert_brats.py'),
          '-i', str(tmp_path / 'in'), '-o', str(out), '-v',
          '--vol_per_file', '1', '--validation_fraction=0.34']
  result = subprocess.run(args, capture_output=True, text=True, timeout=300,
                          check=False,
                          env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL='3'))
  assert result.returncode == 0, result.stderr
  # -v lists each case; --vol_per_file 1 gives one shard per case.
  for name in ('BraTS19_A_1', 'BraTS19_B_1', 'BraTS19_C_1'):
    assert name + ':' in result.stdout
  summary = json.loads((out / 'dataset.json').read_text())
  assert len(summary['shards']['train']) == summary['num_train'] == 2
  assert len(summary['shards']['val']) == summary['num_val'] == 1
  # --single_data_dir: HGG/ and LGG/ are not case folders.
  result = common.run_cli('convert_brats.py', input_dir=tmp_path / 'in',
                          output_dir=tmp_path / 'out2', single_data_dir=True)
  assert result.returncode == 1
  assert common.error_lines(result) and 'no BraTS case folders' in (
      common.error_lines(result)[0])


def test_bare_v_becomes_verbose_but_v_level_stays_absl():
  from unet3d.cli.convert import common_flags  # pylint: disable=g-import-not-at-top
  assert common_flags.bare_flag_to(['x', '-i', 'a', '-v'], 'v', 'verbose') == [
      'x', '-i', 'a', '--verbose']
  assert common_flags.bare_flag_to(['x', '-v', '-o', 'b'], 'v', 'verbose') == [
      'x', '--verbose', '-o', 'b']
  assert common_flags.bare_flag_to(['x', '-v', '1'], 'v', 'verbose') == [
      'x', '-v', '1']

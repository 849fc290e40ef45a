"""data_preprocess/convert_brats.py and unet3d/preprocess/brats.py."""

import json

import numpy as np

from tests.preprocess import test_convert_common as common
from unet3d.preprocess import datasets
from unet3d.preprocess import io
from unet3d.preprocess import preprocessing as pp

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
    assert pp.axcodes(stored_affine) == 'RAS'
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

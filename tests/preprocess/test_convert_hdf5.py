"""data_preprocess/convert_hdf5.py and unet3d/preprocess/hdf5.py."""

import json

import h5py
import numpy as np
import pytest

from tests.preprocess import test_convert_common as common
from unet3d.preprocess import datasets


def _write_h5(path, raw, label, element_size_um=None):
  with h5py.File(path, 'w') as f:
    dataset = f.create_dataset('raw', data=raw)
    if element_size_um is not None:
      dataset.attrs['element_size_um'] = element_size_um
    f.create_dataset('label', data=label)


def _zscore(x):
  x = x.astype(np.float64)
  return (x - x.mean()) / x.std()


def test_cli_converts_zyx_volumes(tmp_path):
  folder = tmp_path / 'h5'
  folder.mkdir()
  raw = {}
  for i, shape in enumerate([(12, 20, 18), (14, 18, 18), (12, 18, 20)]):
    rng = np.random.default_rng(i)
    label = common.blobs(shape, i)
    image = (100 + 50 * label + rng.normal(0, 5, shape)).astype(np.float32)
    _write_h5(folder / f'sample_{i}.h5', image, label.astype(np.int64),
              element_size_um=[500.0, 250.0, 250.0])
    raw[f'sample_{i}'] = (image, label)
  out = tmp_path / 'records'
  result = common.run_cli('convert_hdf5.py', input_path=folder,
                          output_path=out, validation_fraction=0.34)
  assert result.returncode == 0, result.stderr
  summary = json.loads((out / 'dataset.json').read_text())
  assert summary['labels'] == {'0': 'background', '1': 'class_1',
                               '2': 'class_2'}
  assert summary['preprocessing']['orientation'] == 'unchanged'
  records = common.read_back(out / '*.tfrecord')
  assert sorted(records) == sorted(raw)
  for case_id, record in records.items():
    image, label = raw[case_id]
    # (Z, Y, X) kept, z-scored per image, spacing from element_size_um.
    np.testing.assert_allclose(record['image'][..., 0], _zscore(image),
                               atol=1e-4)
    np.testing.assert_array_equal(record['label'], label)
    np.testing.assert_allclose(record['spacing'], [0.5, 0.25, 0.25])
    np.testing.assert_allclose(record['affine'],
                               np.diag([0.5, 0.25, 0.25, 1.0]))


def test_channels_first_raw_and_multi_label_masks(tmp_path):
  folder = tmp_path / 'h5'
  folder.mkdir()
  raw = {}
  for i in range(2):
    rng = np.random.default_rng(i)
    image = (10 + rng.normal(0, 1, (2, 10, 12, 14))).astype(np.float32)
    image[1] *= 5
    masks = (rng.random((3, 10, 12, 14)) > 0.7).astype(np.uint8)
    _write_h5(folder / f'vol{i}.hdf5', image, masks)
    raw[f'vol{i}'] = (image, masks)
  out = tmp_path / 'records'
  summary = datasets.convert_hdf5(str(folder), str(out), spacing=[2, 1, 1],
                                 class_names=['cells', 'nuclei', 'edges'],
                                 validation_fraction=0.0)
  assert summary['labels'] == {'0': 'cells', '1': 'nuclei', '2': 'edges'}
  assert summary['label_type'] == 'multi_label'
  records = common.read_back(out / 'train-*.tfrecord', multi_label=True)
  for case_id, record in records.items():
    image, masks = raw[case_id]
    for c in range(2):
      np.testing.assert_allclose(record['image'][..., c], _zscore(image[c]),
                                 atol=1e-4)
    np.testing.assert_array_equal(record['label'], np.moveaxis(masks, 0, -1))
    np.testing.assert_allclose(record['spacing'], [2, 1, 1])


def test_bad_hdf5_inputs_name_the_file(tmp_path):
  folder = tmp_path / 'h5'
  folder.mkdir()
  _write_h5(folder / 'a.h5', np.ones((8, 8, 8), np.float32),
            np.full((8, 8, 8), 3))
  with pytest.raises(ValueError, match=f'^{folder / "a.h5"}: /label: unknown '
                     r'label values \[3\] \(expected \[0, 1, 2\]\)$'):
    datasets.convert_hdf5(str(folder), str(tmp_path / 'out'),
                         class_names=['a', 'b', 'c'])
  _write_h5(folder / 'a.h5', np.ones((8, 8, 8), np.float32),
            np.zeros((8, 8, 7)))
  with pytest.raises(ValueError, match=r'/label shape \(8, 8, 7\) does not '
                     r'match /raw shape \(8, 8, 8\)'):
    datasets.convert_hdf5(str(folder), str(tmp_path / 'out'))
  (folder / 'a.h5').write_bytes(b'not an hdf5 file')
  with pytest.raises(ValueError, match=f'^{folder / "a.h5"}: cannot read '
                     'HDF5'):
    datasets.convert_hdf5(str(folder), str(tmp_path / 'out'))
  assert not (tmp_path / 'out').exists()

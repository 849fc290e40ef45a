"""--label_map of the LiTS converters (unet3d/preprocess/lits.py)."""

import numpy as np
import pytest

from tests.preprocess import test_convert_common as common
from tests.preprocess import test_convert_lits as lits_tests
from unet3d.preprocess import datasets

OPTIONS = dict(num_shards=1, reorient=False, crop_nonzero=False,
               target_spacing=None, validation_fraction=0.34)


def test_liver_merges_tumour_into_liver_in_3d_and_2d(tmp_path):
  raw = lits_tests._write_lits(tmp_path / 'Train')  # pylint: disable=protected-access
  pattern = str(tmp_path / 'Train' / '{}-{{}}.nii')
  summary = datasets.convert_lits(
      pattern.format('volume'), pattern.format('segmentation'),
      str(tmp_path / 'out3d'), crop_liver_region=False, label_map='liver',
      **OPTIONS)
  assert summary['labels'] == {'0': 'background', '1': 'liver'}
  assert summary['preprocessing']['label_map'] == 'liver'
  records = common.read_back(tmp_path / 'out3d' / '*.tfrecord', 2)
  for case_id, (_, label, _) in raw.items():
    assert (label == 2).any()
    np.testing.assert_array_equal(records[case_id]['label'], label > 0)
  summary = datasets.convert_lits_2d(
      pattern.format('volume'), pattern.format('segmentation'),
      str(tmp_path / 'out2d'), slice_size=0, label_map='liver', **OPTIONS)
  assert summary['labels'] == {'0': 'background', '1': 'liver'}
  assert max(summary['class_voxel_counts']) and set(
      summary['class_voxel_counts']) == {'0', '1'}
  with pytest.raises(ValueError, match='^--label_map: '):
    datasets.convert_lits(pattern.format('volume'),
                          pattern.format('segmentation'),
                          str(tmp_path / 'bad'), label_map='tumour')

"""Reading dataset.json into a fingerprint: every malformed field is a
one-line ValueError naming the file, the case and the key."""

import pytest

from unet3d.planning import fingerprint
from tests.planning import fabricate

PATH = '/data/dataset.json'


def _set(info, key, value):
  """Sets a dotted key; a number part indexes a list."""
  parts = key.split('.')
  node = info
  for part in parts[:-1]:
    node = node[int(part)] if part.isdigit() else node[part]
  last = parts[-1]
  if last.isdigit():
    node[int(last)] = value
  else:
    node[last] = value
  return info


@pytest.mark.parametrize('key, value, message', [
    ('labels', ['background', 'organ'],
     'labels must be a mapping, got ['),
    ('labels', {'0': 'background', 'one': 'organ'},
     'labels keys must be indices such as "1", got \'one\''),
    ('labels', {'0': 'background', '2': 'organ'},
     'labels must be indices 0..n-1 mapped to names'),
    ('modalities', {'0': 7}, 'modalities.0 must be a name, got 7'),
    ('intensity', [5], 'intensity[0] must be a mapping, got 5'),
    ('intensity', [{'mean': 1.0}, {'mean': 2.0}],
     'intensity must be one entry per modality (1)'),
    ('intensity.0.percentile_99_5', 'high',
     "intensity[0].percentile_99_5 must be a finite number, got 'high'"),
    ('preprocessing.normalization', 'zscore',
     "preprocessing.normalization must be a list, got 'zscore'"),
    ('shards', ['train-00000.tfrecord'], 'shards must be a mapping'),
    ('cases.1', 'case1', "cases[1] must be a mapping, got 'case1'"),
    ('cases.2.stored.shape', [64, 64],
     'cases[2].stored.shape must be a list of 3 per-axis values, got [64, 64]'),
    ('cases.0.cropped.spacing', [1.0, 0.0, 1.0],
     'cases[0].cropped.spacing must be a finite number in [1e-06, inf]'),
    ('cases.0.nonzero_fraction', 1.5,
     'cases[0].nonzero_fraction must be a finite number in [0, 1], got 1.5'),
    ('cases.3.components', {'1': 2},
     'cases[3].components.1 must be a mapping, got 2'),
    ('cases.3.centroid_voxel', {'x': [1.0, 2.0, 3.0]},
     'cases[3].centroid_voxel keys must be indices such as "1"'),
    ('cases.0.num_records', 0,
     'cases[0].num_records must be an integer >= 1, got 0'),
])
def test_malformed_fields_name_the_file_and_key(key, value, message):
  info = _set(fabricate.dataset_info(), key, value)
  with pytest.raises(ValueError) as raised:
    fingerprint.from_dataset_info(info, PATH)
  text = str(raised.value)
  assert text.startswith(f'{PATH}: ') and message in text, text
  assert '\n' not in text


def test_a_missing_case_key_is_named():
  info = fabricate.dataset_info()
  del info['cases'][4]['centroid_voxel']
  with pytest.raises(ValueError, match=r'^/data/dataset.json: cases\[4\]\.'
                     r'centroid_voxel is missing'):
    fingerprint.from_dataset_info(info, PATH)


def test_a_well_formed_record_reads_as_typed_values():
  fp = fingerprint.from_dataset_info(
      fabricate.dataset_info(spacing=(0.5, 0.5, 2.0), shape=(96, 80, 24)),
      PATH)
  case = fp.cases[0]
  assert case.stored_shape == (96, 80, 24)
  assert case.stored_spacing == (0.5, 0.5, 2.0)
  assert case.centroid_voxel == {'1': (20.0, 32.0, 32.0),
                                 '2': (44.0, 32.0, 32.0)}
  assert case.component_counts == {'1': 1, '2': 1}
  assert fp.labels == {'0': 'background', '1': 'organ', '2': 'lesion'}
  assert fp.intensity[0]['percentile_99_5'] == 250.0

"""Fabricated dataset.json content for the planner tests (no conversion)."""

import copy

from unet3d.input import dataset_info as dataset_info_lib
from unet3d.planning import fingerprint

BASE_CASE = {
    'cropped': {'shape': [64, 64, 64], 'spacing': [1.0, 1.0, 1.0]},
    'stored': {'shape': [64, 64, 64], 'spacing': [1.0, 1.0, 1.0]},
    'nonzero_fraction': 1.0,
    'num_records': 1,
    'class_voxel_counts': [1000, 100, 100],
    'components': {'1': {'count': 1, 'largest_voxels': [100]},
                   '2': {'count': 1, 'largest_voxels': [100]}},
    'centroid_voxel': {'1': [20.0, 32.0, 32.0], '2': [44.0, 32.0, 32.0]},
}


def dataset_info(num_cases=6, num_val=2, labels=None, modality='T1',
                 spacing=(1.0, 1.0, 1.0), shape=(64, 64, 64),
                 nonzero_fraction=1.0, orientation='RAS', norm=None,
                 multi_label=False, **case_overrides):
  """A dataset.json of identical cases (overrides apply to every case)."""
  labels = labels or {'0': 'background', '1': 'organ', '2': 'lesion'}
  cases = []
  for i in range(num_cases):
    case = copy.deepcopy(BASE_CASE)
    case.update(case_id=f'case{i}', split='val' if i < num_val else 'train',
                nonzero_fraction=nonzero_fraction)
    case['cropped'] = {'shape': list(shape), 'spacing': list(spacing)}
    case['stored'] = {'shape': list(shape), 'spacing': list(spacing)}
    case.update(copy.deepcopy(case_overrides))
    cases.append(case)
  return {
      'fingerprint_version': dataset_info_lib.FINGERPRINT_VERSION,
      'labels': labels,
      'label_type': 'multi_label' if multi_label else 'index',
      'modalities': {'0': modality},
      'intensity': [{'mean': 100.0, 'std': 20.0, 'percentile_00_5': -50.0,
                     'median': 100.0, 'percentile_99_5': 250.0}],
      'preprocessing': {'orientation': orientation,
                        'resample': {'target_spacing': list(spacing)},
                        'normalization': [norm or {
                            'scheme': 'zscore',
                            'within_nonzero_mask': False}]},
      'cases': cases,
      'compressed': True,
      'shards': {'train': ['train-00000-of-00001.tfrecord'],
                 'val': ['val-00000-of-00001.tfrecord'] if num_val else []},
  }


def make(path='/data/dataset.json', **kwargs) -> fingerprint.Fingerprint:
  return fingerprint.from_dataset_info(dataset_info(**kwargs), path)

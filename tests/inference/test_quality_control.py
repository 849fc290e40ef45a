"""Tests for unet3d/inference/quality_control.py and predict's use of it.

The training fingerprint is written by hand: boxes whose voxel counts,
components and centroids (np.argwhere) are known, two training cases and a
validation case that must not widen the ranges.
"""

import json
import types

import nibabel as nib
import numpy as np
import pytest

from unet3d import config
from unet3d.inference import predict
from unet3d.inference import predict_report
from unet3d.inference import preprocessing_info
from unet3d.inference import quality_control as qc

SHAPE = (20, 12, 10)
SPACING = (1.0, 1.0, 2.0)  # 2 mm^3 a voxel
# Per case, the box of each class: (x, y, z) slices. Class 1 is on the low
# side of axis 0, class 2 on the high side.
BOXES = {
    'case_a': {1: (slice(2, 6), slice(4, 8), slice(3, 7)),     # 64 voxels
               2: (slice(13, 17), slice(4, 8), slice(3, 7))},  # 64
    'case_b': {1: (slice(3, 8), slice(4, 8), slice(3, 7)),     # 80
               2: (slice(12, 17), slice(3, 7), slice(3, 7))},  # 80
    # Validation only: class 1 in the middle would hide a swap if used.
    'case_val': {1: (slice(8, 12), slice(4, 8), slice(3, 7)),
                 2: (slice(13, 17), slice(4, 8), slice(3, 7))},
}
SPLITS = {'case_a': 'train', 'case_b': 'train', 'case_val': 'val'}


def _label(case_id):
  label = np.zeros(SHAPE, np.uint8)
  for k, box in BOXES[case_id].items():
    label[box] = k
  return label


def _case(case_id, label):
  """A dataset.json case entry from index labels, computed with numpy
  (every class a box: one component)."""
  counts = np.bincount(label.reshape(-1), minlength=3).tolist()
  present = [k for k in (1, 2) if counts[k]]
  return {
      'case_id': case_id, 'split': SPLITS[case_id],
      'stored': {'shape': list(label.shape), 'spacing': list(SPACING)},
      'class_voxel_counts': counts,
      'components': {str(k): {'count': 1, 'largest_voxels': [counts[k]]}
                     for k in present},
      'centroid_voxel': {str(k): np.argwhere(label == k).mean(0).tolist()
                         for k in present}}


def _fingerprint():
  return {'labels': {'0': 'background', '1': 'left', '2': 'right'},
          'label_type': 'index',
          'cases': [_case(c, _label(c)) for c in BOXES]}


@pytest.fixture(scope='module')
def reference():
  return qc.reference_from_dataset_info(_fingerprint(), 'ds.json')


def _checks(flags):
  return [(f['check'], f['class']) for f in flags]


def test_reference_holds_the_training_ranges_by_hand(reference):
  assert reference.num_cases == 2  # the validation case is left out
  left = reference.classes[1]
  assert left.name == 'left'
  assert left.volume_mm3 == (128.0, 160.0)  # 64 and 80 voxels x 2 mm^3
  assert left.max_components == 1 and left.always_present
  # Centroid x: 3.5 and 5.0 of 0..19; y 5.5 of 0..11; z 4.5 of 0..9.
  np.testing.assert_allclose(left.centroid_range,
                             [(3.5 / 19, 5.0 / 19), (5.5 / 11, 5.5 / 11),
                              (0.5, 0.5)])


@pytest.mark.parametrize('case_id', ['case_a', 'case_b'])
def test_a_training_label_is_plausible(reference, case_id):
  assert qc.check_prediction(_label(case_id), SPACING, reference) == []


def test_the_same_anatomy_on_a_finer_grid_is_plausible(reference):
  fine = _label('case_a')
  for axis in range(3):
    fine = np.repeat(fine, 2, axis=axis)  # 8 voxels of 0.25 mm^3 each
  spacing = [s / 2 for s in SPACING]
  assert qc.check_prediction(fine, spacing, reference) == []


def test_swapped_sides_are_flagged_by_centroid(reference):
  label = _label('case_a')
  swapped = np.choose(label, [0, 2, 1]).astype(np.uint8)
  flags = qc.check_prediction(swapped, SPACING, reference)
  assert _checks(flags) == [('centroid', 1), ('centroid', 2)]
  # Class 1 now sits where class 2 was: x 14.5 of 0..19.
  assert flags[0]['value'][0] == pytest.approx(14.5 / 19)
  np.testing.assert_allclose(flags[0]['expected'][0],
                             [3.5 / 19 - 0.15, 5.0 / 19 + 0.15])
  assert flags[0]['message'].startswith(
      'class 1 (left): centroid at 0.76 along axis 0 (training 0.18-0.26)')


def test_an_erased_class_is_flagged_absent(reference):
  label = _label('case_a')
  label[label == 2] = 0
  flags = qc.check_prediction(label, SPACING, reference)
  assert _checks(flags) == [('absent', 2)]
  assert flags[0]['value'] == 0.0
  assert flags[0]['expected'] == [64.0, 320.0]


def _salted():
  """case_a with 20 isolated class-1 voxels far from every box."""
  label = _label('case_a')
  for x in (0, 2, 4, 6, 8):
    for y in (0, 10):
      for z in (0, 9):
        label[x, y, z] = 1
  return label


def test_salt_noise_is_flagged_by_components(reference):
  flags = qc.check_prediction(_salted(), SPACING, reference)
  assert _checks(flags) == [('components', 1)]
  # 21 components; the limit is max(2 x 1, 1 + 3) = 4.
  assert flags[0]['value'] == 21 and flags[0]['expected'] == [1, 4]


def test_largest_component_post_processing_is_what_gets_checked(reference):
  assert qc.check_prediction(_salted(), SPACING, reference,
                             largest_component=[1]) == []


def test_a_class_ten_times_its_volume_is_flagged_by_volume(reference):
  label = _label('case_a')
  label[label == 1] = 0
  label[0:8, 2:10, 0:10] = 1  # 640 voxels, centroid (3.5, 5.5, 4.5)
  flags = qc.check_prediction(label, SPACING, reference)
  assert _checks(flags) == [('volume', 1)]
  assert flags[0]['value'] == 1280.0  # 640 x 2 mm^3
  assert flags[0]['expected'] == [64.0, 320.0]  # 0.5 x 128, 2 x 160


def test_multi_label_masks_are_checked_per_channel():
  info = _fingerprint()
  info['label_type'] = 'multi_label'
  info['labels'] = {'0': 'left', '1': 'right'}
  for case in info['cases']:  # the same boxes as mask channels 0 and 1
    case['class_voxel_counts'] = case['class_voxel_counts'][1:]
    for key in ('components', 'centroid_voxel'):
      case[key] = {str(int(k) - 1): v for k, v in case[key].items()}
  reference = qc.reference_from_dataset_info(info, 'ds.json')
  label = _label('case_b')
  masks = np.stack([label == 1, label == 2], -1).astype(np.uint8)
  assert qc.check_prediction(masks, SPACING, reference) == []
  flags = qc.check_prediction(masks[..., ::-1], SPACING, reference)
  assert _checks(flags) == [('centroid', 0), ('centroid', 1)]


def test_a_fingerprint_without_centroids_is_one_line_naming_the_case():
  info = _fingerprint()
  del info['cases'][0]['centroid_voxel']
  with pytest.raises(ValueError, match=(
      r"^ds.json: case case_a has no 'centroid_voxel'; re-convert")):
    qc.reference_from_dataset_info(info, 'ds.json')


# ----------------------------------------------------------------------------
# Through predict
# ----------------------------------------------------------------------------

INTENSITY = np.array([100.0, 250.0, 400.0], np.float32)


def _threshold_predict_fn(batch):
  """One-hot of the class whose intensity the voxel has (CT norm below)."""
  classes = np.digitize(batch[..., 0] * 100.0 + 250.0, (175.0, 325.0))
  return np.eye(3, dtype=np.float32)[classes]


def _dataset_json(tmp_path):
  info = _fingerprint()
  info['preprocessing'] = {
      'orientation': 'RAS', 'crop_to_nonzero': True, 'resample': None,
      'image_interpolation': 'spline order 3', 'label_interpolation':
      'nearest', 'normalization': [{'scheme': 'ct', 'clip': [0.0, 500.0],
                                    'mean': 250.0, 'std': 100.0}]}
  path = tmp_path / 'dataset.json'
  path.write_text(json.dumps(info))
  return str(path)


def _cfg(tmp_path, **predict_values):
  return config.merge(config.Config(), {
      'num_classes': 3, 'input_image_size': [16] * 3, 'predict_batch_size': 2,
      'model_dir': str(tmp_path / 'run'),
      'predict': {'input_pattern': str(tmp_path / 'scans'),
                  'output_dir': str(tmp_path / 'seg'), **predict_values}})


def test_predict_flags_a_swapped_scan_in_report_and_console(
    tmp_path, monkeypatch, capsys):
  scans = tmp_path / 'scans'
  scans.mkdir()
  affine = np.diag(list(SPACING) + [1.0])  # RAS: the stored grid itself
  label = _label('case_a')
  swapped = np.choose(label, [0, 2, 1])
  for name, lab in (('a_plain', label), ('b_swapped', swapped)):
    nib.save(nib.Nifti1Image(INTENSITY[lab], affine),
             str(scans / f'{name}.nii.gz'))
  cfg = _cfg(tmp_path, dataset_json=_dataset_json(tmp_path))
  monkeypatch.setattr(predict.ensemble, 'members', lambda *a, **k: [])
  monkeypatch.setattr(
      predict.restore, 'restore_for_inference',
      lambda *a, **k: types.SimpleNamespace(
          step=1, members=None, probabilities=_threshold_predict_fn))
  report = predict.predict_files(cfg)
  plain, flagged = report['files']
  assert plain['quality_control'] == []
  assert _checks(flagged['quality_control']) == [('centroid', 1),
                                                 ('centroid', 2)]
  # The output is the prediction, flagged or not.
  np.testing.assert_array_equal(
      np.asarray(nib.load(flagged['output']).dataobj), swapped)
  warnings = [l for l in capsys.readouterr().err.splitlines()
              if l.startswith('warning: ')]
  assert len(warnings) == 1
  assert warnings[0].startswith(
      f"warning: {flagged['input']}: implausible segmentation (quality "
      'control): class 1 (left): centroid at 0.76 along axis 0')
  summary = predict_report.format_summary(report).splitlines()
  assert summary[-2:] == ['quality control flagged 1 file(s):',
                          '  ' + warnings[0][len('warning: '):]]


def test_quality_control_is_skipped_without_a_dataset_json(tmp_path):
  cfg = _cfg(tmp_path, preprocessing='none')
  assert preprocessing_info.quality_reference(cfg, None) is None
  path = _dataset_json(tmp_path)
  # Preprocessed inputs with an explicit dataset.json are still checked.
  cfg = _cfg(tmp_path, preprocessing='none', dataset_json=path)
  assert preprocessing_info.quality_reference(cfg, None).num_cases == 2
  off = _cfg(tmp_path, dataset_json=path, quality_control=False)
  assert preprocessing_info.quality_reference(off, {}) is None
  # A dataset.json without a fingerprint: skipped, not an error.
  assert preprocessing_info.quality_reference(
      _cfg(tmp_path, dataset_json=path), {'cases': []}) is None

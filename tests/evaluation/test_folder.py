"""Tests for unet3d/evaluation/folder.py (`--mode=evaluate_folder`) and the
per-case scoring it shares with --mode=eval (unet3d/evaluation/scoring.py).
"""

import csv
import json
import os

import nibabel as nib
import numpy as np
import pytest

from unet3d import config
from unet3d.evaluation import folder
from unet3d.evaluation import scoring
from unet3d.inference import prediction_files
from unet3d.preprocess import io

SPACING = (1.0, 1.0, 2.0)  # voxel volume 2 mm³ = 0.002 ml
AFFINE = np.diag(SPACING + (1.0,))
HEADER = ('case,class,dice,iou,hd95,assd,nsd,volume_pred_ml,'
          'volume_label_ml')


def _cfg(**metrics):
  cfg = config.merge(config.Config(), {'metrics': {'overlays': False,
                                                   **metrics}})
  config.validate(cfg)
  return cfg


def _volumes():
  """{case: (label, prediction)}: class 1 an 8-voxel cube, predicted as 4
  of its voxels (dice 2*4/12); class 2 a 2-voxel bar predicted exactly in
  case_a, missed in case_b."""
  out = {}
  for case, hit in (('case_a', True), ('case_b', False)):
    label = np.zeros((8, 8, 8), np.uint8)
    label[1:3, 1:3, 1:3] = 1
    label[5, 5, 4:6] = 2
    pred = np.zeros_like(label)
    pred[1:3, 1:3, 1] = 1
    if hit:
      pred[5, 5, 4:6] = 2
    out[case] = (label, pred)
  return out


def _write(root, names=lambda case: f'{case}.nii.gz', affine=AFFINE):
  labels, preds = root / 'labelsTs', root / 'pred'
  for case, (label, pred) in _volumes().items():
    io.save_nifti(str(labels / f'{case}.nii.gz'), label, AFFINE)
    io.save_nifti(str(preds / names(case)), pred, affine)
  return str(labels), str(preds)


def _run(root, cfg=None, **options):
  labels, preds = options.pop('dirs', None) or _write(root)
  opts = folder.FolderOptions(labels, preds, str(root / 'out'), **options)
  return folder.evaluate_folder(cfg or _cfg(), opts)


def _rows(root):
  lines = (root / 'out' / 'metrics.csv').read_text().splitlines()
  return lines[0], list(csv.DictReader(lines))


def test_hand_made_predictions_give_hand_computed_dice_and_volumes(tmp_path):
  summary = _run(tmp_path)
  header, rows = _rows(tmp_path)
  assert header == HEADER
  by = {(r['case'], r['class']): r for r in rows}
  assert sorted(by) == [('case_a', 'class_1'), ('case_a', 'class_2'),
                        ('case_b', 'class_1'), ('case_b', 'class_2')]
  for case in ('case_a', 'case_b'):
    row = by[(case, 'class_1')]
    assert float(row['dice']) == pytest.approx(8 / 12)
    assert float(row['iou']) == pytest.approx(4 / 8)
    assert float(row['volume_label_ml']) == pytest.approx(8 * 2 / 1000)
    assert float(row['volume_pred_ml']) == pytest.approx(4 * 2 / 1000)
  assert float(by[('case_a', 'class_2')]['dice']) == 1.0
  assert float(by[('case_a', 'class_2')]['hd95']) == 0.0
  missed = by[('case_b', 'class_2')]
  assert float(missed['dice']) == 0.0 and float(missed['nsd']) == 0.0
  assert float(missed['hd95']) == pytest.approx(373.13)  # the penalty
  assert float(missed['volume_pred_ml']) == 0.0
  assert summary['num_cases'] == 2
  stats = summary['per_class']['class_2']['dice']
  assert stats['mean'] == 0.5 and stats['median'] == 0.5 and stats['n'] == 2


def test_every_report_records_its_conventions(tmp_path):
  cfg = _cfg(hd95='pooled', surface_weighting='voxel', hd95_penalty_mm=100.0,
             surface_tolerance_mm=2.0)
  _run(tmp_path, cfg)
  expected = scoring.conventions_from_config(cfg).describe()
  assert expected['hd95'] == 'pooled' and expected['nsd_tolerance_mm'] == 2.0
  summary = json.loads((tmp_path / 'out' / 'summary.json').read_text())
  side = json.loads((tmp_path / 'out' / 'conventions.json').read_text())
  assert summary['conventions'] == side == expected


def test_predict_outputs_and_nnunet_names_match_their_labels(tmp_path):
  volumes = _volumes()
  labels, _ = _write(tmp_path)
  ours = tmp_path / 'ours'
  ours.mkdir()
  for case, (_, pred) in volumes.items():  # predict's writer: <name>_seg
    source = os.path.join(labels, f'{case}.nii.gz')
    prediction_files.write_segmentation(
        prediction_files.output_path(str(ours), source), pred, source)
    prediction_files.write_probabilities(  # skipped by the matching
        prediction_files.probabilities_path(str(ours), source, 'nifti'),
        np.ones((8, 8, 8, 3), np.float32) / 3, source, ['a', 'b', 'c'])
  images = tmp_path / 'imagesTs'
  for case in volumes:  # nnU-Net's channel suffix
    io.save_nifti(str(images / f'{case}_0000.nii.gz'),
                  np.random.default_rng(0).normal(size=(8, 8, 8)), AFFINE)
  (tmp_path / 'dataset.json').write_text(json.dumps(
      {'labels': {'background': 0, 'liver': 1, 'tumour': 2}}))
  summary = _run(tmp_path, _cfg(overlays=True), dirs=(labels, str(ours)),
                 image_dir=str(images))
  assert summary['classes'] == ['background', 'liver', 'tumour']
  assert summary['per_class']['liver']['dice']['mean'] == pytest.approx(
      8 / 12)
  assert [os.path.basename(p) for p in summary['files']['overlays']] == [
      'case_a.png', 'case_b.png']
  assert all(os.path.getsize(p) > 0 for p in summary['files']['overlays'])
  # nnU-Net writes predictions under the label's own name.
  nnunet = _run(tmp_path, dirs=_write(tmp_path / 'nn'))
  assert nnunet['per_class']['class_1'] == summary['per_class']['liver']


def test_candidate_ids_and_ambiguous_or_unmatched_files():
  assert folder.candidate_ids('case_001_seg', 'prediction') == [
      'case_001_seg', 'case_001']
  assert folder.candidate_ids('case_0001', 'prediction') == ['case_0001']
  assert folder.candidate_ids('case_001_0000', 'image') == [
      'case_001_0000', 'case_001']
  labels = {'case_001': 'L/case_001.nii.gz'}
  with pytest.raises(ValueError, match='case case_001: two predictions'):
    folder.match_cases(labels, {'case_001': 'P/case_001.nii.gz',
                                'case_001_seg': 'P/case_001_seg.nii.gz'},
                       'prediction')


def test_unmatched_labels_and_predictions_are_one_line_errors(tmp_path):
  labels, preds = _write(tmp_path)
  os.remove(os.path.join(preds, 'case_b.nii.gz'))
  with pytest.raises(ValueError, match=r'no prediction for 1 labels: '
                     r'case_b \(--allow_missing_predictions'):
    _run(tmp_path, dirs=(labels, preds))
  summary = _run(tmp_path, dirs=(labels, preds), allow_missing=True)
  assert summary['missing_predictions'] == ['case_b']
  _, rows = _rows(tmp_path)
  empty = [r for r in rows if r['case'] == 'case_b']
  assert [float(r['dice']) for r in empty] == [0.0, 0.0]
  io.save_nifti(os.path.join(preds, 'other.nii.gz'),
                np.zeros((8, 8, 8), np.uint8), AFFINE)
  with pytest.raises(ValueError, match='1 predictions match no label in .*: '
                     'other.nii.gz'):
    _run(tmp_path, dirs=(labels, preds), allow_missing=True)


@pytest.mark.parametrize('change,message', [
    ('shape', r'shape \(8, 8, 7\) != label shape \(8, 8, 8\)'),
    ('origin', r'origin \[0.5, 0.0, 0.0\] != label \[0.0, 0.0, 0.0\] mm'),
    ('rotation', 'direction differs from the label'),
    ('spacing', 'spacing')])
def test_a_prediction_off_its_labels_grid_is_refused(tmp_path, change,
                                                     message):
  labels, preds = _write(tmp_path)
  path = os.path.join(preds, 'case_b.nii.gz')
  pred = np.asarray(nib.load(path).dataobj)
  affine = AFFINE.copy()
  if change == 'shape':
    pred = pred[..., :7]
  elif change == 'origin':
    affine[0, 3] = 0.5
  elif change == 'rotation':
    turn = 0.01
    rot = np.array([[np.cos(turn), -np.sin(turn), 0],
                    [np.sin(turn), np.cos(turn), 0], [0, 0, 1]])
    affine[:3, :3] = rot @ affine[:3, :3]
  else:
    affine[2, 2] = 2.01
  io.save_nifti(path, pred, affine)
  with pytest.raises(ValueError) as error:
    _run(tmp_path, dirs=(labels, preds))
  text = str(error.value)
  assert '\n' not in text
  assert text.startswith('case case_b: prediction ') and 'not on the grid' \
      in text
  assert __import__('re').search(message, text)


def test_a_tiny_affine_difference_is_within_tolerance(tmp_path):
  affine = AFFINE.copy()
  affine[:3, 3] = 2e-4
  _run(tmp_path, dirs=_write(tmp_path, affine=affine))


def test_summary_statistics_match_numpy_and_an_independent_bootstrap():
  rng = np.random.default_rng(5)
  values = list(rng.uniform(size=17)) + [None, float('nan')]
  stats = folder.summary_statistics(values, samples=500, seed=3)
  finite = np.array(values[:17])
  assert stats['n'] == 17
  assert stats['mean'] == pytest.approx(np.mean(finite))
  assert stats['median'] == pytest.approx(np.median(finite))
  assert stats['std'] == pytest.approx(np.std(finite, ddof=1))
  draws = np.random.default_rng(3)
  means = [finite[draws.integers(0, 17, 17)].mean() for _ in range(500)]
  low, high = np.percentile(means, [2.5, 97.5])
  assert stats['ci95'] == pytest.approx([low, high])
  assert folder.summary_statistics([None])['mean'] is None
  infinite = folder.summary_statistics([1.0, 3.0, float('inf')])
  assert infinite['mean'] == 2.0 and infinite['num_infinite'] == 1


def test_lesion_wise_columns_when_asked(tmp_path):
  summary = _run(tmp_path, _cfg(lesion_wise=True, lesion_min_volume_mm3=0))
  header, rows = _rows(tmp_path)
  assert header == HEADER + (',lesion_dice,lesion_hd95,lesion_tp,lesion_fp,'
                             'lesion_fn,lesion_f1')
  by = {(r['case'], r['class']): r for r in rows}
  missed = by[('case_b', 'class_2')]
  assert (missed['lesion_tp'], missed['lesion_fn'], missed['lesion_fp']) == (
      '0', '1', '0')
  assert float(missed['lesion_dice']) == 0.0
  assert float(by[('case_a', 'class_1')]['lesion_dice']) == pytest.approx(
      8 / 12)
  assert summary['per_class']['class_2']['lesion_f1']['mean'] == 0.5


def test_exclude_leaves_every_metric_of_a_class_empty_in_both_out():
  label = np.zeros((6, 6, 6), np.uint8)
  label[1:3, 1:3, 1:3] = 1
  names = ('background', 'a', 'b')
  for cfg in (_cfg(empty_class='exclude'), _cfg(empty_masks='nan')):
    options = scoring.ScoringOptions.from_config(cfg, names, 1)
    rows = scoring.score_case('c', label, label, (1, 1, 1), options).rows
    empty = rows[1]
    assert empty['class'] == 'b'
    assert all(empty[m] is None for m in ('dice', 'iou', 'hd95', 'assd',
                                          'nsd'))
  rows = scoring.score_case('c', label, label, (1, 1, 1),
                            scoring.ScoringOptions.from_config(
                                _cfg(), names, 1)).rows
  assert (rows[1]['dice'], rows[1]['hd95'], rows[1]['nsd']) == (1.0, 0.0,
                                                                1.0)


def test_empty_policy_keys_agree_or_are_refused():
  from unet3d.config.validation import empty_policy
  assert empty_policy(_cfg().metrics) == 'fixed'
  assert empty_policy(_cfg(empty_class='exclude').metrics) == 'nan'
  assert empty_policy(_cfg(empty_masks='nan').metrics) == 'nan'
  with pytest.raises(config.ConfigError, match='metrics.empty_masks'):
    _cfg(empty_class='exclude', empty_masks='fixed')
  with pytest.raises(config.ConfigError, match='metrics.hd95:'):
    _cfg(hd95='mean')


def test_unet_main_evaluate_folder_writes_the_report_or_one_error_line(
    tmp_path):
  import subprocess  # pylint: disable=g-import-not-at-top
  import sys  # pylint: disable=g-import-not-at-top
  repo = os.path.dirname(os.path.dirname(os.path.dirname(
      os.path.abspath(__file__))))
  labels, preds = _write(tmp_path)

  def run(*extra):
    return subprocess.run(
        [sys.executable, os.path.join(repo, 'unet_main.py'),
         '--mode=evaluate_folder', f'--label_dir={labels}',
         f'--output_dir={tmp_path / "out"}', *extra],
        capture_output=True, text=True, timeout=300,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL='3'))

  proc = run(f'--prediction_dir={preds}',
             '--params_override=metrics.hd95=pooled,num_classes=3')
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert 'class_1  dice 0.6667' in proc.stdout
  summary = json.loads((tmp_path / 'out' / 'summary.json').read_text())
  assert summary['conventions']['hd95'] == 'pooled'
  assert len(summary['files']['overlays']) == 2
  os.remove(os.path.join(preds, 'case_a.nii.gz'))
  proc = run(f'--prediction_dir={preds}')
  assert proc.returncode == 1
  errors = [l for l in proc.stderr.splitlines() if l.startswith('error: ')]
  assert errors == ['error: --prediction_dir: no prediction for 1 labels: '
                    'case_a (--allow_missing_predictions scores them as '
                    'empty predictions)'], proc.stderr[-2000:]

"""Tests for unet3d/evaluation/case_dumps.py: `metrics.save_nifti`."""

import csv

import nibabel as nib
import numpy as np
import pytest

from tests import runs
from unet3d import config
from unet3d import models
from unet3d.evaluation import evaluator
from unet3d.inference import whole_volume


@pytest.fixture(scope='module')
def records(tmp_path_factory):
  root = tmp_path_factory.mktemp('records')
  return root, runs.make_records(root)


def test_eval_dumps_each_case_on_the_records_grid(records, tmp_path):
  root, val_volumes = records
  cfg = runs.run_config(root, tmp_path / 'run', data={
      'eval_mode': 'whole_volume'}, metrics={
          'save_nifti': True, 'surface_metrics': False, 'overlays': False})
  model = models.build_model(cfg)
  report = evaluator.evaluate(cfg, model=model, step=0)
  folder = tmp_path / 'run' / 'eval' / 'nifti'
  assert sorted(p.name for p in folder.iterdir()) == sorted(
      f'{v.case_id}_{part}.nii.gz' for v in val_volumes
      for part in ('image', 'label', 'prediction'))
  assert len(report['report_files']['nifti']) == 9
  volume_fn = whole_volume.volume_fn(
      cfg, whole_volume.probabilities_fn(cfg, [model]))
  with open(tmp_path / 'run' / 'eval' / 'cases.csv') as f:
    dice = {(r['case_id'], r['class']): r['dice'] for r in csv.DictReader(f)}
  for volume in val_volumes:
    loaded = {part: nib.load(folder / f'{volume.case_id}_{part}.nii.gz')
              for part in ('image', 'label', 'prediction')}
    for image in loaded.values():
      np.testing.assert_allclose(image.affine, volume.affine, atol=1e-5)
      np.testing.assert_allclose(image.header.get_zooms()[:3],
                                 volume.spacing, atol=1e-6)
    np.testing.assert_allclose(loaded['image'].get_fdata(),
                               volume.image[..., 0], atol=1e-5)
    label = np.asarray(loaded['label'].dataobj)
    np.testing.assert_array_equal(label, volume.label)
    prediction = np.asarray(loaded['prediction'].dataobj)
    assert prediction.dtype == np.uint8
    np.testing.assert_array_equal(prediction, whole_volume.segmentation(
        volume_fn(volume.image), 'softmax'))
    # The dumped prediction is the one the report scored.
    for cls in (1, 2, 3):
      row = dice[(volume.case_id, f'class_{cls}')]
      if row:
        assert float(row) == pytest.approx(
            runs.numpy_dice(prediction, label, cls), abs=1e-5)


def test_save_nifti_needs_whole_volumes(records, tmp_path):
  root, _ = records
  cfg = runs.run_config(root, tmp_path / 'run',
                        metrics={'save_nifti': True})
  with pytest.raises(config.ConfigError,
                     match='^metrics.save_nifti: needs data.eval_mode: '
                           'whole_volume'):
    evaluator.evaluate(cfg, model=models.build_model(cfg), step=0)

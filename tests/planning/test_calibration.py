"""Calibration: candidates trained briefly, chosen by held-out dice; and the
progress lines planning prints."""

import os
import re

import numpy as np
import pytest
import yaml

from unet3d.input import schema
from unet3d.planning import calibration
from unet3d.planning import run as plan_run
from unet3d.planning import wall_time
from unet3d.preprocess import regrid
from tests import demo_records
from tests.planning import fabricate


def test_hold_out_prefers_the_val_split_then_the_last_case_then_a_region():
  assert calibration.hold_out(fabricate.make(num_cases=6, num_val=2)) == (
      calibration.HoldOut('cases', ('case0', 'case1')))
  assert calibration.hold_out(fabricate.make(num_cases=3, num_val=0)) == (
      calibration.HoldOut('cases', ('case2',)))
  assert calibration.hold_out(fabricate.make(num_cases=1, num_val=0)) == (
      calibration.HoldOut('region'))


def test_a_held_out_region_is_the_end_of_the_longest_axis():
  image = np.arange(4 * 8 * 3, dtype=np.float32).reshape(4, 8, 3, 1)
  label = (image[..., 0] % 3).astype(np.uint8)
  affine = np.diag([2.0, 1.0, 1.0, 1.0])
  volume = schema.Volume(image, label, np.array([2.0, 1.0, 1.0]), affine,
                         'only')
  parts = regrid.hold_out_region(0.25)(volume, 'train')
  assert [p[0] for p in parts] == ['train', 'val']
  np.testing.assert_array_equal(parts[0][1].image, image[:, :6])
  np.testing.assert_array_equal(parts[1][1].label, label[:, 6:])
  # The held-out part keeps its place in the world.
  np.testing.assert_allclose(parts[1][1].affine[:3, 3], [0.0, 6.0, 0.0])


def test_the_best_score_wins_and_a_near_tie_keeps_the_rules_choice():
  assert calibration.pick([0.2, 0.5, 0.4], 0) == 1
  assert calibration.pick([0.5, 0.5, 0.4], 1) == 1
  assert calibration.pick([0.0, 0.0, 0.0], 2) == 2
  # Within TIE of the best: noise, not evidence.
  assert calibration.pick([0.001, 0.0, 0.003], 1) == 1
  assert calibration.pick([0.40, 0.40 - calibration.TIE / 2, 0.1], 1) == 1
  assert calibration.pick([0.40, 0.40 - 2 * calibration.TIE, 0.1], 1) == 0


def test_calibration_steps_fill_a_candidates_share():
  overheads = wall_time.Overheads(startup=10.0, window=0.5, checkpoint=1.0)
  # 100 s less 10 s startup, 8 windows (4 s) and a checkpoint (1 s): 85 s.
  assert calibration.calibration_steps(100.0, 0.5, overheads, 8) == 170


def test_progress_lines_give_elapsed_time_and_an_eta(monkeypatch):
  now = [100.0]
  monkeypatch.setattr(plan_run.time, 'perf_counter', lambda: now[0])
  lines = []
  progress = plan_run.Progress(lines.append)
  progress.start('timing training steps at 3 candidate spacings')
  now[0] += 60.0
  progress.update(1, 3, 'spacings sized')
  now[0] += 60.0
  progress.update(3, 3, 'spacings sized')
  assert lines == [
      'plan: timing training steps at 3 candidate spacings ...',
      'plan: timing training steps at 3 candidate spacings: 1/3 spacings '
      'sized (1m00s elapsed, about 2m00s left)',
      'plan: timing training steps at 3 candidate spacings: 3/3 spacings '
      'sized (2m00s elapsed)']


@pytest.fixture(scope='module')
def two_cases(tmp_path_factory):
  return demo_records.convert_demo_task(
      tmp_path_factory.mktemp('calibrate'), 2, (16, 16, 16), seed=3)


def test_a_calibrated_plan_records_every_candidates_score(two_cases):
  lines = []
  # 8 s a step: each candidate's share of 0.2 h (80 s) holds 10 steps.
  result = plan_run.plan_dataset(
      two_cases, 'cpu2', train_hours=0.2, seconds_per_step=lambda s: 8.0,
      overheads=lambda s: wall_time.Overheads(0.0, 0.0, 0.0),
      out=lines.append, calibrate=True)
  text = open(result['plan_file']).read()
  note = [n for n in result['notes'] if 'calibration: mean foreground' in n]
  assert len(note) == 1
  scores = [float(s) for s in re.findall(r'mm ([0-9.]+) \(10 steps\)',
                                         note[0])]
  assert len(scores) == 3
  assert 'held-out case demo_001' in note[0]
  # The chosen spacing is the one calibration.pick gives for the scores
  # (the coverage rule's choice is the stored spacing here: a 16^3 case
  # fits one patch).
  chosen = re.search(r'chose ([0-9.]+) x', text).group(1)
  spacings = re.findall(r'([0-9.]+) x [0-9.]+ x [0-9.]+ mm [0-9.]+ \(',
                        note[0])
  assert spacings[calibration.pick(scores, 0)] == chosen
  # The recipe's steps fill the other 75% of the hours: 0.15 h of 8 s.
  recipe = yaml.safe_load(text)
  assert recipe['train_steps'] == int(0.15 * 3600 / 8) // 50 * 50
  assert 'train_steps fill the other 75% (0.15 h)' in text
  assert any('calibrating 3 candidate spacings: 3/3' in l for l in lines)
  # Nothing of the scratch work is left beside the records.
  assert not [f for f in os.listdir(two_cases) if 'calibration' in f]


def test_a_gpu_budget_refuses_calibration(two_cases):
  with pytest.raises(ValueError, match='--calibrate: only CPU budgets'):
    plan_run.plan_dataset(two_cases, 'gpu16g', calibrate=True)

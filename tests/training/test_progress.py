"""Tests for unet3d/training/progress.py: lines, ETA, pacing."""

import io

from unet3d.training import progress


def test_durations_and_counts():
  assert progress.format_duration(45) == '45s'
  assert progress.format_duration(425) == '7m05s'
  assert progress.format_duration(2 * 3600 + 3 * 60 + 20) == '2h03m'
  assert progress.format_duration(3 * 86400 + 4 * 3600) == '3d04h'
  assert progress.format_count(912) == '912'
  assert progress.format_count(12_345) == '12.3k'
  assert progress.format_count(4_561_000) == '4.56M'


def test_snapshot_line_and_eta():
  snap = progress.Snapshot(step=120, total=400, loss=0.41321,
                           learning_rate=2.1e-3, steps_per_second=2.0,
                           voxels_per_step=221_184, epoch=1.5)
  assert snap.eta_seconds == 140.0  # 280 steps at 2 steps/s
  assert snap.line() == ('step 120/400 (30%)  epoch 1.50  loss 0.4132  '
                         'lr 2.10e-03  2.00 steps/s  442.4k vox/s  '
                         'ETA 2m20s')


def test_lines_are_paced_and_the_first_loop_is_not_timed():
  out = io.StringIO()
  bar = progress.Progress(first_step=0, total=40, voxels_per_step=1000,
                          interval_seconds=30, stream=out, use_bar=False)
  # First loop: 10 steps in 20 s (tracing); then 10 steps per 5 s.
  first = bar.update(10, 10, 20.0, 1.0, 1e-3, now=0.0)
  assert first.steps_per_second == 0.5
  second = bar.update(20, 10, 5.0, 0.9, 1e-3, now=5.0)
  assert second.steps_per_second == 2.0  # the traced loop is left out
  bar.update(30, 10, 5.0, 0.8, 1e-3, now=31.0)
  bar.update(40, 10, 5.0, 0.7, 1e-3, now=36.0)  # the last step always prints
  lines = out.getvalue().splitlines()
  assert [l.split()[1] for l in lines] == ['10/40', '30/40', '40/40']
  assert lines[-1].endswith('ETA 0s')

"""A CPU plan's spacing and patch chosen together, and its wall time."""

import math

import pytest

from unet3d.inference import window_placement
from unet3d.planning import budgets
from unet3d.planning import planner
from unet3d.planning import spacing
from unet3d.planning import wall_time
from tests.planning import fabricate

LATERAL = {'0': 'background', '1': 'putamen_L', '2': 'putamen_R'}


def test_candidates_coarsen_the_fine_axes_only():
  assert spacing.candidate_spacings([1.0, 1.0, 1.0]) == [
      (1.0, 1.0, 1.0), (1.5, 1.5, 1.5), (2.0, 2.0, 2.0)]
  assert spacing.candidate_spacings([0.8, 0.8, 3.0]) == [
      (0.8, 0.8, 3.0), (1.2, 1.2, 3.0), (1.6, 1.6, 3.0)]
  # Coarsening that leaves nothing to change is not repeated.
  assert spacing.candidate_spacings([1.0, 2.0, 2.0])[-1] == (2.0, 2.0, 2.0)


def test_coverage_is_the_share_of_the_box_inside_one_patch():
  # 32 x 48 x 40 voxels of 1 mm against a 64 x 64 x 80 mm box.
  assert spacing.coverage([32, 48, 40], [1, 1, 1], [64, 64, 80]) == (
      pytest.approx(0.5 * 0.75 * 0.5))
  # An axis longer than the box counts fully, not more.
  assert spacing.coverage([40, 40, 40], [2, 2, 2], [64, 64, 64]) == 1.0


def test_a_case_at_another_spacing_scales_shapes_counts_and_centroids():
  case = fabricate.make(foreground_box={'start': [10, 0, 4],
                                        'stop': [50, 60, 44]}).cases[0]
  at = case.at_spacing((2.0, 2.0, 2.0))
  assert at.stored_shape == (32, 32, 32)
  assert at.foreground_extent == (20, 30, 20)
  assert at.class_voxel_counts['1'] == round(100 / 8)
  assert at.centroid_voxel['1'] == (10.0, 16.0, 16.0)


def _step_proportional_to_voxels(sizing):
  # 3 us a voxel of the batch: 0.9 s (2000 steps in 0.5 h) holds two
  # patches of 150,000 voxels.
  return 3e-6 * math.prod(sizing.patch) * sizing.batch


def _plan_with_box(box_voxels, hours=0.5, **kwargs):
  """A 1 mm dataset whose foreground box is box_voxels; a CPU plan with a
  step time proportional to the patch's voxels."""
  start = [4, 4, 4]
  fp = fabricate.make(
      labels=LATERAL, shape=(160, 192, 160), num_cases=8,
      foreground_box={'start': start,
                      'stop': [a + b for a, b in zip(start, box_voxels)]},
      **kwargs)
  budget = budgets.get_budget('cpu2', train_hours=hours)
  return planner.make_plan(fp, budget, '/data', _step_proportional_to_voxels)


def test_a_large_foreground_box_makes_a_time_budget_coarsen_the_spacing():
  plan = _plan_with_box([80, 100, 70])
  values = plan.values()
  assert plan.resample_to in ((1.5, 1.5, 1.5), (2.0, 2.0, 2.0))
  folder = spacing.spacing_folder(plan.resample_to)
  assert values['training_file_pattern'] == f'/data/{folder}/train-*.tfrecord'
  assert values['eval_file_pattern'] == f'/data/{folder}/val-*.tfrecord'
  # Every candidate's numbers are in the notes, with the choice.
  candidates = [n for n in plan.notes if n.startswith('spacing candidate')]
  assert len(candidates) == 3
  assert any('chose' in n and 'foreground box' in n for n in plan.notes)
  # The chosen patch covers the target share of the box, the finer one not.
  covered = [float(n.split('covers ')[1].split('%')[0]) / 100
             for n in candidates]
  chosen = spacing.candidate_spacings([1.0, 1.0, 1.0]).index(
      plan.resample_to)
  assert covered[chosen] >= spacing.COVERAGE_TARGET
  assert all(c < spacing.COVERAGE_TARGET for c in covered[:chosen])
  assert not any('target spacing: the rule gives' in w for w in plan.warnings)


def test_when_no_patch_covers_the_target_the_one_that_covers_most_wins():
  # Every candidate's patch is 48 x 64 x 48 voxels (the step time depends
  # on voxels only), so 2 mm covers 96 x 128 x 96 of 120 x 150 x 110 mm.
  plan = _plan_with_box([120, 150, 110])
  assert plan.resample_to == (2.0, 2.0, 2.0)
  assert any('covers 60% of the foreground box' in n for n in plan.notes)
  assert any('the one that covers most' in n for n in plan.notes)


def test_a_small_foreground_box_keeps_the_stored_spacing():
  plan = _plan_with_box([24, 24, 24])
  assert plan.resample_to is None
  assert plan.values()['training_file_pattern'] == '/data/train-*.tfrecord'


def test_without_a_recorded_box_the_median_case_is_the_extent():
  fp = fabricate.make(shape=(32, 32, 32))
  extent, is_foreground = fp.foreground_extent_mm()
  assert not is_foreground and list(extent) == [32.0, 32.0, 32.0]


def test_fewer_than_five_cases_train_and_evaluate_on_every_case():
  fp = fabricate.make(num_cases=2, num_val=1)
  plan = planner.make_plan(fp, budgets.get_budget('gpu16g'), '/data')
  values = plan.values()
  assert values['training_file_pattern'] == '/data/*.tfrecord'
  assert values['eval_file_pattern'] == '/data/*.tfrecord'
  assert any('fold "all"' in n for n in plan.notes)


@pytest.mark.parametrize('size', [1, 31, 32, 33, 47, 64, 100, 197])
@pytest.mark.parametrize('patch', [32, 40, 48])
def test_the_window_count_is_inferences_own(size, patch):
  assert wall_time.windows_per_axis(size, patch, 0.5) == len(
      window_placement.window_starts(size, patch, 0.5))


def test_evaluation_windows_count_every_case_and_mirror():
  fp = fabricate.make(shape=(64, 64, 48), num_cases=2, num_val=1)
  # 32^3 windows at half overlap: 3 x 3 x 2 per case, 4 mirror passes.
  assert wall_time.evaluation_windows(fp.cases, [32, 32, 32], 0.5,
                                      [1, 2]) == 2 * 4 * 18


def test_steps_fill_the_budget_less_the_overheads():
  overheads = wall_time.Overheads(startup=40.0, window=0.05, checkpoint=0.5)
  steps = wall_time.steps_that_fit(1800.0, 0.7, overheads, 400, 1, 21)
  # 1800 - 40 - 20 - 10.5 = 1729.5 s of steps: 2470 steps of 0.7 s.
  assert steps == 2470
  total = wall_time.wall_time(steps, 0.7, overheads, 400, 1, 21).total
  assert total <= 1800.0 < total + 0.7


def test_the_plan_estimates_its_wall_time_from_the_measured_overheads():
  fp = fabricate.make(shape=(64, 64, 64))
  budget = budgets.get_budget('cpu2', train_hours=0.5)
  overheads = wall_time.Overheads(startup=60.0, window=0.1, checkpoint=1.0)
  plan = planner.make_plan(fp, budget, '/data', lambda sizing: 0.5,
                           overheads=lambda sizing: overheads)
  steps = plan.values()['train_steps']
  note = [n for n in plan.notes if n.startswith('estimated wall time')]
  assert note and '60 s startup' in note[0]
  # 2 val cases, one 64^3 window each, 8 mirror passes: 1.6 s evaluating.
  windows = wall_time.evaluation_windows(
      [c for c in fp.cases if c.split == 'val'],
      plan.values()['input_image_size'], 0.5,
      plan.values()['inference.mirror_axes'])
  rest = 1800 - 60 - windows * 0.1 - 21 * 1.0
  assert steps == int(rest / 0.5) // 50 * 50

"""Plans of fabricated fingerprints: each rule as the recipe shows it."""

import dataclasses
import math

import pytest
import yaml

from unet3d import config
from unet3d.planning import budgets
from unet3d.planning import planner
from unet3d.planning import recipe
from unet3d.planning import sizing as sizing_lib
from tests.planning import fabricate

GPU = budgets.get_budget('gpu16g')
LATERAL = {'0': 'background', '1': 'kidney_L', '2': 'kidney_R',
           '3': 'liver'}


def _plan(budget=GPU, seconds_per_step=None, **kwargs):
  fp = fabricate.make(**kwargs)
  return planner.make_plan(fp, budget, '/data', seconds_per_step).values()


def test_anisotropic_data_plans_in_plane_pooling_first():
  values = _plan(spacing=(0.8, 0.8, 3.0), shape=(256, 256, 40))
  assert values['model.pool_sizes'][0] == [2, 2, 1]
  assert values['model.kernel_sizes'][0] == [3, 3, 1]
  assert values['model.kernel_sizes'][1] == [3, 3, 3]
  assert values['depth'] == len(values['model.kernel_sizes'])
  strides = [math.prod(p[a] for p in values['model.pool_sizes'])
             for a in range(3)]
  assert all(s % t == 0 for s, t in zip(values['input_image_size'], strides))
  assert values['data.augmentation.rotation_degrees'] == 15.0


def test_isotropic_data_pools_every_axis():
  values = _plan(shape=(64, 64, 64))
  assert values['model.pool_sizes'] == [[2, 2, 2]] * 4
  assert values['input_image_size'] == [64, 64, 64]
  assert 'data.augmentation.rotation_degrees' not in values


def test_lateralised_labels_swap_pairs_and_mirroring_skips_that_axis():
  values = _plan(labels=LATERAL)
  assert values['data.augmentation.left_right_axis'] == 0
  assert values['data.augmentation.left_right_label_pairs'] == [[1, 2]]
  assert values['data.augmentation.flip_axes'] == [0, 1, 2]
  assert values['inference.mirror_axes'] == [1, 2]


def test_without_orientation_the_centroids_give_the_lateral_axis():
  centroids = {'1': [32.0, 30.0, 10.0], '2': [32.0, 31.0, 50.0],
               '3': [32.0, 32.0, 32.0]}
  values = _plan(labels=LATERAL, orientation='unchanged',
                 centroid_voxel=centroids)
  assert values['data.augmentation.left_right_axis'] == 2
  assert values['inference.mirror_axes'] == [0, 1]


def test_lateral_labels_without_any_axis_turn_flips_off():
  values = _plan(labels=LATERAL, orientation='unchanged', centroid_voxel={})
  assert values['data.augmentation.flip_prob'] == 0.0
  assert values['inference.mirror_axes'] == []
  assert 'data.augmentation.left_right_axis' not in values


def test_lateral_mask_channels_are_not_flipped_over_the_lateral_axis():
  labels = {'0': 'lung_left', '1': 'lung_right'}
  values = _plan(labels=labels, multi_label=True,
                 centroid_voxel={'0': [10.0, 0, 0], '1': [50.0, 0, 0]},
                 components={'0': {'count': 1}, '1': {'count': 1}})
  assert values['data.augmentation.flip_axes'] == [1, 2]
  assert values['inference.mirror_axes'] == [1, 2]
  assert 'data.augmentation.left_right_label_pairs' not in values
  assert values['model.output_activation'] == 'sigmoid'
  assert values['loss'] == 'bce_dice'


def test_no_lateral_names_flip_and_mirror_every_axis():
  values = _plan()
  assert values['data.augmentation.flip_axes'] == [0, 1, 2]
  assert values['inference.mirror_axes'] == [0, 1, 2]


def _notes_and_warnings(**kwargs):
  plan = planner.make_plan(fabricate.make(**kwargs), GPU, '/data')
  return ' '.join(plan.notes), ' '.join(plan.warnings)


def test_ct_normalisation_rule_and_a_converter_that_did_otherwise():
  ct = {'scheme': 'ct', 'clip': [-50.0, 250.0], 'mean': 1.0, 'std': 1.0}
  notes, warnings = _notes_and_warnings(modality='CT', norm=ct)
  assert 'CT: clip to the foreground 0.5-99.5 percentiles [-50, 250]' in notes
  assert not warnings
  _, warnings = _notes_and_warnings(modality='CT')  # the converter z-scored
  assert 'channel 0 normalisation: the rule says CT' in warnings
  assert 're-convert' in warnings


def test_mri_with_a_zero_background_wants_the_nonzero_mask():
  notes, warnings = _notes_and_warnings(modality='T1', nonzero_fraction=0.5)
  assert 'z-score on non-zero voxels' in warnings
  assert '--nonzero_mask' in warnings
  masked = {'scheme': 'zscore', 'within_nonzero_mask': True}
  notes, warnings = _notes_and_warnings(modality='T1', nonzero_fraction=0.5,
                                        norm=masked)
  assert 'holds 50% of the volume' in notes and not warnings
  # No zero background, but the converter was told --nonzero_mask.
  _, warnings = _notes_and_warnings(modality='T1', norm=masked)
  assert 'within the nonzero mask' in warnings
  assert '--nononzero_mask forces it' in warnings


def test_a_target_spacing_other_than_the_rule_is_a_warning_with_the_flag():
  # Cropped (input) spacing 0.5 mm, records resampled to 1 mm.
  notes, warnings = _notes_and_warnings(
      cropped={'shape': [128, 128, 128], 'spacing': [0.5, 0.5, 0.5]})
  assert '--target_spacing=0.5,0.5,0.5' in warnings
  notes, warnings = _notes_and_warnings()
  assert 'target spacing 1 x 1 x 1 mm' in notes and not warnings


def test_no_val_split_evaluates_training_cases_with_a_warning():
  fp = fabricate.make(num_val=0)
  plan = planner.make_plan(fp, GPU, '/data')
  assert plan.values()['eval_file_pattern'] == '/data/train-*.tfrecord'
  assert any('no val cases' in w for w in plan.warnings)


def test_largest_component_only_for_single_component_classes():
  components = {'1': {'count': 1}, '2': {'count': 3}}
  values = _plan(components=components)
  assert values['predict.largest_component'] == [1]
  values = _plan(components={'1': {'count': 2}, '2': {'count': 2}})
  assert 'predict.largest_component' not in values


def test_cpu_budget_shrinks_the_patch_until_enough_steps_fit():
  # A fake machine: 2 microseconds per voxel of the batch.
  def seconds(sizing):
    calls.append(sizing.patch)
    return 2e-6 * math.prod(sizing.patch) * sizing.batch

  calls = []
  budget = budgets.get_budget('cpu2', train_hours=0.5)
  values = _plan(budget=budget, seconds_per_step=seconds,
                 shape=(128, 128, 128))
  step = 2e-6 * math.prod(values['input_image_size']) * 2
  assert len(calls) >= 2 and calls[0] != calls[-1]  # measured, shrunk
  assert math.prod(calls[0]) * 2 * 2e-6 * sizing_lib.MIN_CPU_STEPS > 1800
  assert step * sizing_lib.MIN_CPU_STEPS <= 1800
  assert values['train_steps'] == int(1800 / step) // 50 * 50
  assert values['train_batch_size'] == 2
  assert values['distribution_strategy'] == 'cpu'


def _cpu_plan(seconds, **kwargs):
  budget = budgets.get_budget('cpu2', train_hours=0.5)
  fp = fabricate.make(**kwargs)
  return planner.make_plan(fp, budget, '/data', seconds)


def test_cpu_budget_warns_when_even_the_smallest_patch_is_too_slow():
  # 10 s per step whatever the patch: 1800 s hold 180 steps.
  calls = []

  def seconds(sizing):
    calls.append(list(sizing.patch))
    return 10.0 - 1e-9 * len(calls)  # a hair faster each time: keeps going

  plan = _cpu_plan(seconds, shape=(32, 32, 32))
  values = plan.values()
  smallest = calls[-1]
  assert values['input_image_size'] == smallest
  assert math.prod(smallest) < 32**3
  with pytest.raises(ValueError, match='cannot shrink'):
    sizing_lib._shrink(smallest, [32, 32, 32],
                       [math.prod(p[a] for p in values['model.pool_sizes'])
                        for a in range(3)])
  reasons = dict((k, r) for k, _, r in plan.entries)
  assert 'fewer than 2000 steps fit 0.5 h' in reasons['input_image_size']
  assert 'shrunk until' not in reasons['input_image_size']
  assert values['train_steps'] == 150  # 1800 / 10 = 180, rounded to 50
  assert any('0.5 h hold only 180 steps of 10.00 s, fewer than 2000' in w
             and '--train_hours' in w for w in plan.warnings)


def test_cpu_budget_keeps_the_faster_patch_when_shrinking_stops_helping():
  # The first (largest) patch takes 2 s, every smaller one 3 s.
  calls = []

  def seconds(sizing):
    calls.append(list(sizing.patch))
    return 2.0 if len(calls) == 1 else 3.0

  plan = _cpu_plan(seconds, shape=(64, 64, 64))
  values = plan.values()
  # (Calls after the second size the coarser candidate spacings; the stored
  # one, whose patch covers the whole case, is chosen.)
  assert math.prod(calls[1]) < math.prod(calls[0])
  assert values['input_image_size'] == calls[0]
  assert values['train_steps'] == 900  # 1800 s / 2 s
  reasons = dict((k, r) for k, _, r in plan.entries)
  assert 'stepped no faster (3.00 s)' in reasons['input_image_size']
  assert any('fewer than 2000' in w for w in plan.warnings)


def test_cpu_budget_that_fits_at_once_keeps_the_patch_and_says_so():
  plan = _cpu_plan(lambda sizing: 0.1, shape=(64, 64, 64))
  reasons = dict((k, r) for k, _, r in plan.entries)
  assert plan.values()['input_image_size'] == [64, 64, 64]
  assert '2000 measured steps of it fit 0.5 h' in reasons['input_image_size']
  assert plan.values()['train_steps'] == 18_000
  assert not any('fewer than' in w for w in plan.warnings)


def test_cache_counts_val_records_and_mask_channels():
  # 6 cases (2 val) of 64^3 voxels: float32 image + int32 label = 8 bytes a
  # voxel -> 12 MiB; three sigmoid masks instead of one label -> 24 MiB.
  # A host of 0.07 GB: a quarter is 17.9 MiB.
  host = dataclasses.replace(GPU, host_memory_gib=0.07)
  index = planner.make_plan(fabricate.make(), host, '/data')
  masks = planner.make_plan(fabricate.make(multi_label=True), host, '/data')
  reasons = {name: dict((k, (v, r)) for k, v, r in plan.entries)
             for name, plan in (('index', index), ('masks', masks))}
  value, reason = reasons['index']['data.cache']
  assert value == 'memory' and 'take 12 MiB decoded' in reason
  value, reason = reasons['masks']['data.cache']
  assert value == 'none' and 'take 24 MiB decoded' in reason


def test_cpu_budget_needs_a_step_time():
  with pytest.raises(ValueError, match='a CPU plan needs a measured step'):
    _plan(budget=budgets.get_budget('cpu2'))


def test_gpu_budget_follows_nnunet_schedule_and_precision():
  values = _plan()
  assert values['train_steps'] == 250_000
  assert values['optimizer'] == 'momentum'
  assert values['dtype'] == 'float16'
  assert values['train.jit_compile'] is True


def test_recipe_comments_every_key_and_loads_with_the_same_values():
  fp = fabricate.make(labels=LATERAL)
  plan = planner.make_plan(fp, GPU, '/data')
  text = recipe.render(plan, ['header line'])
  lines = text.splitlines()
  for i, line in enumerate(lines):
    stripped = line.strip()
    if stripped and not stripped.startswith('#') and not stripped.endswith(
        ':'):
      assert lines[i - 1].strip().startswith('# '), line
  cfg = recipe.check_loads(text, 'test')
  for key, value, _ in plan.entries:
    assert config.value_at(cfg, key) == value, key
  loaded = yaml.safe_load(text)
  assert loaded['plan']['fingerprint_sha256'] == fp.sha256


def test_a_cpu_plan_times_the_step_with_the_recipes_own_input():
  timed = []

  def seconds(sizing):
    timed.append(planner.measurement_values(fp, budget, sizing, '/data'))
    return 0.1

  fp = fabricate.make(labels=LATERAL, spacing=(0.8, 0.8, 3.0),
                      shape=(128, 128, 32))
  budget = budgets.get_budget('cpu2')
  values = planner.make_plan(fp, budget, '/data', seconds).values()
  input_keys = [k for k in values
                if k.startswith('data.') or k.endswith('_file_pattern')
                or k == 'compressed_input']
  assert 'data.augmentation.left_right_label_pairs' in input_keys
  assert 'data.augmentation.rotation_degrees' in input_keys
  chosen = [t for t in timed
            if t['input_image_size'] == values['input_image_size']]
  assert chosen
  for key in input_keys + ['input_image_size', 'train_batch_size',
                           'model.pool_sizes', 'loss']:
    assert chosen[-1][key] == values[key], key


def test_a_step_timed_on_fewer_cores_than_the_budget_is_a_warning():
  fp = fabricate.make()
  budget = budgets.get_budget('cpu8')
  plan = planner.make_plan(fp, budget, '/data', lambda sizing: 0.1,
                           timed_on_cores=2)
  reasons = dict((k, r) for k, _, r in plan.entries)
  assert ('measured with its input pipeline on 2 cores of this machine'
          in reasons['train_steps'])
  assert any('budget cpu8 is for 8 cores' in w and 'what 2 cores do' in w
             for w in plan.warnings)
  same = planner.make_plan(fp, budget, '/data', lambda sizing: 0.1,
                           timed_on_cores=8)
  assert not any('cores' in w for w in same.warnings)

"""Tests for unet3d/config.py: merging order, validation, the cloud recipes."""

import glob
import os
import subprocess
import sys

import pytest
import yaml

from unet3d import config
from unet3d import distribute
from unet3d.config import ConfigError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _write(tmp_path, text, name='cfg.yaml'):
  path = tmp_path / name
  path.write_text(text)
  return str(path)


def test_defaults_are_the_model_garden_topology():
  cfg = config.build_config()
  assert cfg.num_base_filters == 32 and cfg.depth == 4
  assert cfg.num_channels == 1 and cfg.num_classes == 3
  assert cfg.input_image_size == [128, 128, 128]
  assert cfg.loss == 'adaptive_dice32' and cfg.optimizer == 'adam'


def test_precedence_defaults_file_override_flags(tmp_path):
  path = _write(tmp_path, 'train_batch_size: 4\neval_batch_size: 3\n'
                'depth: 3\nmodel:\n  activation: elu\n')
  cfg = config.build_config(path)
  assert (cfg.train_batch_size, cfg.eval_batch_size, cfg.depth) == (4, 3, 3)
  assert cfg.model.activation == 'elu'
  assert cfg.model.name == 'unet3d'  # untouched group keys keep defaults

  cfg = config.build_config(path, 'train_batch_size=2,model.activation=relu')
  assert cfg.train_batch_size == 2 and cfg.eval_batch_size == 3
  assert cfg.model.activation == 'relu'

  cfg = config.build_config(path, 'train_batch_size: 2',
                            flag_values={'train_batch_size': 1,
                                         'model_dir': None})
  assert cfg.train_batch_size == 1
  assert cfg.model_dir == ''  # a None flag is "not given"


def test_override_formats():
  as_json = config.parse_override('{"input_image_size": [32, 32, 32], '
                                  '"loss_options": {"batch_dice": true}}')
  as_kv = config.parse_override(
      'input_image_size=[32,32,32], loss_options.batch_dice=true')
  assert as_json == as_kv == {'input_image_size': [32, 32, 32],
                              'loss_options': {'batch_dice': True}}
  assert config.parse_override('eval_file_pattern=') == {
      'eval_file_pattern': None}
  cfg = config.build_config(params_override='input_image_size=[32,32,32]')
  assert cfg.input_image_size == [32, 32, 32]


def test_empty_yaml_value_means_none(tmp_path):
  path = _write(tmp_path, 'input_partition_dims:\ntraining_file_pattern:\n')
  cfg = config.build_config(path)
  assert cfg.input_partition_dims is None
  assert cfg.training_file_pattern is None


@pytest.mark.parametrize('text, key', [
    ('train_batch_sise: 4', "unknown config key 'train_batch_sise'; did you "
     "mean 'train_batch_size'?"),
    ('model:\n  activaton: elu', "unknown config key 'model.activaton'; did "
     "you mean 'model.activation'?"),
    ('loss: adaptive_dice', "did you mean 'adaptive_dice32'"),
])
def test_unknown_keys_suggest_the_closest(tmp_path, text, key):
  with pytest.raises(ConfigError) as e:
    config.build_config(_write(tmp_path, text))
  assert key in str(e.value)
  assert '\n' not in str(e.value)


@pytest.mark.parametrize('text, message', [
    ('train_batch_size: four', 'train_batch_size: expected an integer'),
    ('use_batch_norm: 1', 'use_batch_norm: expected true or false'),
    ('input_image_size: 64', 'input_image_size: expected list of int'),
    ('init_learning_rate: fast', 'init_learning_rate: expected a number'),
    ('model: [1, 2]', 'model: expected a mapping'),
    ('model:\n  filters: [8, x]', 'model.filters[1]: expected an integer'),
])
def test_wrong_types_name_the_key(tmp_path, text, message):
  with pytest.raises(ConfigError) as e:
    config.build_config(_write(tmp_path, text))
  assert message in str(e.value)


def test_float_from_yaml_scientific_string(tmp_path):
  # YAML 1.1 reads `1e-4` (no dot) as a string; it must still be a number.
  cfg = config.build_config(_write(tmp_path, 'init_learning_rate: 1e-4'))
  assert cfg.init_learning_rate == pytest.approx(1e-4)


@pytest.mark.parametrize('override, message', [
    ('input_image_size=[96,96,100]',
     'input_image_size: [96, 96, 100] is not divisible by 8'),
    ('depth=5,input_image_size=[24,24,24]', 'not divisible by 16'),
    ('train_batch_size=0', 'train_batch_size: must be a positive integer'),
    ('eval_batch_size=-2', 'eval_batch_size: must be a positive integer'),
    ('predict_batch_size=0', 'predict_batch_size: must be a positive'),
    ('input_partition_dims=[1,8,1,1]',
     'input_partition_dims: expected 5 values'),
    ('input_partition_dims=[1,3,1,1,1]',
     'spatial axis 0 of input_image_size [128, 128, 128] is not divisible '
     'by 3'),
    ('input_partition_dims=[1,32,1,1,1]',
     'at the bottleneck (128/8=16) is not divisible by 32'),
    ('input_partition_dims=[2,1,1,1,1]', 'batch and channel entries must be 1'),
    ('eval_input_partition_dims=[1,2,1,1,1]',
     'eval_input_partition_dims: set input_partition_dims too'),
    ('input_partition_dims=[1,4,1,1,1],eval_input_partition_dims=[1,2,1,1,1]',
     'eval_input_partition_dims: [1, 2, 1, 1, 1] splits a replica into 2 '
     'cores, input_partition_dims [1, 4, 1, 1, 1] into 4; they must match'),
    ('input_partition_dims=[1,4,1,1,1],eval_input_partition_dims=[1,2,2,1,2]',
     'eval_input_partition_dims: the batch and channel entries must be 1'),
    ('input_partition_dims=[1,4,1,1,1],data.eval_image_size=[136,128,128]',
     'input_partition_dims: spatial axis 0 of data.eval_image_size [136, 128, '
     '128] at the bottleneck (136/8=17) is not divisible by 4'),
    ('input_partition_dims=[1,4,1,1,1],eval_input_partition_dims=[1,1,4,1,1],'
     'data.eval_image_size=[128,72,128]',
     'eval_input_partition_dims: spatial axis 1 of data.eval_image_size [128, '
     '72, 128] at the bottleneck (72/8=9) is not divisible by 4'),
    ('num_gpus=-1', 'num_gpus: must be >= 0'),
    ('num_gpus=[0,2,2]', 'num_gpus: expected distinct GPU ids >= 0'),
    ('num_gpus=two', 'num_gpus: expected int or list of int'),
    ('model.sync_batch_norm=true,model.normalization=group',
     "model.sync_batch_norm: only batch norm is synchronised, the model uses "
     "'group'"),
    ('input_image_size=[64,64]', 'expected 3 sizes'),
    ('distribution_strategy=gpu', 'distribution_strategy: expected one of'),
    ('model.name=unet4d', "model.name: unknown model 'unet4d'"),
    ('loss_options.class_weights=[1,2]', 'expected 3 weights'),
    ('inference.mirror_axes=[0,3]',
     'inference.mirror_axes: expected distinct spatial axes in 0..2'),
    ('inference.mirror_axes=[1,1]', 'inference.mirror_axes: expected distinct'),
    ('inference.ensemble=[a,a]', 'inference.ensemble: expected distinct'),
    ('predict.save_probabilities=npz',
     'predict.save_probabilities: expected one of none, nifti, hdf5'),
    ('predict.largest_component=[0,1]',
     'predict.largest_component: expected classes in 1..2, got [0, 1]'),
    ('predict.largest_component=maybe',
     'predict.largest_component: expected bool or list of int'),
    ('metrics.surface_tolerance_mm=-1',
     'metrics.surface_tolerance_mm: must be >= 0'),
    ('model.pool_sizes=[[2,2,1],[2,2,2]]',
     'model.pool_sizes: expected 3 entries (one per level transition of the '
     '4 levels), got 2'),
    ('model.pool_sizes=[[2,2,1],[2,2],[2,2,2]]',
     'model.pool_sizes[1]: expected 3 factors >= 1, got [2, 2]'),
    ('model.pool_sizes=[[2,2,1],[2,0,2],[2,2,2]]',
     'model.pool_sizes[1]: expected 3 factors >= 1, got [2, 0, 2]'),
    ('model.kernel_sizes=[[3,3,1],[3,3,3],[3,3,3]]',
     'model.kernel_sizes: expected 4 entries (one per level of the 4 '
     'levels), got 3'),
    ('model.kernel_sizes=[[3,3,1],[3,2,3],[3,3,3],[3,3,3]]',
     'model.kernel_sizes[1]: expected 3 odd sizes >= 1, got [3, 2, 3]'),
    ('model.name=unet3plus,model.kernel_sizes=[[3,3],[3,3],[3,3],[3,3],'
     '[3,3]]', 'model.kernel_sizes[0]: expected 3 odd sizes >= 1, got '
     '[3, 3]'),
    ('model.pool_sizes=[[2,2,1],[2,2,2],[2,2,2]],input_image_size=[64,64,18]',
     'input_image_size: [64, 64, 18] is not divisible by the strides '
     '[8, 8, 4] per axis (axis 2: 18 % 4 != 0;'),
    ('model.pool_sizes=[[2,2,1],[2,2,2],[2,2,2]],'
     'data.eval_image_size=[64,60,20]',
     'data.eval_image_size: [64, 60, 20] is not divisible by the strides '
     '[8, 8, 4] per axis (axis 1: 60 % 8 != 0;'),
    ('model.pool_sizes=[[2,2,1],[2,2,1],[2,2,1]],input_image_size=[64,64,32],'
     'input_partition_dims=[1,16,1,1,1]',
     'input_partition_dims: spatial axis 0 of input_image_size [64, 64, 32] '
     'at the bottleneck (64/8=8) is not divisible by 16'),
])
def test_validation_errors_are_one_line_naming_the_key(override, message):
  with pytest.raises(ConfigError) as e:
    config.build_config(params_override=override)
  assert message in str(e.value)
  assert '\n' not in str(e.value)


def test_anisotropic_pools_allow_sizes_divisible_per_axis():
  # Strides [8, 8, 1]: axis 2 is never pooled, so 12 voxels fit and its
  # bottleneck (12/1) splits over 4 cores; isotropic pools reject both.
  override = ('model.pool_sizes=[[2,2,1],[2,2,1],[2,2,1]],'
              'input_image_size=[64,64,12],input_partition_dims=[1,1,1,4,1]')
  cfg = config.build_config(params_override=override)
  assert cfg.model.pool_sizes == [[2, 2, 1], [2, 2, 1], [2, 2, 1]]
  with pytest.raises(ConfigError, match=r'is not divisible by 8 \(the '
                     r'stride 8 of the 4 levels of unet3d on every axis; '
                     r'axis 2: 12 % 8 != 0\)'):
    config.build_config(params_override='input_image_size=[64,64,12]')


def test_missing_and_malformed_config_file(tmp_path):
  with pytest.raises(ConfigError, match='nope.yaml: not found'):
    config.build_config(str(tmp_path / 'nope.yaml'))
  with pytest.raises(ConfigError, match='bad.yaml: not valid YAML'):
    config.build_config(_write(tmp_path, 'a: [1, 2', 'bad.yaml'))
  with pytest.raises(ConfigError, match='expected a mapping'):
    config.build_config(_write(tmp_path, '- 1\n- 2\n', 'list.yaml'))


def _published(lr, loss, train_bs, eval_bs, dims, index_label, size):
  return {'init_learning_rate': lr, 'loss': loss,
          'train_batch_size': train_bs, 'eval_batch_size': eval_bs,
          'input_partition_dims': dims, 'use_index_label_in_train': index_label,
          'input_image_size': [size] * 3, 'label_dtype': 'float32'}


# The Model Garden's six recipes as published (configs/cloud/README.md).
CLOUD_PUBLISHED = {
    'v3-8_128x128x128_ce.yaml': _published(
        0.0001, 'cross_entropy', 16, 8, [1, 8, 1, 1, 1], True, 128),
    'v3-8_128x128x128_dice.yaml': _published(
        0.0001, 'adaptive_dice32', 32, 8, None, False, 128),
    'v3-32_256x256x256_ce.yaml': _published(
        0.00005, 'cross_entropy', 8, 1, [1, 16, 1, 1, 1], True, 256),
    'v3-32_256x256x256_dice.yaml': _published(
        0.00005, 'adaptive_dice32', 8, 1, [1, 16, 1, 1, 1], False, 256),
    'v3-128_256x256x256_ce.yaml': _published(
        0.0001, 'cross_entropy', 32, 1, [1, 16, 1, 1, 1], True, 256),
    'v3-128_256x256x256_dice.yaml': _published(
        0.0001, 'adaptive_dice32', 32, 1, [1, 16, 1, 1, 1], False, 256),
}


def test_cloud_recipes_are_the_published_files():
  files = sorted(glob.glob(os.path.join(REPO, 'configs', 'cloud', '*.yaml')))
  assert sorted(os.path.basename(f) for f in files) == sorted(CLOUD_PUBLISHED)
  for path in files:
    with open(path) as f:
      assert yaml.safe_load(f) == CLOUD_PUBLISHED[os.path.basename(path)], path


def test_all_six_cloud_recipes_load_with_their_meaning():
  for name, published in CLOUD_PUBLISHED.items():
    cfg = config.build_config(os.path.join(REPO, 'configs', 'cloud', name))
    for key, value in published.items():
      assert getattr(cfg, key) == value, (name, key)
    # On a TPU, as in the Model Garden, these run in bfloat16.
    on_tpu = config.merge(cfg, {'tpu': 'my-tpu'})
    assert distribute.strategy_name(on_tpu) == 'tpu'
    assert distribute.compute_dtype(on_tpu) == 'bfloat16'


def test_every_shipped_config_is_valid():
  for path in glob.glob(os.path.join(REPO, 'configs', '**', '*.yaml'),
                        recursive=True):
    config.build_config(path)


def test_yaml_round_trip():
  cfg = config.build_config(params_override=(
      'model_dir=/x,input_image_size=[32,32,32],model.filters=[4,8,16,32],'
      'loss_options.class_weights=[0.5,1,2],data.augmentation.flip_prob=0.1'))
  text = config.to_yaml(cfg)
  assert config.from_yaml(text, 'params.yaml') == cfg
  assert yaml.safe_load(text)['model']['filters'] == [4, 8, 16, 32]


def test_importing_config_does_not_import_tensorflow():
  code = ('import sys; import unet3d.config; '
          "print('tensorflow' in sys.modules)")
  out = subprocess.run([sys.executable, '-c', code], cwd=REPO,
                       capture_output=True, text=True, check=True)
  assert out.stdout.strip() == 'False'


def test_legacy_model_garden_keys_are_accepted(tmp_path):
  cfg = config.build_config(_write(tmp_path, 'use_bfloat16: true\n'
                                   'train_epochs: 10\ntpu_config: {}\n'))
  assert cfg == config.build_config()


@pytest.mark.parametrize('text, value', [
    ('4', 4), ('0', 0), ('0,2,3', [0, 2, 3]), ('3,', [3]), (' 1, 2 ', [1, 2]),
])
def test_num_gpus_flag_is_a_count_or_gpu_ids(text, value):
  assert config.parse_num_gpus(text) == value
  cfg = config.build_config(flag_values={'num_gpus': value})
  assert cfg.num_gpus == value
  assert config.from_yaml(config.to_yaml(cfg), 'params.yaml') == cfg


def test_bad_num_gpus_flag_names_the_flag():
  with pytest.raises(ConfigError, match=r"--num_gpus: expected a count \(4\) "
                     r"or GPU ids \(0,2,3\), got 'gpu1'"):
    config.parse_num_gpus('gpu1')


def test_eval_partition_dims_default_to_the_training_ones():
  cfg = config.build_config(params_override='input_partition_dims=[1,4,1,1,1]')
  assert config.eval_partition_dims(cfg) == [1, 4, 1, 1, 1]
  assert cfg.spmd_xla_partitioning is True
  cfg = config.build_config(params_override=(
      'input_partition_dims=[1,4,1,1,1],eval_input_partition_dims=[1,1,2,2,1],'
      'data.eval_image_size=[136,128,128]'))
  assert config.eval_partition_dims(cfg) == [1, 1, 2, 2, 1]
  assert config.eval_partition_dims(config.Config()) is None
  # Whole-volume evaluation does not run the crop step: no size check.
  config.build_config(params_override=(
      'input_partition_dims=[1,4,1,1,1],data.eval_image_size=[136,128,128],'
      'data.eval_mode=whole_volume'))

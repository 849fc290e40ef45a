"""Tests for unet3d/inference/ensemble.py: members' configs and their checks."""

import pytest

from unet3d import config
from unet3d import run_dir
from unet3d.config import ConfigError
from unet3d.inference import ensemble

PLANAR = [[2, 2, 1], [2, 2, 1]]


def _member(folder, **values):
  cfg = config.build_config_from_mapping(
      dict(depth=3, model_dir=str(folder), **values))
  run_dir.save_params(cfg)
  return str(folder)


def test_the_window_must_suit_each_members_strides_per_axis(tmp_path):
  planar = _member(tmp_path / 'planar', input_image_size=[16, 16, 6],
                   model={'pool_sizes': PLANAR})
  isotropic = _member(tmp_path / 'iso', input_image_size=[16, 16, 16])
  run = {'depth': 3, 'input_image_size': [16, 16, 6],
         'model': {'pool_sizes': PLANAR}}
  # Strides [4, 4, 1]: the 6-voxel axis fits the planar member.
  cfg = config.build_config_from_mapping(
      dict(run, inference={'ensemble': [planar]}))
  (member,) = ensemble.member_configs(cfg)
  assert member.model.pool_sizes == PLANAR and member.model_dir == planar
  cfg = config.build_config_from_mapping(
      dict(run, inference={'ensemble': [planar, isotropic]}))
  with pytest.raises(ConfigError) as info:
    ensemble.member_configs(cfg)
  assert str(info.value) == (
      f'inference.ensemble: {isotropic} needs sizes divisible by the strides '
      '[4, 4, 4] per axis; input_image_size is [16, 16, 6] (axis 2: 6 % 4 '
      '!= 0)')


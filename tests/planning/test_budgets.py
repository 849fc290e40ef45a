"""The training-memory estimate against the built Keras model."""

import math

import pytest

from unet3d import config
from unet3d import models
from unet3d.errors import ConfigError
from unet3d.models import complexity
from unet3d.planning import budgets


def _model(filters, pools, kernels, channels=2, classes=3):
  cfg = config.build_config(params_override={
      'depth': len(filters), 'num_channels': channels,
      'num_classes': classes, 'input_image_size': [16, 16, 8],
      'model': {'filters': filters, 'pool_sizes': pools,
                'kernel_sizes': kernels}})
  return models.build_model(cfg)


@pytest.mark.parametrize('filters, pools, kernels', [
    ([4, 8, 16], [[2, 2, 1], [2, 2, 2]], [[3, 3, 1], [3, 3, 3], [3, 3, 3]]),
    ([4, 8], [[2, 2, 2]], [[3, 3, 3], [1, 3, 3]]),
])
def test_counts_match_the_built_model(filters, pools, kernels):
  model = _model(filters, pools, kernels)
  assert budgets.unet_parameters(filters, kernels, pools, 2, 3) == (
      model.count_params())
  patch = [16, 16, 8]
  info = complexity.model_summary(model, patch + [2])
  outputs = sum(math.prod(row['output_shape']) for row in info['layers'])
  assert budgets.unet_activations(patch, filters, pools, 3) == outputs


def test_training_bytes_hand_computed():
  # 1000 weights x 16 bytes = 16,000; 500 elements x batch 2 x 2 bytes
  # (float16) = 2,000, at the documented factor 1.0 over the layer outputs.
  assert budgets.ACTIVATION_FACTOR == 1.0
  assert budgets.training_bytes(1000, 500, 2, 'float16') == 18_000
  assert budgets.training_bytes(0, 500, 1, 'float32') == 2_000
  assert budgets.training_bytes(0, 500, 1, 'bfloat16') == 1_000


def test_budget_names_and_train_hours():
  assert budgets.get_budget('gpu16g').memory_gib == 16
  assert budgets.get_budget('cpu2', train_hours=2.0).train_hours == 2.0
  with pytest.raises(ConfigError, match="--budget: unknown budget 'gpu17g'"):
    budgets.get_budget('gpu17g')
  with pytest.raises(ConfigError, match='--train_hours: only CPU budgets'):
    budgets.get_budget('gpu16g', train_hours=1.0)
  for hours in (0.0, -1.0, math.inf, math.nan):
    with pytest.raises(ConfigError,
                       match='--train_hours: must be a positive number'):
      budgets.get_budget('cpu2', train_hours=hours)


def test_gpu_budgets_assume_twice_their_memory_as_host_ram():
  assert budgets.get_budget('gpu8g').host_memory_gib == 16
  assert budgets.get_budget('gpu40g').host_memory_gib == 80
  assert budgets.get_budget('cpu2').host_memory_gib == 4
  assert budgets.get_budget('cpu2').cores == 2

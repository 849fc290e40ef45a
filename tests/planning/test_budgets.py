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


def test_training_bytes_formula():
  # 16 bytes per weight; factor x batch x elements x bytes per element.
  assert budgets.training_bytes(1000, 500, 2, 'float16') == (
      16 * 1000 + budgets.ACTIVATION_FACTOR * 2 * 500 * 2)
  assert budgets.training_bytes(0, 500, 1, 'float32') == (
      budgets.ACTIVATION_FACTOR * 500 * 4)


def test_budget_names_and_train_hours():
  assert budgets.get_budget('gpu16g').memory_gib == 16
  assert budgets.get_budget('cpu2', train_hours=2.0).train_hours == 2.0
  with pytest.raises(ConfigError, match="--budget: unknown budget 'gpu17g'"):
    budgets.get_budget('gpu17g')
  with pytest.raises(ConfigError, match='--train_hours: only CPU budgets'):
    budgets.get_budget('gpu16g', train_hours=1.0)
  with pytest.raises(ConfigError, match='--train_hours: must be positive'):
    budgets.get_budget('cpu2', train_hours=0.0)

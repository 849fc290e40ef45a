"""Tiny configs shared by the model tests."""

import dataclasses

from unet3d.config import Config, ModelConfig


def tiny_config(name='unet3d', rank=3, size=16, **kwargs):
  """A few-filter model config on `size`^rank inputs.

  Flat Config keys and ModelConfig keys may both be given as kwargs.
  """
  model_keys = {f.name for f in dataclasses.fields(ModelConfig)}
  model_kw = {k: kwargs.pop(k) for k in list(kwargs) if k in model_keys}
  model_kw.setdefault('cat_channels', 2)
  if name != 'unet3d':
    model_kw.setdefault('filters', [2, 4, 4])
  flat = dict(num_base_filters=2, depth=3, num_classes=3,
              input_image_size=[size] * rank)
  flat.update(kwargs)
  return Config(model=ModelConfig(name=name, spatial_dims=rank, **model_kw),
                **flat)

"""Tiny configs shared by the model tests."""

import dataclasses

import numpy as np

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


def interp_axis(x, axis, factor):
  """numpy reference: half-pixel linear interpolation of `axis` by an integer
  factor, with edge clamping (np.interp holds the end values)."""
  n = x.shape[axis]
  coords = (np.arange(n * factor) + 0.5) / factor - 0.5
  moved = np.moveaxis(x, axis, -1)
  out = np.apply_along_axis(lambda v: np.interp(coords, np.arange(n), v), -1,
                            moved)
  return np.moveaxis(out, -1, axis)


def upsample_numpy(x, factors):
  """[B, *spatial, C] up-sampled by factors[i] on spatial axis i."""
  for axis, factor in enumerate(factors, start=1):
    x = interp_axis(x, axis, factor)
  return x

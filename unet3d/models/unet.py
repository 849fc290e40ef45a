"""The TF Model Garden 3D U-Net, with its batch-norm axis fixed."""

from __future__ import annotations

import keras

from unet3d.config import Config


def _conv_block(x, filters: int, use_batch_norm: bool, name: str):
  x = keras.layers.Conv3D(filters, 3, padding='same', name=f'{name}_conv')(x)
  if use_batch_norm:
    # The Model Garden normalised axis 1 of channels-last data; -1 is right.
    x = keras.layers.BatchNormalization(axis=-1, name=f'{name}_bn')(x)
  return keras.layers.ReLU(name=f'{name}_relu')(x)


def build_unet(cfg: Config) -> keras.Model:
  """Model Garden topology: [B, D, H, W, C] -> logits [B, D, H, W, classes]."""
  inputs = keras.Input([None, None, None, cfg.num_channels], name='image')
  f = cfg.num_base_filters
  skips = []
  x = inputs
  for level in range(cfg.depth):
    x = _conv_block(x, f * 2**level, cfg.use_batch_norm, f'enc{level}a')
    x = _conv_block(x, f * 2**level * 2, cfg.use_batch_norm, f'enc{level}b')
    if level < cfg.depth - 1:
      skips.append(x)
      x = keras.layers.MaxPool3D(2, name=f'pool{level}')(x)
  for level in range(cfg.depth - 2, -1, -1):
    if cfg.deconvolution:
      x = keras.layers.Conv3DTranspose(x.shape[-1], 2, strides=2,
                                       name=f'up{level}')(x)
    else:
      x = keras.layers.UpSampling3D(2, name=f'up{level}')(x)
    skip = skips[level]
    x = keras.layers.Concatenate(name=f'concat{level}')([x, skip])
    x = _conv_block(x, skip.shape[-1], cfg.use_batch_norm, f'dec{level}a')
    x = _conv_block(x, skip.shape[-1], cfg.use_batch_norm, f'dec{level}b')
  logits = keras.layers.Conv3D(cfg.num_classes, 1, dtype='float32',
                               name='logits')(x)
  return keras.Model(inputs, logits, name='unet3d')

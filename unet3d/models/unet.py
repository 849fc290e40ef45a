"""The TF Model Garden 3D U-Net (also 2D), with its batch-norm axis fixed.

Encoder level d (d = 0 .. depth-1): two conv units with (a_d, b_d) filters,
by default (f * 2^d, f * 2^(d+1)) with f = num_base_filters, as the Model
Garden. A `model.filters` list gives (filters[d], filters[d]) instead, as
nnU-Net; `model.max_filters` caps both. Level d - 1 is joined to level d by
a max-pool of pool_sizes[d - 1] (2 on every axis by default), or by a first
conv with those strides (`model.downsampling: strided_conv`). Every conv of
level d, encoder and decoder, has the kernel kernel_sizes[d] (3 by default;
`unet3d.models.levels`).

Dropout (`dropout_rate` > 0) is spatial dropout after each encoder level's
convs (before the skip is taken), as NVIDIA's and nnU-Net's encoders. The
encoder is `unet3d.models.encoder`, shared with UNet 3+.

Decoder level d (depth-2 .. 0): up-sample by pool_sizes[d] (Conv3DTranspose
with the current channel count and kernel = strides = pool_sizes[d], or
nearest UpSampling when `deconvolution` is false), concatenate the level's
skip, two convs with b_d filters. Head: 1x1 conv to num_classes logits.
`num_segmentation_levels` = L > 1 adds 1x1 heads on decoder levels 1 .. L-1
(level depth-1 is the bottleneck), each linearly up-sampled to full
resolution (by the product of the pool factors above it, per axis).
"""

from __future__ import annotations

import keras

from unet3d.errors import ConfigError
from unet3d.models import blocks
from unet3d.models import encoder
from unet3d.models import heads
from unet3d.models import levels


def level_filters(cfg) -> list[tuple[int, int]]:
  """[(first conv filters, second conv filters)] per encoder level."""
  depth = cfg.depth
  filters = cfg.model.filters
  if filters is not None:
    if len(filters) != depth:
      raise ConfigError(f'model.filters: expected {depth} entries (one per '
                        f'level, depth={depth}), got {len(filters)}: '
                        f'{filters}')
    pairs = [(f, f) for f in filters]
  else:
    f = cfg.num_base_filters
    pairs = [(f * 2**d, f * 2**(d + 1)) for d in range(depth)]
  cap = cfg.model.max_filters
  if cap is not None:
    pairs = [(min(a, cap), min(b, cap)) for a, b in pairs]
  return pairs


def num_levels(cfg) -> int:
  return len(cfg.model.filters) if cfg.model.filters else cfg.depth


def check_config(cfg) -> None:
  """The checks of this family's keys (called by check_model_config)."""
  level_filters(cfg)
  if cfg.num_segmentation_levels > cfg.depth:
    raise ConfigError(f'num_segmentation_levels: at most depth={cfg.depth} '
                      f'levels have outputs, got {cfg.num_segmentation_levels}')


def build(cfg) -> keras.Model:
  """[B, *spatial, num_channels] -> logits [B, *spatial, num_classes].

  With num_segmentation_levels > 1 the output is a dict: 'logits' (the
  full-resolution head) and 'deep_supervision' (coarser heads up-sampled
  to full resolution, finest first).
  """
  spec = blocks.block_spec(cfg)
  rank = spec.rank
  depth = cfg.depth
  pairs = level_filters(cfg)
  num_heads = cfg.num_segmentation_levels
  pools = levels.pool_sizes(cfg, depth)
  kernels = levels.kernel_sizes(cfg, depth)
  scales = levels.cumulative(pools, rank)

  inputs = keras.Input([None] * rank + [cfg.num_channels], name='image')
  skips = encoder.encode(inputs, cfg, spec, pairs, pools, kernels)
  x = skips[-1]

  decoded = {depth - 1: x}
  for level in range(depth - 2, -1, -1):
    if cfg.deconvolution:
      x = blocks.conv_transpose(rank, x.shape[-1], pools[level],
                                name=f'up{level}')(x)
    else:
      x = blocks.upsample_nearest(rank, pools[level], name=f'up{level}')(x)
    skip = skips[level]
    x = keras.layers.Concatenate(name=f'concat{level}')([x, skip])
    channels = skip.shape[-1]
    x = blocks.conv_unit(x, spec, [channels, channels], f'dec{level}',
                         kernel_size=kernels[level])
    decoded[level] = x

  logits = blocks.conv(rank, cfg.num_classes, 1, name='logits',
                       dtype='float32')(decoded[0])
  if num_heads == 1:
    return keras.Model(inputs, logits, name='unet3d')
  side = []
  for level in range(1, num_heads):
    head = blocks.conv(rank, cfg.num_classes, 1, name=f'logits_level{level}',
                       dtype='float32')(decoded[level])
    side.append(blocks.upsample_linear(head, scales[level],
                                       name=f'logits_level{level}_up',
                                       dtype='float32'))
  return keras.Model(inputs, {heads.LOGITS: logits,
                              heads.DEEP_SUPERVISION: side}, name='unet3d')

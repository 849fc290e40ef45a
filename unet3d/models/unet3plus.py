"""UNet 3+ (Huang et al. 2020, arXiv 2004.08790) in 2D or 3D.

Encoder: n levels (default 5) of two conv units with filters[i] channels;
default filters [64, 128, 256, 512, 1024] * num_base_filters / 64, or
`model.filters`, capped by `model.max_filters`. Level d - 1 is joined to
level d by a max-pool of pool_sizes[d - 1] (2 on every axis by default), or
a first conv with those strides (`model.downsampling: strided_conv`); the
encoder is `unet3d.models.encoder`, shared with the U-Net.

With S_k the per-axis scale of level k (the product of the first k pool
factors; 2^k by default), decoder stage i (n-2 .. 0) takes full-scale skips
from every level j:
  j < i: encoder j, max-pooled by S_i / S_j per axis
  j = i: encoder i
  j > i: decoder j (the bottleneck for j = n-1), linearly up-sampled by
         S_j / S_i per axis
Each branch is conv -> cat_channels + norm + act; the n branches are
concatenated (n * cat_channels) and fused by one conv + norm + act with
n * cat_channels filters. The full-scale max-pools are part of the topology
and stay max-pools under strided-conv down-sampling. Every conv at level k
(encoder, decoder stage, head) has the kernel kernel_sizes[k] (3 by
default; `unet3d.models.levels`).

Heads (a conv with the level's kernel to num_classes, float32 logits,
up-sampled by S_i):
  unet3plus              decoder stage 0 only.
  unet3plus_deepsup      + decoder stages 1 .. n-2 and the bottleneck, each
                         linearly up-sampled to full resolution.
  unet3plus_deepsup_cgm  + the classification-guided module: bottleneck ->
                         dropout(0.5) -> 1x1 conv (2) -> global max-pool,
                         [B, 2] logits (index 1: organ present).
"""

from __future__ import annotations

import keras

from unet3d.errors import ConfigError
from unet3d.models import blocks
from unet3d.models import encoder
from unet3d.models import heads
from unet3d.models import levels

PAPER_FILTERS = (64, 128, 256, 512, 1024)
# The paper's CGM dropout; CGM is a small head on a deep feature map.
CGM_DROPOUT = 0.5


def encoder_filters(cfg) -> list[int]:
  """Channels of each encoder level, capped by model.max_filters."""
  filters = cfg.model.filters
  if filters is not None:
    if len(filters) < 2:
      raise ConfigError(f'model.filters: {cfg.model.name} needs at least 2 '
                        f'levels, got {filters}')
    filters = list(filters)
  else:
    filters = [max(1, round(f * cfg.num_base_filters / 64))
               for f in PAPER_FILTERS]
  cap = cfg.model.max_filters
  if cap is not None:
    filters = [min(f, cap) for f in filters]
  return filters


def num_levels(cfg) -> int:
  return len(cfg.model.filters) if cfg.model.filters else len(PAPER_FILTERS)


def check_config(cfg) -> None:
  """The checks of this family's keys (called by check_model_config)."""
  encoder_filters(cfg)
  if cfg.model.cat_channels < 1:
    raise ConfigError(f'model.cat_channels: must be >= 1, got '
                      f'{cfg.model.cat_channels}')


def _head(x, cfg, rank: int, kernel_size: blocks.Size,
          factor: blocks.Size, name: str):
  logits = blocks.conv(rank, cfg.num_classes, kernel_size, name=name,
                       dtype='float32')(x)
  return blocks.upsample_linear(logits, factor, name=f'{name}_up',
                                dtype='float32')


def build(cfg, deep_supervision: bool = False,
          cgm: bool = False) -> keras.Model:
  """[B, *spatial, num_channels] -> logits [B, *spatial, num_classes], or the
  dict {'logits', 'deep_supervision' (finest first) [, 'classification']}."""
  spec = blocks.block_spec(cfg)
  rank = spec.rank
  filters = encoder_filters(cfg)
  n = len(filters)
  cat = cfg.model.cat_channels
  pools = levels.pool_sizes(cfg, n)
  kernels = levels.kernel_sizes(cfg, n)
  scales = levels.cumulative(pools, rank)

  inputs = keras.Input([None] * rank + [cfg.num_channels], name='image')
  enc = encoder.encode(inputs, cfg, spec, [[f, f] for f in filters], pools,
                       kernels)

  dec = {n - 1: enc[n - 1]}
  for i in range(n - 2, -1, -1):
    branches = []
    for j in range(n):
      if j < i:
        src = blocks.max_pool(rank, levels.ratio(scales[j], scales[i]),
                              name=f'dec{i}_pool_enc{j}')(enc[j])
        tag = f'enc{j}'
      elif j == i:
        src, tag = enc[j], f'enc{j}'
      else:
        src = blocks.upsample_linear(dec[j],
                                     levels.ratio(scales[i], scales[j]),
                                     name=f'dec{i}_up_dec{j}')
        tag = f'dec{j}'
      branches.append(blocks.conv_unit(src, spec, [cat],
                                       f'dec{i}_from_{tag}',
                                       kernel_size=kernels[i]))
    x = keras.layers.Concatenate(name=f'dec{i}_concat')(branches)
    dec[i] = blocks.conv_unit(x, spec, [n * cat], f'dec{i}_fuse',
                              kernel_size=kernels[i])

  name = cfg.model.name
  logits = _head(dec[0], cfg, rank, kernels[0], scales[0], 'logits')
  if not deep_supervision:
    return keras.Model(inputs, logits, name=name)
  side = [_head(dec[i], cfg, rank, kernels[i], scales[i], f'logits_level{i}')
          for i in range(1, n)]
  outputs = {heads.LOGITS: logits, heads.DEEP_SUPERVISION: side}
  if cgm:
    c = keras.layers.Dropout(CGM_DROPOUT, name='cgm_dropout')(enc[n - 1])
    c = blocks.conv(rank, 2, 1, name='cgm_conv', dtype='float32')(c)
    outputs[heads.CLASSIFICATION] = blocks.global_max_pool(
        rank, name='classification', dtype='float32')(c)
  return keras.Model(inputs, outputs, name=name)

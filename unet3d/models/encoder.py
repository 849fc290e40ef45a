"""The encoder every model family shares: one conv unit per level, joined by
down-sampling, with optional spatial dropout.

Level d (0 .. n-1) is a conv unit 'enc{d}' with the filters of
`level_filters[d]` and the kernel kernel_sizes[d]. Level d - 1 is joined to
level d by a max-pool 'pool{d-1}' of pool_sizes[d - 1], or by the unit's
first conv with those strides (`model.downsampling: strided_conv`).
`dropout_rate` > 0 adds spatial dropout 'enc{d}_dropout' after each level's
convs, before its skip is taken (as NVIDIA's and nnU-Net's encoders). The
layer names are those of every checkpoint written so far.
"""

from __future__ import annotations

from typing import Sequence

from unet3d.models import blocks
from unet3d.models import levels


def encode(x, cfg, spec: blocks.BlockSpec,
           level_filters: Sequence[Sequence[int]],
           pools: Sequence[levels.Factors],
           kernels: Sequence[levels.Factors]) -> list:
  """The encoder on `x` [B, *spatial, Cin].

  Args:
    level_filters: per level, the output channels of each conv of its unit.
    pools: per-axis down-sampling factor into each level after the first
      (len(level_filters) - 1 entries).
    kernels: per-axis conv kernel of each level.
  Returns:
    The output of every level, finest first: [B, *spatial / S_d,
    level_filters[d][-1]] with S_d the product of the first d pools.
  """
  rank = spec.rank
  strided = cfg.model.downsampling == 'strided_conv'
  outputs = []
  for level, filters in enumerate(level_filters):
    down = pools[level - 1] if level > 0 else 1
    if level > 0 and not strided:
      x = blocks.max_pool(rank, down, name=f'pool{level - 1}')(x)
    x = blocks.conv_unit(x, spec, list(filters), f'enc{level}',
                         strides=down if strided else 1,
                         kernel_size=kernels[level])
    if cfg.dropout_rate > 0:
      x = blocks.spatial_dropout(rank, cfg.dropout_rate,
                                 name=f'enc{level}_dropout')(x)
    outputs.append(x)
  return outputs

"""The geometry of a model's levels: per-axis pool factors and kernel sizes.

Level 0 is the input resolution. `model.pool_sizes[d]` is the per-axis
down-sampling factor from level d to level d + 1, and `model.kernel_sizes[d]`
the per-axis kernel of every conv at level d, encoder and decoder alike (as
nnU-Net plans them for anisotropic voxels, e.g. no pooling across thick
slices at first). Empty keys give the isotropic U-Net: 2 on every axis and
3x3(x3) kernels.
"""

from __future__ import annotations

from typing import Optional

from unet3d.errors import ConfigError

DEFAULT_POOL = 2
DEFAULT_KERNEL = 3

# One int per spatial axis.
Factors = tuple[int, ...]


def pool_sizes(cfg, num_levels: int) -> list[Factors]:
  """(num_levels - 1) per-axis down-sampling factors, finest first."""
  given = cfg.model.pool_sizes
  if not given:
    return [(DEFAULT_POOL,) * cfg.model.spatial_dims] * (num_levels - 1)
  return [tuple(p) for p in given]


def kernel_sizes(cfg, num_levels: int) -> list[Factors]:
  """num_levels per-axis conv kernel sizes, finest level first."""
  given = cfg.model.kernel_sizes
  if not given:
    return [(DEFAULT_KERNEL,) * cfg.model.spatial_dims] * num_levels
  return [tuple(k) for k in given]


def cumulative(pools: list[Factors], rank: int) -> list[Factors]:
  """Per-axis scale of each level against level 0: [1, ...] for level 0,
  then the running product of `pools` (len(pools) + 1 entries)."""
  scales = [(1,) * rank]
  for pool in pools:
    scales.append(tuple(s * p for s, p in zip(scales[-1], pool)))
  return scales


def ratio(fine: Factors, coarse: Factors) -> Factors:
  """Per-axis factor between two levels' scales (coarse / fine)."""
  return tuple(c // f for f, c in zip(fine, coarse))


def check_config(cfg, num_levels: int) -> None:
  """Raises ConfigError (one line naming the key) unless model.pool_sizes
  and model.kernel_sizes fit `num_levels` levels and model.spatial_dims."""
  rank = cfg.model.spatial_dims
  _check_entries('model.pool_sizes', cfg.model.pool_sizes, num_levels - 1,
                 f'one per level transition of the {num_levels} levels',
                 rank, 'factors >= 1', lambda v: v >= 1)
  _check_entries('model.kernel_sizes', cfg.model.kernel_sizes, num_levels,
                 f'one per level of the {num_levels} levels', rank,
                 'odd sizes >= 1', lambda v: v >= 1 and v % 2 == 1)


def _check_entries(key: str, entries: Optional[list], count: int, what: str,
                   rank: int, rule: str, ok) -> None:
  if not entries:
    return
  if len(entries) != count:
    raise ConfigError(f'{key}: expected {count} entries ({what}), got '
                      f'{len(entries)}')
  for i, entry in enumerate(entries):
    if (not isinstance(entry, (list, tuple)) or len(entry) != rank or
        not all(isinstance(v, int) and ok(v) for v in entry)):
      raise ConfigError(f'{key}[{i}]: expected {rank} {rule}, got {entry}')


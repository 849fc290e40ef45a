"""The planner's rules: pure functions from fingerprint values to choices.

Each rule returns its choice with a one-line reason that the recipe prints
beside the key. The rules follow nnU-Net's where it has one (target spacing,
pooling topology, normalisation, 5% batch cap) and say so.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

from unet3d.preprocess import intensity as intensity_lib

# An axis is anisotropic when its spacing exceeds this many times the finest.
ANISOTROPY_RATIO = 3.0
# No feature map is pooled below this many voxels on any axis (nnU-Net: 4).
MIN_FEATURE_SIZE = 4
# nnU-Net's cap on the share of the dataset's voxels one batch may cover.
BATCH_SHARE_OF_DATASET = 0.05


@dataclass(frozen=True)
class Choice:
  """A value the plan chose and why."""
  value: object
  reason: str


def _fmt(values) -> str:
  return ' x '.join(f'{float(v):.3g}' for v in values)


# ----------------------------------------------------------------------------
# Target spacing
# ----------------------------------------------------------------------------


def target_spacing(spacings: np.ndarray, shapes: np.ndarray) -> Choice:
  """nnU-Net's full-resolution target spacing from the cases' spacings and
  shapes after cropping ([N, 3] each, mm and voxels).

  The median spacing, except on an anisotropic axis (median spacing more
  than 3x the others' largest and fewer than a third of their voxels):
  there the 10th percentile, so that the coarse axis is not made coarser
  still, but never finer than the other axes.
  """
  spacings = np.asarray(spacings, np.float64)
  shapes = np.asarray(shapes, np.float64)
  target = np.median(spacings, axis=0)
  median_shape = np.median(shapes, axis=0)
  worst = int(np.argmax(target))
  others = [a for a in range(len(target)) if a != worst]
  coarse_spacing = target[worst] > ANISOTROPY_RATIO * target[others].max()
  few_voxels = median_shape[worst] * ANISOTROPY_RATIO < median_shape[
      others].min()
  if coarse_spacing and few_voxels:
    lower = float(np.percentile(spacings[:, worst], 10))
    target[worst] = max(lower, float(target[others].max()))
    return Choice(target.tolist(),
                  f'median spacing, axis {worst} anisotropic: its 10th '
                  f'percentile {target[worst]:.3g} mm (nnU-Net)')
  return Choice(target.tolist(), 'median spacing of the cases (nnU-Net)')


# ----------------------------------------------------------------------------
# Network topology
# ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Topology:
  """Per-level pool factors (levels - 1 entries) and conv kernels (levels
  entries), per spatial axis."""
  pool_sizes: tuple[tuple[int, ...], ...]
  kernel_sizes: tuple[tuple[int, ...], ...]

  @property
  def levels(self) -> int:
    return len(self.kernel_sizes)

  @property
  def strides(self) -> tuple[int, ...]:
    """The per-axis factor each patch size must divide by."""
    rank = len(self.kernel_sizes[0])
    return tuple(math.prod(p[a] for p in self.pool_sizes) for a in range(rank))


def topology(patch: Sequence[int], spacing: Sequence[float],
             max_levels: int) -> Topology:
  """nnU-Net's pooling and kernel rule for a patch at a spacing.

  Kernels: an axis gets 3 voxels from the level where its spacing comes
  within 2x of the finest axis' (before that 1: a coarse axis is convolved
  in-plane first), and keeps 3. Pooling by 2: among the axes whose feature
  map stays at least MIN_FEATURE_SIZE voxels, those within 2x of the finest
  spacing among them (a lone axis only while it has 3x that size).
  Anisotropic data so pools in-plane first until the spacings meet. Stops
  when no axis can be pooled or at max_levels levels.
  """
  size = [int(s) for s in patch]
  current = [float(s) for s in spacing]
  kernel = [1] * len(size)
  pools, kernels = [], []
  while True:
    finest = min(current)
    kernel = [3 if k == 3 or c / finest < 2.0 else 1
              for k, c in zip(kernel, current)]
    kernels.append(tuple(kernel))
    if len(kernels) == max_levels:
      break
    axes = [a for a, s in enumerate(size) if s >= 2 * MIN_FEATURE_SIZE]
    if axes:
      finest_left = min(current[a] for a in axes)
      axes = [a for a in axes if current[a] / finest_left < 2.0]
    if len(axes) == 1 and size[axes[0]] < 3 * MIN_FEATURE_SIZE:
      axes = []
    if not axes:
      break
    pool = tuple(2 if a in axes else 1 for a in range(len(size)))
    pools.append(pool)
    size = [s // p for s, p in zip(size, pool)]
    current = [c * p for c, p in zip(current, pool)]
  return Topology(tuple(pools), tuple(kernels))


def fit_topology(patch: Sequence[int], spacing: Sequence[float],
                 max_levels: int) -> tuple[list[int], Topology]:
  """A patch (rounded down to the strides it ends up with) and its
  topology."""
  patch = [int(p) for p in patch]
  while True:
    topo = topology(patch, spacing, max_levels)
    rounded = [max(s, p // s * s) for p, s in zip(patch, topo.strides)]
    if rounded == patch:
      return patch, topo
    patch = rounded


def filters_per_level(levels: int, base: int, cap: int) -> list[int]:
  """nnU-Net's widths: base * 2^level, capped."""
  return [min(base * 2**level, cap) for level in range(levels)]


# ----------------------------------------------------------------------------
# Normalisation
# ----------------------------------------------------------------------------


@dataclass(frozen=True)
class ChannelRule:
  """The normalisation a channel should get."""
  scheme: str  # 'ct' or 'zscore'
  nonzero_mask: bool
  reason: str


def channel_normalisation(modality: str, nonzero_fractions: Sequence[float],
                          intensity: dict) -> ChannelRule:
  """CT: clip to the foreground 0.5-99.5 percentiles, z-score with the
  foreground statistics; anything else: per-case z-score, within the
  nonzero voxels when the data has a zero background."""
  if intensity_lib.is_ct_modality(modality):
    low = intensity.get('percentile_00_5')
    high = intensity.get('percentile_99_5')
    window = (f' [{low:.4g}, {high:.4g}]' if low is not None and
              high is not None else '')
    return ChannelRule('ct', False,
                       f'CT: clip to the foreground 0.5-99.5 percentiles'
                       f'{window}, z-score with the foreground mean/std')
  # The converters' rule for channels without --[no]nonzero_mask.
  fraction = intensity_lib.median_nonzero_fraction(nonzero_fractions)
  if intensity_lib.zscore_within_nonzero_mask(nonzero_fractions):
    return ChannelRule('zscore', True,
                       f'{modality}: per-case z-score on non-zero voxels '
                       f'(their bounding box holds {fraction:.0%} of the '
                       'volume: a zero background, e.g. skull-stripped)')
  return ChannelRule('zscore', False,
                     f'{modality}: per-case z-score (no zero background: '
                     f'the nonzero bounding box holds {fraction:.0%} of the '
                     'volume)')


def applied_matches(rule: ChannelRule, applied: dict) -> bool:
  """Whether the converter's dataset.json normalisation entry is the rule's."""
  if applied.get('scheme') != rule.scheme:
    return False
  if rule.scheme == 'zscore':
    return bool(applied.get('within_nonzero_mask')) == rule.nonzero_mask
  return True


# ----------------------------------------------------------------------------
# Laterality
# ----------------------------------------------------------------------------

_LEFT = ('l', 'left', 'lh', 'lt')
_RIGHT = ('r', 'right', 'rh', 'rt')


def _side_and_stem(name: str) -> tuple[Optional[str], str]:
  """('left' | 'right' | None, the name without its side word)."""
  spaced = re.sub(r'(?<=[a-z])(?=[A-Z])', ' ', name)  # LeftKidney
  tokens = [t for t in re.split(r'[^A-Za-z0-9]+', spaced.lower()) if t]
  for i, token in enumerate(tokens):
    side = ('left' if token in _LEFT else 'right' if token in _RIGHT
            else None)
    if side:
      return side, '_'.join(tokens[:i] + tokens[i + 1:])
  return None, '_'.join(tokens)


def lateral_pairs(labels: dict[str, str], first_class: int = 1
                 ) -> list[tuple[int, int]]:
  """[(left class, right class)] of label names that differ only by a side
  word: _L/_R, left/right, lh/rh (any case, prefix or suffix, camelCase)."""
  sides: dict[str, dict[str, list[int]]] = {}
  for key, name in labels.items():
    cls = int(key)
    if cls < first_class:
      continue
    side, stem = _side_and_stem(name)
    if side and stem:
      sides.setdefault(stem, {'left': [], 'right': []})[side].append(cls)
  pairs = [(s['left'][0], s['right'][0]) for s in sides.values()
           if len(s['left']) == 1 and len(s['right']) == 1]
  return sorted(pairs)


def lateral_axis_from_centroids(centroids: Sequence[dict[str, Sequence[float]]],
                                spacings: Sequence[Sequence[float]],
                                pairs: Sequence[tuple[int, int]]
                               ) -> Optional[int]:
  """The array axis along which paired classes lie apart: the axis of the
  largest mean |centroid(left) - centroid(right)| in millimetres (voxel
  gaps times each case's spacing) over cases and pairs holding both
  classes; None without such a case."""
  gaps = []
  for case, spacing in zip(centroids, spacings):
    for left, right in pairs:
      a, b = case.get(str(left)), case.get(str(right))
      if a is not None and b is not None:
        gaps.append(np.abs(np.subtract(a, b)) * np.asarray(spacing))
  if not gaps:
    return None
  return int(np.argmax(np.mean(gaps, axis=0)))


# ----------------------------------------------------------------------------
# Batch size
# ----------------------------------------------------------------------------


def batch_cap(patch_voxels: int, dataset_voxels: int, training_records: int
             ) -> int:
  """The largest batch: at most 5% of the dataset's voxels (nnU-Net), but
  at least 2, and never more than the training records (so 1 with one)."""
  share = int(BATCH_SHARE_OF_DATASET * dataset_voxels // patch_voxels)
  return max(1, min(max(share, 2), training_records))


def describe_shape(values) -> str:
  return _fmt(values)

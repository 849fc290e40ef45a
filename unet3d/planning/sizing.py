"""A fingerprint and a budget -> the patch, batch and network that fit it.

nnU-Net's sizing, on the stored grid (what training reads):

1. the patch starts at the median stored shape, rounded to the strides of
   its topology (per-axis pooling and kernels, from the patch and spacing);
2. while the estimated training memory at batch 2 exceeds the budget, the
   axis largest relative to the median shape shrinks by its stride, and the
   topology is re-derived;
3. the batch grows while memory allows, up to 5% of the dataset's voxels
   and the number of training records;
4. CPU budgets then measure seconds per step (`seconds_per_step`, which the
   caller supplies) and shrink the patch until MIN_CPU_STEPS steps fit in
   the budget's hours (or it cannot shrink, or stops stepping faster).

Memory is in bytes, patches and shapes in voxels per axis.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Iterator, Optional

import numpy as np

from unet3d.planning import budgets as budgets_lib
from unet3d.planning import fingerprint as fingerprint_lib
from unet3d.planning import rules

# A CPU plan shrinks its patch until at least this many steps fit its hours.
MIN_CPU_STEPS = 2000


@dataclass(frozen=True)
class Sizing:
  """The patch, batch and network a budget affords."""
  patch: list[int]
  batch: int
  topology: rules.Topology
  filters: list[int]
  parameters: int
  memory_bytes: float


def _memory(fp: fingerprint_lib.Fingerprint, budget: budgets_lib.Budget,
            patch, topo: rules.Topology, batch: int
           ) -> tuple[list[int], int, float]:
  filters = rules.filters_per_level(topo.levels, budget.base_filters,
                                    budget.max_filters)
  params = budgets_lib.unet_parameters(filters, topo.kernel_sizes,
                                       topo.pool_sizes, fp.num_channels,
                                       fp.num_classes)
  acts = budgets_lib.unet_activations(patch, filters, topo.pool_sizes,
                                      fp.num_classes)
  return filters, params, budgets_lib.training_bytes(params, acts, batch,
                                                     budget.precision)


def _shrink(patch: list[int], median_shape, strides) -> list[int]:
  """nnU-Net's step: the axis largest relative to the median shape loses
  one stride (an axis already at its stride cannot shrink)."""
  ratios = [p / m if p > s else -1.0
            for p, m, s in zip(patch, median_shape, strides)]
  axis = int(np.argmax(ratios))
  if ratios[axis] < 0:
    raise ValueError('the patch cannot shrink further')
  patch = list(patch)
  patch[axis] -= strides[axis]
  return patch


def _shrink_steps(fp: fingerprint_lib.Fingerprint,
                  budget: budgets_lib.Budget, patch
                 ) -> Iterator[tuple[list[int], rules.Topology]]:
  """nnU-Net's shrinking sequence: the patch rounded to its strides with its
  topology, then after each `_shrink` step, until it cannot shrink."""
  spacing, median_shape = fp.stored_spacing(), fp.stored_shape()
  patch, topo = rules.fit_topology(patch, spacing, budget.max_levels)
  while True:
    yield patch, topo
    try:
      patch = _shrink(patch, median_shape, topo.strides)
    except ValueError:
      return
    patch, topo = rules.fit_topology(patch, spacing, budget.max_levels)


def size_for_memory(fp: fingerprint_lib.Fingerprint,
                    budget: budgets_lib.Budget,
                    start_patch: Optional[list[int]] = None,
                    grow_batch: bool = True) -> Sizing:
  """The largest patch at batch 2 (fewer with fewer training records) whose
  estimated training memory fits, then the largest batch (grow_batch)."""
  cases = fp.training_cases()
  records = sum(c.num_records for c in cases)
  min_batch = min(2, records)
  for patch, topo in _shrink_steps(
      fp, budget, start_patch or [int(s) for s in fp.stored_shape()]):
    filters, params, memory = _memory(fp, budget, patch, topo, min_batch)
    if memory <= budget.usable_bytes:
      break
  else:
    raise ValueError(
        f'budget {budget.name}: even a {patch} patch needs '
        f'{memory / budgets_lib.GIB:.1f} GiB at batch {min_batch}; choose '
        'a larger budget')
  dataset_voxels = sum(math.prod(c.stored_shape) for c in cases)
  cap = rules.batch_cap(math.prod(patch), dataset_voxels, records)
  batch = min_batch
  while grow_batch and batch < cap:
    _, _, more = _memory(fp, budget, patch, topo, batch + 1)
    if more > budget.usable_bytes:
      break
    batch, memory = batch + 1, more
  return Sizing(patch, batch, topo, filters, params, memory)


@dataclass(frozen=True)
class Timing:
  """What a CPU budget's measured step gave."""
  step_seconds: float
  # MIN_CPU_STEPS steps fit the budget's hours.
  fits: bool
  shrunk: bool
  # When they do not fit: why the patch did not shrink further.
  why_not: str = ''


def _shrink_to(fp: fingerprint_lib.Fingerprint, budget: budgets_lib.Budget,
               patch: list[int], target_voxels: float) -> list[int]:
  """The patch shrunk by nnU-Net's step until it has at most target_voxels
  (or cannot shrink further)."""
  for patch, _ in _shrink_steps(fp, budget, patch):
    if math.prod(patch) <= target_voxels:
      break
  return patch


def size_for_time(fp: fingerprint_lib.Fingerprint, budget: budgets_lib.Budget,
                  sizing: Sizing, seconds_per_step: Callable[[Sizing], float]
                 ) -> tuple[Sizing, Timing]:
  """A CPU budget: while MIN_CPU_STEPS measured steps overrun its hours, the
  patch shrinks to the voxels that would fit were step time proportional to
  them, and the step is measured again. Stops when the patch cannot shrink
  or the smaller patch does not step faster (keeping the faster one)."""
  seconds = budget.train_hours * 3600.0
  step = seconds_per_step(sizing)
  shrunk = False
  while step * MIN_CPU_STEPS > seconds:
    target = math.prod(sizing.patch) * seconds / (step * MIN_CPU_STEPS)
    patch = _shrink_to(fp, budget, list(sizing.patch), target)
    if patch == sizing.patch:
      return sizing, Timing(step, False, shrunk,
                            f'the {sizing.patch} patch cannot shrink further')
    smaller = size_for_memory(fp, budget, start_patch=patch, grow_batch=False)
    smaller_step = seconds_per_step(smaller)
    if smaller_step >= step:
      return sizing, Timing(
          step, False, shrunk,
          f'a {smaller.patch} patch stepped no faster ({smaller_step:.2f} s)')
    sizing, step, shrunk = smaller, smaller_step, True
  return sizing, Timing(step, True, shrunk)

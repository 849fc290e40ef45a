"""Sizing of fabricated fingerprints: patch and batch against the memory
budget."""

import dataclasses
import math

import pytest

from unet3d.planning import budgets
from unet3d.planning import sizing as sizing_lib
from tests.planning import fabricate

GPU = budgets.get_budget('gpu16g')


def test_halving_the_memory_budget_gives_a_smaller_patch_or_batch():
  fp = fabricate.make(shape=(256, 256, 256))
  large = dataclasses.replace(GPU, memory_gib=16.0)
  small = dataclasses.replace(GPU, memory_gib=8.75)  # usable 14.5 -> 7.25 GiB
  a = sizing_lib.size_for_memory(fp, large)
  b = sizing_lib.size_for_memory(fp, small)
  assert math.prod(b.patch) * b.batch < math.prod(a.patch) * a.batch
  for sizing, budget in ((a, large), (b, small)):
    assert sizing.memory_bytes <= budget.usable_bytes
  # The large budget's sizing would not fit the small one.
  _, _, needed = sizing_lib._memory(fp, small, a.patch, a.topology, a.batch)
  assert needed > small.usable_bytes


def test_a_budget_too_small_for_any_patch_is_a_one_line_error():
  tiny = dataclasses.replace(GPU, memory_gib=1.5001)
  with pytest.raises(ValueError, match='budget gpu16g: even a .* patch'):
    sizing_lib.size_for_memory(fabricate.make(), tiny)


def test_the_batch_grows_to_the_5_percent_cap():
  # 100 training cases of 64^3; a 64^3 patch is 1% of the dataset: at most
  # 5 patches per batch, and memory allows more on 80 GB.
  fp = fabricate.make(num_cases=102, num_val=2, shape=(64, 64, 64))
  sizing = sizing_lib.size_for_memory(fp, budgets.get_budget('gpu80g'))
  assert sizing.patch == [64, 64, 64]
  assert sizing.batch == 5

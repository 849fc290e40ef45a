"""Tests for the comparison of benchmarks/bf16_dice.py (float32 against
bfloat16 predictions), on tiny label maps against numpy references; the
predict processes themselves are not run here."""

import numpy as np
import pytest

from benchmarks import bf16_dice
from unet3d.evaluation import scoring
from unet3d.metrics.conventions import Conventions

NAMES = ('background', 'a', 'b')
OPTIONS = scoring.ScoringOptions(NAMES, Conventions(), surface_metrics=False)


def _dice(p, t):
  return 2 * np.sum(p & t) / (np.sum(p) + np.sum(t))


def _cases(seed=0, n=3, shape=(6, 5, 4)):
  """[(id, label, fp32, bf16, spacing)]: bf16 differs from fp32 in a few
  voxels, as near-tie labels do; every class present in each map."""
  rng = np.random.default_rng(seed)
  cases = []
  for i in range(n):
    label = rng.integers(0, 3, shape).astype(np.uint8)
    label.flat[:3] = [0, 1, 2]
    fp32 = label.copy()
    fp32[rng.random(shape) < 0.2] = rng.integers(0, 3)
    fp32.flat[:3] = [0, 1, 2]
    bf16 = fp32.copy()
    flip = rng.random(shape) < 0.05
    bf16[flip] = (bf16[flip] + 1) % 3
    bf16.flat[:3] = [0, 1, 2]
    cases.append((f'case_{i}', label, fp32, bf16, (1.0, 1.0, 2.0)))
  return cases


def test_compare_matches_numpy_dice_and_changed_voxels():
  cases = _cases()
  result = bf16_dice.compare(cases, OPTIONS)
  expected = {}
  for k, precision in enumerate(('fp32', 'bf16')):
    expected[precision] = {
        name: np.mean([_dice(case[2 + k] == c, case[1] == c)
                       for case in cases])
        for c, name in enumerate(NAMES) if c}
  for name in ('a', 'b'):
    row = result['per_class'][name]
    assert row['fp32'] == pytest.approx(expected['fp32'][name])
    assert row['bf16'] == pytest.approx(expected['bf16'][name])
    assert row['difference'] == pytest.approx(
        expected['bf16'][name] - expected['fp32'][name])
  means = {p: np.mean(list(expected[p].values())) for p in expected}
  assert result['mean_dice_fp32'] == pytest.approx(means['fp32'])
  assert result['mean_dice_bf16'] == pytest.approx(means['bf16'])
  assert result['dice_difference'] == pytest.approx(
      means['bf16'] - means['fp32'])
  changed = sum(np.sum(c[2] != c[3]) for c in cases)
  total = sum(c[1].size for c in cases)
  assert result['voxels_changed_fraction'] == pytest.approx(changed / total)
  assert 0 < result['voxels_changed_fraction'] < 0.2


def test_identical_predictions_change_nothing():
  cases = [(c, label, fp32, fp32, s) for c, label, fp32, _, s in _cases()]
  result = bf16_dice.compare(cases, OPTIONS)
  assert result['dice_difference'] == 0
  assert result['voxels_changed_fraction'] == 0


def test_changed_fraction_refuses_different_shapes():
  with pytest.raises(ValueError, match='shapes'):
    bf16_dice.changed_fraction([(np.zeros((2, 2)), np.zeros((2, 3)))])


@pytest.mark.parametrize('flags, native', [
    (['avx2', 'avx512f'], False),
    (['avx512f', 'avx512_bf16'], True),
    (['amx_bf16', 'amx_tile'], True),
    (['avx512_bf16', 'ONEDNN_MAX_CPU_ISA=AVX2'], False),
    (['avx512_bf16', 'ONEDNN_MAX_CPU_ISA=AVX512_CORE'], False),
    (['avx512_bf16', 'ONEDNN_MAX_CPU_ISA=AVX512_CORE_BF16'], True),
])
def test_bf16_hardware(flags, native):
  assert bf16_dice.bf16_hardware(flags)[0] is native

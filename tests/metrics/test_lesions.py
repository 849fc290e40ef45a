"""Tests for unet3d/metrics/lesions.py on hand-built volumes."""

import numpy as np
import pytest

from unet3d.metrics import lesions
from unet3d.metrics import surface
from unet3d.metrics.conventions import Conventions

SHAPE = (40, 40, 40)
PENALTY = Conventions().hd95_penalty_mm


def box(start, stop, shape=SHAPE):
  mask = np.zeros(shape, bool)
  mask[tuple(slice(a, b) for a, b in zip(start, stop))] = True
  return mask


def test_one_matched_one_missed_one_false_positive():
  lesion_a = box((5, 5, 5), (15, 15, 15))       # 1000 voxels
  lesion_b = box((25, 25, 25), (31, 31, 31))    # 216 voxels, missed
  found_a = box((5, 5, 7), (15, 15, 17))        # 800 voxels shared with a
  false_positive = box((30, 5, 5), (34, 9, 9))  # far from any lesion
  label, pred = lesion_a | lesion_b, found_a | false_positive
  got = lesions.lesion_wise(pred, label, (1, 1, 1), dilation_mm=3)
  dice_a = 2 * 800 / 2000
  hd95_a = surface.hd95(found_a, lesion_a, (1, 1, 1))
  assert (got['tp'], got['fn'], got['fp']) == (1, 1, 1)
  assert got['dice'] == pytest.approx((dice_a + 0 + 0) / 3)
  assert got['hd95'] == pytest.approx((hd95_a + 2 * PENALTY) / 3)
  assert got['f1'] == pytest.approx(2 * 1 / (2 * 1 + 1 + 1))
  assert [les['volume_mm3'] for les in got['lesions']] == [1000, 216]


def test_a_component_within_the_dilation_matches():
  label = box((10, 10, 10), (20, 20, 20))
  near = box((22, 10, 10), (25, 20, 20))  # 2 mm gap: inside 3 mm dilation
  got = lesions.lesion_wise(near, label, (1, 1, 1), dilation_mm=3)
  assert (got['tp'], got['fn'], got['fp']) == (1, 0, 0)
  assert got['dice'] == 0.0  # matched but not overlapping
  # With anisotropic voxels the same gap is 2 x 4 mm: no longer a match.
  got = lesions.lesion_wise(near, label, (4, 1, 1), dilation_mm=3)
  assert (got['tp'], got['fn'], got['fp']) == (0, 1, 1)


def test_lesions_whose_dilations_touch_are_one_lesion():
  label = box((5, 5, 5), (10, 10, 10)) | box((12, 5, 5), (17, 10, 10))
  got = lesions.lesion_wise(label, label, (1, 1, 1), dilation_mm=1.5,
                            min_volume_mm3=0)
  assert (got['tp'], got['fn'], got['fp']) == (1, 0, 0)
  assert got['dice'] == 1.0 and got['hd95'] == 0.0
  apart = lesions.lesion_wise(label, label, (1, 1, 1), dilation_mm=0.5,
                              min_volume_mm3=0)
  assert apart['tp'] == 2


def test_diagonal_neighbours_are_one_component():
  label = np.zeros(SHAPE, bool)
  label[5, 5, 5] = label[6, 6, 6] = True  # 26-connected only
  _, count = lesions.components(label)
  assert count == 1


def test_small_lesions_are_not_scored_and_their_matches_not_false_positive():
  big, small = box((5, 5, 5), (15, 15, 15)), box((30, 30, 30), (32, 32, 32))
  got = lesions.lesion_wise(big | small, big | small, (1, 1, 1),
                            min_volume_mm3=50)
  assert (got['tp'], got['fn'], got['fp']) == (1, 0, 0)
  assert len(got['lesions']) == 1 and got['dice'] == 1.0
  # Spacing-aware: the same 8 voxels of 8 mm³ each are 64 mm³.
  got = lesions.lesion_wise(big | small, big | small, (2, 2, 2),
                            min_volume_mm3=50)
  assert got['tp'] == 2


def test_small_predicted_components_can_be_dropped():
  label = box((5, 5, 5), (15, 15, 15))
  speck = box((30, 30, 30), (31, 31, 32))
  got = lesions.lesion_wise(label | speck, label, (1, 1, 1))
  assert got['fp'] == 1  # BraTS 2023 keeps every predicted component
  got = lesions.lesion_wise(label | speck, label, (1, 1, 1),
                            min_pred_volume_mm3=5)
  assert got['fp'] == 0 and got['dice'] == 1.0


def test_empty_cases():
  empty = np.zeros(SHAPE, bool)
  got = lesions.lesion_wise(empty, empty, (1, 1, 1))
  assert (got['dice'], got['hd95'], got['f1']) == (1.0, 0.0, 1.0)
  got = lesions.lesion_wise(box((5, 5, 5), (10, 10, 10)), empty, (1, 1, 1))
  assert (got['dice'], got['hd95'], got['fp']) == (0.0, PENALTY, 1)
  got = lesions.lesion_wise(empty, box((5, 5, 5), (10, 10, 10)), (1, 1, 1),
                            conventions=Conventions(empty='nan'))
  assert (got['dice'], got['hd95'], got['fn']) == (0.0, PENALTY, 1)


def test_two_dimensional_masks():
  label = np.zeros((30, 30), bool)
  label[5:15, 5:15] = True
  pred = np.zeros((30, 30), bool)
  pred[5:15, 7:17] = True
  pred[25:28, 25:28] = True  # false positive
  got = lesions.lesion_wise(pred, label, (1, 1), min_volume_mm3=0)
  assert (got['tp'], got['fn'], got['fp']) == (1, 0, 1)
  assert got['dice'] == pytest.approx(2 * 80 / 200 / 2)

"""Tests for unet3d/metrics/binary.py: dice and IoU with empty-mask rules."""

import math

import numpy as np
import pytest

from unet3d.metrics import binary
from unet3d.metrics.conventions import Conventions


def test_dice_and_iou_of_overlapping_boxes():
  a, b = np.zeros((10, 10), bool), np.zeros((10, 10), bool)
  a[0:4, 0:5], b[2:6, 0:5] = True, True  # 20 and 20 pixels, 10 shared
  assert binary.dice(a, b) == pytest.approx(0.5)
  assert binary.iou(a, b) == pytest.approx(10 / 30)


def test_empty_masks_follow_the_conventions():
  empty, full = np.zeros((4, 4, 4), bool), np.ones((4, 4, 4), bool)
  assert binary.dice(empty, empty) == 1.0 and binary.iou(empty, empty) == 1.0
  assert binary.dice(empty, full) == 0.0 and binary.iou(full, empty) == 0.0
  nan = Conventions(empty='nan')  # nnU-Net: NaN only when both are empty
  assert math.isnan(binary.dice(empty, empty, nan))
  assert binary.dice(full, empty, nan) == 0.0
  with pytest.raises(ValueError, match='does not match label shape'):
    binary.dice(empty, full[:-1])

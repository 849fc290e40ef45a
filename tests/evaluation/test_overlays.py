"""Tests for unet3d/evaluation/overlays.py: the slice centre by hand, and
PNGs whose pixels show the class contours."""

import numpy as np
import pytest

from unet3d.evaluation import overlays


def test_foreground_centre_is_the_label_centre_of_mass():
  label = np.zeros((20, 16, 12), np.uint8)
  label[2:6, 4:8, 0:2] = 1   # centre (3.5, 5.5, 0.5), 32 voxels
  label[10:12, 10:12, 8:10] = 2  # centre (10.5, 10.5, 8.5), 8 voxels
  prediction = np.zeros_like(label)
  prediction[15, 15, 11] = 1
  # (32 * 3.5 + 8 * 10.5) / 40 = 4.9 -> 5; (32 * 5.5 + 8 * 10.5) / 40 = 6.5
  # -> 6 (half to even); (32 * 0.5 + 8 * 8.5) / 40 = 2.1 -> 2
  assert overlays.foreground_centre(label, prediction) == (5, 6, 2)
  # No label: the prediction's; neither: the volume's centre.
  assert overlays.foreground_centre(np.zeros_like(label), prediction) == (
      15, 15, 11)
  assert overlays.foreground_centre(np.zeros_like(label),
                                    np.zeros_like(label)) == (10, 8, 6)
  # Multi-label masks [X, Y, Z, K].
  masks = np.zeros((20, 16, 12, 2), np.uint8)
  masks[4, 4, 4, 1] = 1
  assert overlays.foreground_centre(masks, masks) == (4, 4, 4)


def _read_png(path):
  from matplotlib import image as mpimg  # pylint: disable=g-import-not-at-top
  return (mpimg.imread(path)[..., :3] * 255).round().astype(int)


def _colour_pixels(pixels, hex_colour, tolerance=40):
  rgb = np.array([int(hex_colour[i:i + 2], 16) for i in (1, 3, 5)])
  return int((np.abs(pixels - rgb).sum(-1) < tolerance).sum())


@pytest.mark.parametrize('multi_label', [False, True])
def test_overlay_draws_each_class_contour(tmp_path, multi_label):
  shape = (24, 24, 16)
  image = np.random.default_rng(0).normal(size=shape).astype(np.float32)
  label = np.zeros(shape, np.uint8)
  label[4:14, 4:14, 3:12] = 1
  prediction = label.copy()
  if multi_label:
    label = np.stack([label, np.zeros_like(label)], -1)
    prediction = np.stack([prediction, np.zeros_like(prediction)], -1)
    names, drawn, absent = ['organ', 'lesion'], 0, 1
  else:
    names, drawn, absent = ['background', 'organ', 'lesion'], 1, 2
  path = overlays.write_overlay(str(tmp_path / 'sub' / 'case.png'), image,
                                label, prediction, (1.0, 1.0, 2.5), names,
                                multi_label, title='case: dice 1.000')
  with open(path, 'rb') as f:
    assert f.read(8) == b'\x89PNG\r\n\x1a\n'
  pixels = _read_png(path)
  colours = overlays._COLOURS  # pylint: disable=protected-access
  # The organ's contour is drawn in its colour, well beyond the legend's
  # short line; the absent class only has its legend entry.
  legend_only = _colour_pixels(pixels, colours[absent])
  assert _colour_pixels(pixels, colours[drawn]) > legend_only + 200
  assert [p.name for p in (tmp_path / 'sub').iterdir()] == ['case.png']

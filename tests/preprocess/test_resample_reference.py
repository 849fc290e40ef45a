"""Our resampling (unet3d/preprocess/preprocessing.py) against scipy's.

`resample_grid` samples the source at i * scale + offset; with a target
shape the offset (scale - 1) / 2 keeps the field of view, which is scipy's
`ndimage.zoom(..., grid_mode=True)` (voxel edges aligned, not corners).
Boundaries: order 0 and 1 clamp at the edge voxels (scipy mode='nearest');
order 3 is the cubic B-spline with mirror boundaries in prefilter and
sampling (scipy mode='mirror'). Labels: 'nearest' is order 0; 'linear' is
the argmax of each class's linearly interpolated one-hot mask.
"""

import numpy as np
import pytest
from scipy import ndimage

from unet3d.preprocess import resample as pp

_MODES = {0: 'nearest', 1: 'nearest', 3: 'mirror'}
# Anisotropic spacings and targets: up- and down-sampling on one volume.
_SPACINGS = [((1.0, 0.7, 2.5), (0.8, 1.1, 1.0)),
             ((0.5, 0.5, 3.0), (1.0, 1.0, 1.0)),
             ((2.0, 1.3, 1.0), (0.6, 1.3, 2.2))]


def _volume(seed=0, shape=(9, 12, 7)):
  return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


@pytest.mark.parametrize('order', [0, 1, 3])
@pytest.mark.parametrize('spacing,target', _SPACINGS)
def test_resample_image_matches_scipy_affine_transform(order, spacing,
                                                       target):
  volume = _volume()
  grid = pp.resample_grid(volume.shape, spacing, target_spacing=target)
  ours = pp.resample_image(volume, grid, order)
  reference = ndimage.affine_transform(
      volume.astype(np.float64), np.asarray(grid.scale),
      offset=np.asarray(grid.offset), output_shape=grid.shape, order=order,
      mode=_MODES[order])
  assert ours.shape == grid.shape
  np.testing.assert_allclose(ours, reference, rtol=0, atol=2e-6)


@pytest.mark.parametrize('order', [0, 1, 3])
@pytest.mark.parametrize('shape', [(14, 5, 11), (4, 20, 7), (9, 12, 7)])
def test_resample_to_a_shape_is_scipy_zoom_in_grid_mode(order, shape):
  volume = _volume(1)
  grid = pp.resample_grid(volume.shape, (1.0, 1.0, 1.0), target_shape=shape)
  ours = pp.resample_image(volume, grid, order)
  reference = ndimage.zoom(volume.astype(np.float64),
                           np.asarray(shape) / np.asarray(volume.shape),
                           order=order, mode=_MODES[order], grid_mode=True)
  assert ours.shape == reference.shape == shape
  np.testing.assert_allclose(ours, reference, rtol=0, atol=2e-6)


def test_multichannel_images_resample_channel_by_channel():
  image = np.stack([_volume(2), _volume(3)], axis=-1)
  grid = pp.resample_grid(image.shape, (1.0, 0.7, 2.5), (0.8, 1.1, 1.0))
  ours = pp.resample_image(image, grid, 3)
  for c in range(2):
    reference = ndimage.affine_transform(
        image[..., c].astype(np.float64), np.asarray(grid.scale),
        offset=np.asarray(grid.offset), output_shape=grid.shape, order=3,
        mode='mirror')
    np.testing.assert_allclose(ours[..., c], reference, rtol=0, atol=2e-6)


@pytest.mark.parametrize('spacing,target', _SPACINGS)
def test_resample_label_matches_scipy_nearest_and_one_hot_linear(spacing,
                                                                 target):
  label = np.random.default_rng(4).integers(0, 4, (9, 12, 7)).astype(np.uint8)
  grid = pp.resample_grid(label.shape, spacing, target_spacing=target)

  def sample(array, order):
    return ndimage.affine_transform(
        array.astype(np.float64), np.asarray(grid.scale),
        offset=np.asarray(grid.offset), output_shape=grid.shape, order=order,
        mode='nearest')

  nearest = pp.resample_label(label, grid, 'nearest')
  np.testing.assert_array_equal(nearest, sample(label, 0).astype(np.uint8))
  linear = pp.resample_label(label, grid, 'linear')
  scores = np.stack([sample(label == v, 1) for v in range(4)])
  # Exact ties (e.g. 0.5 / 0.5 between two classes) round differently in
  # float32 and float64: compare where the winner is clear.
  top = np.sort(scores, axis=0)
  clear = top[-1] - top[-2] > 1e-5
  assert clear.mean() > 0.5
  np.testing.assert_array_equal(linear[clear],
                                scores.argmax(0).astype(np.uint8)[clear])

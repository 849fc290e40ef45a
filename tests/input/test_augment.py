"""Each augmentation against numpy/scipy references and alignment checks."""

import dataclasses
import itertools

import numpy as np
import pytest
from scipy import ndimage
import tensorflow as tf

from unet3d.config import AugmentationConfig
from unet3d.input import augment

RNG = np.random.default_rng(0)
SEED = tf.constant([3, 4], tf.int64)
OFF = {name: 0.0 for name in vars(AugmentationConfig())
       if name.endswith('_prob')}


def _aug(**values):
  return dataclasses.replace(AugmentationConfig(), **{**OFF, **values})


def _cube_case(size=16):
  """A labelled box (class 1) with a second box (class 2): the image is the
  label's indicator, so alignment is checkable voxel by voxel."""
  label = np.zeros([size] * 3, np.int32)
  label[3:10, 4:12, 5:11] = 1
  label[11:14, 2:6, 9:14] = 2
  return label.astype(np.float32)[..., None], label


def test_flips_match_numpy_and_swap_left_right_classes():
  image, label = _cube_case()
  aug = _aug(flip_prob=1.0, left_right_axis=2, left_right_label_pairs=[[1, 2]])
  got_image, got_label = augment.flip(tf.constant(image), tf.constant(label),
                                      aug, SEED)
  flipped = np.flip(label, (0, 1, 2))
  swapped = np.choose(flipped, [0, 2, 1])
  np.testing.assert_array_equal(got_label.numpy(), swapped)
  np.testing.assert_array_equal(got_image.numpy(), np.flip(image, (0, 1, 2)))


def test_flip_probability_zero_is_identity():
  image, label = _cube_case()
  got_image, got_label = augment.flip(tf.constant(image), tf.constant(label),
                                      _aug(flip_prob=0.0), SEED)
  np.testing.assert_array_equal(got_label.numpy(), label)
  np.testing.assert_array_equal(got_image.numpy(), image)


def test_rot90_is_one_of_numpy_rotations_and_keeps_alignment():
  image, label = _cube_case()
  seen = set()
  for s in range(12):
    got_image, got_label = augment.rot90(
        tf.constant(image), tf.constant(label),
        _aug(rot90_prob=1.0, rot90_axes=[0, 2]), tf.constant([s, 1]))
    ks = [k for k in (1, 2, 3)
          if np.array_equal(got_label.numpy(), np.rot90(label, k, (0, 2)))]
    assert len(ks) == 1
    seen.add(ks[0])
    np.testing.assert_array_equal(got_image.numpy()[..., 0],
                                  got_label.numpy())
  assert seen == {1, 2, 3}


def test_rotation_matrix_is_a_proper_rotation():
  angles = tf.constant([0.3, -0.7, 1.1])
  matrix = augment.rotation_matrix(angles, 3).numpy()
  np.testing.assert_allclose(matrix @ matrix.T, np.eye(3), atol=1e-6)
  assert np.linalg.det(matrix) == pytest.approx(1.0, abs=1e-6)
  c, s = np.cos(0.4), np.sin(0.4)
  np.testing.assert_allclose(
      augment.rotation_matrix(tf.constant([0.4]), 2).numpy(),
      [[c, -s], [s, c]], atol=1e-6)


def test_linear_interpolation_matches_scipy():
  volume = RNG.normal(size=(7, 8, 9, 2)).astype(np.float32)
  coords = RNG.uniform(-1, 9, size=(200, 3)).astype(np.float32)
  got = augment.interpolate_linear(tf.constant(volume),
                                   tf.constant(coords)).numpy()
  for c in range(2):
    expected = ndimage.map_coordinates(volume[..., c], coords.T, order=1,
                                       mode='constant', cval=0.0)
    inside = np.all((coords >= 0) & (coords <= np.array([6, 7, 8])), axis=1)
    np.testing.assert_allclose(got[inside, c], expected[inside], atol=1e-5)


def test_transform_grid_quarter_turn_equals_numpy_rot90():
  image, label = _cube_case()
  size = [16, 16, 16]
  grid = np.stack(np.meshgrid(*[np.arange(16.0)] * 3, indexing='ij'),
                  -1).reshape(-1, 3)
  offsets = grid - 7.5
  # A quarter turn in the (0, 1) plane about the patch centre.
  turn = np.array([[0, -1, 0], [1, 0, 0], [0, 0, 1]], np.float32)
  coords = offsets @ turn.T + 7.5
  centre = tf.constant([8, 8, 8])
  got_image, got_label = augment.sample_patch(
      tf.constant(image), tf.constant(label), centre, size,
      tf.constant(coords, tf.float32))
  expected = np.zeros_like(label)
  for (i, j, k), (a, b, c) in zip(grid.astype(int),
                                  np.round(coords).astype(int)):
    expected[i, j, k] = label[a, b, c]
  np.testing.assert_array_equal(got_label.numpy(), expected)
  np.testing.assert_allclose(got_image.numpy()[..., 0], expected, atol=1e-5)
  assert np.array_equal(expected, np.rot90(label, 1, (1, 0)))


def test_identity_transform_equals_a_plain_slice():
  image, label = _cube_case(24)
  aug = _aug(affine_prob=1.0, rotation_degrees=0.0, scale_range=[1.0, 1.0])
  centre = tf.constant([12, 11, 13])
  coords = augment.patch_coordinates(centre, [16, 16, 16], aug, SEED)
  warped = augment.sample_patch(tf.constant(image), tf.constant(label), centre,
                                [16, 16, 16], coords)
  sliced = augment.sample_patch(tf.constant(image), tf.constant(label), centre,
                                [16, 16, 16])
  np.testing.assert_allclose(warped[0].numpy(), sliced[0].numpy(), atol=1e-5)
  np.testing.assert_array_equal(warped[1].numpy(), sliced[1].numpy())
  np.testing.assert_array_equal(sliced[1].numpy(), label[4:20, 3:19, 5:21])


@pytest.mark.parametrize('kind', ['affine', 'elastic'])
def test_spatial_transforms_move_label_with_image(kind):
  image, label = _cube_case(24)
  if kind == 'affine':
    aug = _aug(affine_prob=1.0, rotation_degrees=40.0, scale_range=[0.8, 1.3])
  else:
    aug = _aug(elastic_prob=1.0, elastic_sigma=3.0, elastic_magnitude=3.0)
  centre = tf.constant([10, 10, 10])
  for s in range(4):
    coords = augment.patch_coordinates(centre, [16] * 3, aug,
                                       tf.constant([s, 9]))
    got_image, got_label = augment.sample_patch(
        tf.constant(image), tf.constant(label), centre, [16] * 3, coords)
    got_image, got_label = got_image.numpy()[..., 0], got_label.numpy()
    assert set(np.unique(got_label)) <= {0, 1, 2}
    assert got_label.dtype == np.int32
    # Linear vs nearest reads differ only at boundaries: rounding the image
    # gives the label almost everywhere.
    assert np.mean(np.round(got_image) == got_label) > 0.93
    assert not np.array_equal(got_label, label[2:18, 2:18, 2:18])


def test_elastic_field_has_the_configured_peak():
  field = augment.elastic_displacement([16, 16, 16], 3.0, 2.5, SEED).numpy()
  assert np.abs(field).max() == pytest.approx(2.5, rel=1e-5)
  # Smooth: neighbouring displacements differ far less than the peak.
  grid = field.reshape(16, 16, 16, 3)
  assert np.abs(np.diff(grid, axis=0)).max() < 1.0


def _intensity(fn, image, **values):
  return fn(tf.constant(image), _aug(**values), SEED).numpy()


def test_brightness_and_contrast_formulas():
  image = RNG.normal(size=(8, 8, 8, 2)).astype(np.float32)
  np.testing.assert_allclose(
      _intensity(augment.brightness, image, brightness_prob=1.0,
                 brightness_range=[1.3, 1.3]), image * 1.3, rtol=1e-6)
  got = _intensity(augment.contrast, image, contrast_prob=1.0,
                   contrast_range=[1.5, 1.5])
  mean = image.mean(axis=(0, 1, 2))
  expected = np.clip((image - mean) * 1.5 + mean, image.min(axis=(0, 1, 2)),
                     image.max(axis=(0, 1, 2)))
  np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


def test_gamma_formula_retains_mean_and_std():
  image = RNG.normal(size=(8, 8, 8, 1)).astype(np.float32)
  got = _intensity(augment.gamma, image, gamma_prob=1.0, gamma_range=[1.4, 1.4])
  low, high = image.min(), image.max()
  curved = ((image - low) / (high - low)) ** 1.4 * (high - low) + low
  expected = (curved - curved.mean()) / curved.std() * image.std() + image.mean()
  np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)


def test_blur_matches_scipy_gaussian_filter():
  image = RNG.normal(size=(10, 12, 9, 2)).astype(np.float32)
  got = _intensity(augment.gaussian_blur, image, blur_prob=1.0,
                   blur_sigma_range=[1.0, 1.0])
  for c in range(2):
    expected = ndimage.gaussian_filter(image[..., c], 1.0, mode='constant',
                                       truncate=3.0)
    np.testing.assert_allclose(got[..., c], expected, atol=1e-5)


def test_noise_has_bounded_std():
  image = np.zeros((16, 16, 16, 1), np.float32)
  got = _intensity(augment.gaussian_noise, image, noise_prob=1.0,
                   noise_std=0.2)
  assert 0.0 < got.std() <= 0.2 * 1.05


def test_low_resolution_matches_a_scipy_reference():
  image = RNG.normal(size=(8, 8, 8, 1)).astype(np.float32)
  same = _intensity(augment.low_resolution, image, low_resolution_prob=1.0,
                    low_resolution_zoom_range=[1.0, 1.0])
  np.testing.assert_allclose(same, image, atol=1e-6)
  got = _intensity(augment.low_resolution, image, low_resolution_prob=1.0,
                   low_resolution_zoom_range=[0.5, 0.5])[..., 0]
  coarse = image[0::2, 0::2, 0::2, 0]  # nearest at 2c + 0.5 -> 2c
  fine = np.stack(np.meshgrid(*[np.arange(8.0)] * 3, indexing='ij'))
  source = np.clip((fine + 0.5) / 2 - 0.5, 0, 3)
  expected = ndimage.map_coordinates(coarse, source, order=1)
  np.testing.assert_allclose(got, expected, atol=1e-5)


def test_intensity_augmentations_never_touch_the_label():
  image, label = _cube_case()
  aug = _aug(noise_prob=1.0, blur_prob=1.0, brightness_prob=1.0,
             contrast_prob=1.0, gamma_prob=1.0, low_resolution_prob=1.0)
  got_image, got_label = augment.augment_patch(
      tf.constant(image), tf.constant(label), aug, SEED)
  np.testing.assert_array_equal(got_label.numpy(), label)
  assert not np.allclose(got_image.numpy(), image)


def test_multi_label_masks_move_together():
  masks = np.zeros([16] * 3 + [2], np.int32)
  masks[2:9, 3:7, 4:12, 0] = 1
  masks[3:5, 4:6, 5:7, 1] = 1
  image = masks[..., :1].astype(np.float32)
  for flip_prob, rot in itertools.product((1.0,), (1.0,)):
    got_image, got_masks = augment.augment_patch(
        tf.constant(image), tf.constant(masks),
        _aug(flip_prob=flip_prob, rot90_prob=rot), SEED, multi_label=True)
    np.testing.assert_array_equal(got_masks.numpy()[..., 0],
                                  got_image.numpy()[..., 0])
    # The inner region stays inside the outer one after the same transform.
    assert np.all(got_masks.numpy()[..., 0] >= got_masks.numpy()[..., 1])

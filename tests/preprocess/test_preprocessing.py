"""unet3d/preprocess/preprocessing.py and splits.py against numpy references."""

import numpy as np
import pytest

from unet3d.preprocess import brats
from unet3d.preprocess import intensity
from unet3d.preprocess import io
from unet3d.preprocess import label_maps
from unet3d.preprocess import resample
from unet3d.preprocess import spatial
from unet3d.input import splits


def _oblique_lps_affine():
  """Axes (j, i, k) point to (P, L, S): a permuted, flipped, shifted grid."""
  affine = np.zeros((4, 4))
  affine[0, 1] = -0.8   # array axis 1 -> -x (L)
  affine[1, 0] = -1.2   # array axis 0 -> -y (P)
  affine[2, 2] = 2.5    # array axis 2 -> +z (S)
  affine[:3, 3] = [40.0, -12.0, 7.5]
  affine[3, 3] = 1
  return affine


def _world(affine, index):
  return affine[:3, :3] @ np.asarray(index, np.float64) + affine[:3, 3]


def _voxel(affine, world):
  return np.linalg.inv(affine)[:3, :3] @ world + np.linalg.inv(affine)[:3, 3]


def test_reorient_to_ras_keeps_every_voxel_at_its_world_point():
  rng = np.random.default_rng(0)
  affine = _oblique_lps_affine()
  array = rng.normal(size=(5, 6, 7, 2)).astype(np.float32)
  out, out_affine = spatial.reorient(array, affine)
  assert spatial.axcodes(affine) == 'PLS'
  assert spatial.axcodes(out_affine) == 'RAS'
  assert out.shape == (6, 5, 7, 2)
  np.testing.assert_allclose(io.spacing_of(out_affine), [0.8, 1.2, 2.5])
  np.testing.assert_allclose(spatial.oriented_spacing(affine), [0.8, 1.2, 2.5])
  # Every output voxel holds the input voxel at the same world point.
  for index in np.ndindex(out.shape[:3]):
    source = np.rint(_voxel(affine, _world(out_affine, index))).astype(int)
    np.testing.assert_array_equal(out[index], array[tuple(source)])


def test_crop_affine_maps_cropped_voxels_to_the_same_world_point():
  affine = _oblique_lps_affine()
  image = np.zeros((10, 9, 8, 2), np.float32)
  image[2:5, 3, 1:7, 1] = 1.0
  image[6, 4, 4, 0] = 2.0
  start, stop = spatial.nonzero_bbox(image)
  np.testing.assert_array_equal(start, [2, 3, 1])
  np.testing.assert_array_equal(stop, [7, 5, 7])
  cropped = spatial.crop(image, start, stop)
  new_affine = spatial.crop_affine(affine, start)
  assert cropped.sum() == image.sum()
  for index in [(0, 0, 0), (4, 1, 3), (1, 0, 5)]:
    np.testing.assert_allclose(_world(new_affine, index),
                               _world(affine, np.add(index, start)))
    np.testing.assert_array_equal(cropped[index],
                                  image[tuple(np.add(index, start))])


def test_resampling_reaches_the_target_spacing_and_keeps_geometry():
  # Cubic splines reproduce a linear function of position, so each
  # resampled voxel must equal f(world point of that voxel) exactly
  # (away from the border, where 'nearest' extension breaks linearity).
  affine = np.diag([0.8, 1.1, 2.5, 1.0])
  affine[:3, 3] = [-3.0, 5.0, 11.0]
  shape = (20, 16, 14)

  def f(world):
    return 0.3 * world[0] - 0.7 * world[1] + 0.2 * world[2] + 4.0

  index = np.stack(np.meshgrid(*[np.arange(s) for s in shape],
                               indexing='ij'), axis=-1).astype(np.float64)
  image = f(np.moveaxis(index @ affine[:3, :3].T + affine[:3, 3], -1, 0))
  target = (1.0, 0.75, 1.5)
  grid = resample.resample_grid(shape, io.spacing_of(affine), target)
  out = resample.resample_image(image[..., None].astype(np.float32), grid)
  out_affine = resample.resampled_affine(affine, grid)
  np.testing.assert_allclose(io.spacing_of(out_affine), target)
  assert grid.shape == (16, 23, 23)  # round(shape * spacing / target)
  assert out.shape == grid.shape + (1,)
  # The grids share their centre.
  np.testing.assert_allclose(
      _world(out_affine, (np.array(grid.shape) - 1) / 2),
      _world(affine, (np.array(shape) - 1) / 2), atol=1e-9)
  # Output voxels at least 5 input voxels from every border (the spline
  # prefilter's boundary error decays by ~0.27 per voxel).
  inner = []
  for n, size, scale, offset in zip(shape, grid.shape, grid.scale,
                                    grid.offset):
    x = np.arange(size) * scale + offset
    inner.append(np.flatnonzero((x >= 5) & (x <= n - 6)))
  inner = np.ix_(*inner)
  out_index = np.stack(np.meshgrid(*[np.arange(s) for s in grid.shape],
                                   indexing='ij'), axis=-1).astype(float)
  expected = f(np.moveaxis(out_index @ out_affine[:3, :3].T +
                           out_affine[:3, 3], -1, 0))
  np.testing.assert_allclose(out[..., 0][inner], expected[inner], atol=1e-3)


def test_resample_to_shape_keeps_the_field_of_view():
  grid = resample.resample_grid((10, 20, 30), (1.0, 1.0, 1.0),
                                target_shape=(20, 10, 30))
  np.testing.assert_allclose(grid.scale, [0.5, 2.0, 1.0])
  # First/last voxel centres: half a new voxel inside the old extent.
  np.testing.assert_allclose(grid.offset, [-0.25, 0.5, 0.0])
  assert resample.resample_grid((8, 8, 8), (1, 1, 1), (1, 1, 1)).is_identity()


def test_label_resampling_one_hot_linear_and_nearest():
  label = np.zeros((12, 12, 12), np.uint8)
  label[3:9, 3:9, 3:9] = 1
  label[5:7, 5:7, 5:7] = 4
  grid = resample.resample_grid(label.shape, (1.0, 1.0, 1.0), (0.5, 0.5, 0.5))
  nearest = resample.resample_label(label, grid, 'nearest')
  linear = resample.resample_label(label, grid, 'linear')
  assert nearest.dtype == np.uint8 and linear.dtype == np.uint8
  assert set(np.unique(linear)) == {0, 1, 4}
  # Upsampling by 2 doubles each side: 6^3 -> 12^3 voxels of class 1 + 4.
  assert np.count_nonzero(nearest) == 12 ** 3
  assert np.count_nonzero(nearest == 4) == 4 ** 3
  # One-hot linear rounds each cube's 8 corners: a corner voxel sits at
  # (0.25, 0.25, 0.25) from the cube's corner voxel, so its class weight is
  # 0.75^3 = 0.42 against 0.58 for the outside class.
  assert np.count_nonzero(linear) == 12 ** 3 - 8
  assert np.count_nonzero(linear == 4) == 4 ** 3 - 8
  # Multi-label masks stay binary.
  masks = np.stack([label > 0, label == 4], axis=-1).astype(np.uint8)
  out = resample.resample_label(masks, grid)
  assert out.shape == grid.shape + (2,)
  np.testing.assert_array_equal(out[..., 0], linear > 0)
  np.testing.assert_array_equal(out[..., 1], linear == 4)


def test_ct_normalisation_window_then_dataset_zscore():
  samples = np.array([-1000.0, -300.0, 0.0, 100.0, 250.0, 900.0])
  low, high, mean, std = intensity.ct_parameters(samples, window=(-200, 250))
  clipped = np.array([-200.0, -200.0, 0.0, 100.0, 250.0, 250.0])
  assert (low, high) == (-200.0, 250.0)
  assert mean == pytest.approx(clipped.mean())
  assert std == pytest.approx(clipped.std())
  image = np.array([-500.0, 50.0, 400.0], np.float32)
  np.testing.assert_allclose(
      intensity.normalize_ct(image, low, high, mean, std),
      (np.array([-200.0, 50.0, 250.0]) - clipped.mean()) / clipped.std(),
      rtol=1e-6)


def test_ct_normalisation_percentiles():
  samples = np.arange(1001, dtype=np.float64)  # 0..1000
  low, high, mean, std = intensity.ct_parameters(samples)
  assert (low, high) == pytest.approx((5.0, 995.0))
  clipped = np.clip(samples, 5.0, 995.0)
  assert (mean, std) == pytest.approx((clipped.mean(), clipped.std()))


def test_zscore_within_nonzero_mask():
  rng = np.random.default_rng(1)
  image = np.zeros((10, 10, 10), np.float32)
  image[2:8, 2:8, 2:8] = rng.normal(300, 40, (6, 6, 6))
  mask = image != 0
  out, mean, std = intensity.normalize_zscore(image, mask)
  assert mean == pytest.approx(image[mask].mean(), rel=1e-6)
  assert out[mask].mean() == pytest.approx(0.0, abs=1e-5)
  assert out[mask].std() == pytest.approx(1.0, abs=1e-5)
  assert np.all(out[~mask] == 0)
  whole, _, _ = intensity.normalize_zscore(image)
  assert whole.mean() == pytest.approx(0.0, abs=1e-5)
  assert whole.std() == pytest.approx(1.0, abs=1e-5)


@pytest.mark.parametrize('fractions, within', [
    ([0.5, 0.6, 0.9], True),        # median 0.6: a zero background
    ([0.5, 0.9, 0.95], False),      # median 0.9
    ([0.7499], True), ([0.75], False),  # below the threshold only
    ([], False),                    # no cases: nothing to crop
])
def test_nnunet_rule_for_the_nonzero_mask(fractions, within):
  assert intensity.zscore_within_nonzero_mask(fractions) is within


def test_undecided_nonzero_masks_are_resolved_and_the_others_kept():
  norms = (intensity.ChannelNorm('zscore', nonzero_mask=None),
           intensity.ChannelNorm('zscore', nonzero_mask=False),
           intensity.ChannelNorm('zscore', nonzero_mask=True),
           intensity.ChannelNorm('ct', window=(-200.0, 250.0)),
           intensity.ChannelNorm('none', nonzero_mask=None))
  assert intensity.needs_nonzero_fractions(norms)
  assert not intensity.needs_nonzero_fractions(norms[1:4])
  skull_stripped = intensity.resolve_nonzero_mask(norms, [0.3, 0.4])
  assert [n.nonzero_mask for n in skull_stripped] == [True, False, True,
                                                       False, False]
  assert skull_stripped[3] == norms[3]
  whole = intensity.resolve_nonzero_mask(norms, [1.0, 1.0])
  assert [n.nonzero_mask for n in whole] == [False, False, True, False,
                                             False]
  # normalize refuses a choice left open instead of guessing.
  with pytest.raises(ValueError, match='channel 0: .*undecided'):
    intensity.normalize(np.ones((2, 2, 2, 1), np.float32), norms[:1])


def test_nonzero_fraction_is_the_nonzero_boxs_share():
  image = np.zeros((10, 8, 6, 2), np.float32)
  image[2, 1, 1, 0] = 1.0
  image[6, 4, 3, 1] = -2.0  # any channel counts
  assert spatial.nonzero_fraction(image) == 5 * 4 * 3 / (10 * 8 * 6)
  assert spatial.nonzero_fraction(np.zeros((4, 4, 4, 1))) == 1.0


def test_brats_labels_and_regions():
  rng = np.random.default_rng(2)
  raw = rng.choice([0, 1, 2, 4], size=(6, 7, 8)).astype(np.float32)
  label = label_maps.remap_labels(raw, brats.LABEL_MAP, 'seg.nii.gz')
  np.testing.assert_array_equal(label, np.where(raw == 4, 3, raw))
  regions = brats.regions_from_labels(label)
  np.testing.assert_array_equal(regions[..., 0], np.isin(raw, [1, 2, 4]))
  np.testing.assert_array_equal(regions[..., 1], np.isin(raw, [1, 4]))
  np.testing.assert_array_equal(regions[..., 2], raw == 4)
  with pytest.raises(ValueError, match=r'^seg.nii.gz: unknown label values '
                     r'\[3\] \(expected \[0, 1, 2, 4\]\)$'):
    label_maps.remap_labels(np.array([0, 3, 4]), brats.LABEL_MAP, 'seg.nii.gz')
  with pytest.raises(ValueError, match='must be integers, found 1.5'):
    label_maps.remap_labels(np.array([0.0, 1.5]), brats.LABEL_MAP, 'seg.nii.gz')


def test_restore_original_undoes_reorient_and_crop_exactly():
  rng = np.random.default_rng(3)
  affine = _oblique_lps_affine()
  label = np.zeros((9, 10, 11), np.uint8)
  label[2:6, 3:9, 1:4] = rng.integers(1, 4, (4, 6, 3))
  array, new_affine = spatial.reorient(label, affine)
  start, stop = spatial.nonzero_bbox(array)
  stored = spatial.crop(array, start, stop)
  record = {'original': {'shape': list(label.shape),
                         'affine': affine.tolist()},
            'stored': {'affine': spatial.crop_affine(new_affine,
                                                     start).tolist()}}
  np.testing.assert_array_equal(spatial.restore_original(stored, record), label)
  # Channels (e.g. probabilities) are carried along.
  both = np.stack([stored, 2 * stored], axis=-1).astype(np.float32)
  restored = spatial.restore_original(both, record, order=1)
  np.testing.assert_allclose(restored[..., 1], 2 * label, atol=1e-5)


def test_restore_original_after_resampling_returns_to_the_original_grid():
  affine = _oblique_lps_affine()
  grid_index = np.meshgrid(*[np.arange(s) for s in (16, 18, 10)],
                           indexing='ij')
  label = (sum(((g - c) / r) ** 2 for g, c, r in
               zip(grid_index, (8, 9, 5), (5, 6, 3))) <= 1).astype(np.uint8)
  array, new_affine = spatial.reorient(label, affine)
  grid = resample.resample_grid(array.shape, io.spacing_of(new_affine),
                                (0.5, 0.5, 0.5))
  stored = resample.resample_label(array, grid, 'nearest')
  record = {'original': {'shape': list(label.shape),
                         'affine': affine.tolist()},
            'stored': {'affine': resample.resampled_affine(new_affine,
                                                           grid).tolist()}}
  restored = spatial.restore_original(stored, record)
  assert restored.shape == label.shape
  dice = 2 * np.sum(restored & label) / (restored.sum() + label.sum())
  assert dice > 0.97


def test_box_around_grows_to_min_size_inside_the_volume():
  start, stop = spatial.box_around([4, 0, 10], [6, 3, 12], [8, 8, 8],
                                  [20, 20, 14])
  np.testing.assert_array_equal(stop - start, [8, 8, 8])
  np.testing.assert_array_equal(start, [1, 0, 6])
  start, stop = spatial.box_around([0, 0, 0], [5, 5, 5], [8, 8, 8], [6, 20, 20])
  np.testing.assert_array_equal(stop - start, [6, 8, 8])


def test_k_fold_splits_are_disjoint_complete_and_deterministic():
  ids = [f'case_{i:02d}' for i in range(17)]
  a = splits.make_splits(ids, num_folds=5, seed=7)
  b = splits.make_splits(list(reversed(ids)), num_folds=5, seed=7)
  c = splits.make_splits(ids, num_folds=5, seed=8)
  assert a == b
  assert a != c
  vals = [set(f['val']) for f in a['folds']]
  assert sorted(len(v) for v in vals) == [3, 3, 3, 4, 4]
  assert set().union(*vals) == set(ids)
  assert sum(len(v) for v in vals) == len(ids)
  for fold in a['folds']:
    assert set(fold['train']) | set(fold['val']) == set(ids)
    assert not set(fold['train']) & set(fold['val'])
  single = splits.make_splits(ids, num_folds=1, seed=0,
                              validation_fraction=0.2)
  assert len(single['folds']) == 1 and len(single['folds'][0]['val']) == 3
  with pytest.raises(ValueError, match='--fold: 5 is not one of the 5 folds'):
    splits.check_fold(a, 5)
  with pytest.raises(ValueError, match='--num_folds: 20 folds need at least'):
    splits.make_splits(ids, num_folds=20)

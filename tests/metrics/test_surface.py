"""Tests for unet3d/surface.py on shapes with known distances."""

import numpy as np
import pytest

from unet3d.metrics import surface


def ball(shape, centre, radius, spacing=(1, 1, 1)):
  grid = np.meshgrid(*[np.arange(s) * sp for s, sp in zip(shape, spacing)],
                     indexing='ij')
  d2 = sum((g - c)**2 for g, c in zip(grid, centre))
  return d2 <= radius**2


def box(shape, start, stop):
  mask = np.zeros(shape, bool)
  mask[tuple(slice(a, b) for a, b in zip(start, stop))] = True
  return mask


def test_concentric_spheres_distance_is_the_radius_difference():
  shape = (48, 48, 48)
  inner = ball(shape, (24, 24, 24), 8)
  outer = ball(shape, (24, 24, 24), 14)
  # Voxelised spheres: within a voxel of the 6 mm difference.
  assert surface.hd95(inner, outer, (1, 1, 1)) == pytest.approx(6, abs=1.0)
  assert surface.assd(inner, outer, (1, 1, 1)) == pytest.approx(6, abs=1.0)
  assert surface.normalized_surface_dice(inner, outer, (1, 1, 1), 2) == 0
  assert surface.normalized_surface_dice(inner, outer, (1, 1, 1), 7) == 1


def test_shifted_cubes_have_exact_distances():
  shape = (20, 20, 20)
  a = box(shape, (5, 5, 5), (12, 12, 12))
  b = box(shape, (8, 5, 5), (15, 12, 12))  # shifted by 3 voxels on axis 0
  pred_to_label, label_to_pred = surface.surface_distances(a, b, (1, 1, 1))
  # Every surface voxel lies within 3 of the other surface, some exactly 3.
  assert pred_to_label.max() == pytest.approx(3.0)
  assert label_to_pred.max() == pytest.approx(3.0)
  assert surface.hd95(a, b, (1, 1, 1)) <= 3.0
  assert surface.hd95(a, a, (1, 1, 1)) == 0.0
  assert surface.normalized_surface_dice(a, b, (1, 1, 1), 3.0) == 1.0


def test_anisotropic_spacing_scales_distances_per_axis():
  shape = (20, 20, 20)
  a = box(shape, (5, 5, 5), (12, 12, 12))
  b = box(shape, (8, 5, 5), (15, 12, 12))
  far = surface.surface_distances(a, b, (2.5, 1, 1))
  assert far[0].max() == pytest.approx(7.5)  # 3 voxels of 2.5 mm
  near = surface.surface_distances(a, b, (1, 2.5, 2.5))
  assert near[0].max() == pytest.approx(3.0)


def test_empty_masks_follow_the_stated_convention():
  empty = np.zeros((8, 8, 8), bool)
  full = box((8, 8, 8), (2, 2, 2), (5, 5, 5))
  assert surface.hd95(empty, empty, (1, 1, 1)) == 0.0
  assert surface.assd(empty, empty, (1, 1, 1)) == 0.0
  assert surface.normalized_surface_dice(empty, empty, (1, 1, 1), 1) == 1.0
  assert surface.normalized_surface_dice(full, empty, (1, 1, 1), 1) == 0.0
  legacy = surface.Conventions.legacy()
  assert surface.hd95(empty, full, (1, 1, 1), legacy) == float('inf')
  assert surface.assd(full, empty, (1, 1, 1), legacy) == float('inf')
  # The default is the BraTS penalty; 'nan' follows nnU-Net and MONAI.
  assert surface.hd95(empty, full, (1, 1, 1)) == 373.13
  nan = surface.Conventions(empty='nan')
  assert np.isnan(surface.hd95(empty, full, (1, 1, 1), nan))
  assert np.isnan(surface.hd95(empty, empty, (1, 1, 1), nan))
  assert np.isnan(surface.normalized_surface_dice(empty, empty, (1, 1, 1),
                                                  conventions=nan))
  assert surface.normalized_surface_dice(empty, full, (1, 1, 1),
                                         conventions=nan) == 0.0


def test_per_case_report_and_summary():
  shape = (20, 20, 20)
  label = np.zeros(shape, np.uint8)
  label[box(shape, (5, 5, 5), (12, 12, 12))] = 1
  pred = np.zeros(shape, np.uint8)
  pred[box(shape, (8, 5, 5), (15, 12, 12))] = 1
  report = surface.per_case_report(pred, label, (1, 1, 1), 3,
                                      tolerance_mm=1.0)
  assert set(report['per_class']) == {'class_1', 'class_2'}
  assert report['per_class']['class_2'] == {'hd95': 0.0, 'assd': 0.0,
                                            'nsd': 1.0}
  assert report['per_class']['class_1']['hd95'] <= 3.0
  missing = surface.per_case_report(np.zeros(shape, np.uint8), label,
                                       (1, 1, 1), 2)
  summary = surface.summarize_surface([report, missing])
  assert summary['class_1']['hd95_num_infinite'] == 1
  assert summary['class_1']['hd95'] == pytest.approx(
      report['per_class']['class_1']['hd95'])
  with pytest.raises(ValueError, match='does not match label shape'):
    surface.per_case_report(pred[:-1], label, (1, 1, 1), 2)


def _full_volume_distances(pred, label, spacing):
  """Reference without the bounding-box crop: brute force over all surface
  voxel pairs."""
  from scipy import ndimage
  structure = ndimage.generate_binary_structure(3, 1)

  def points(mask):
    edge = mask & ~ndimage.binary_erosion(mask, structure, border_value=0)
    return np.argwhere(edge) * np.asarray(spacing)

  a, b = points(pred), points(label)
  d = np.sqrt(((a[:, None, :] - b[None, :, :])**2).sum(-1))
  return d.min(1), d.min(0)


@pytest.mark.parametrize('seed', [0, 1, 2])
def test_distances_in_the_bounding_box_equal_the_whole_volume(seed):
  # Masks touching the volume's faces, and small ones far inside, with
  # anisotropic voxels: the crop must not change any surface or distance.
  rng = np.random.default_rng(seed)
  shape, spacing = (30, 26, 22), (0.7, 1.1, 2.5)
  pred = ball(shape, rng.uniform(0, 30, 3), rng.uniform(3, 9), spacing)
  label = box(shape, rng.integers(0, 10, 3), rng.integers(14, 27, 3))
  pred[0, 0, :] = True  # touches the volume's edge
  got = surface.surface_distances(pred, label, spacing)
  want = _full_volume_distances(pred, label, spacing)
  for g, w in zip(got, want):
    np.testing.assert_allclose(np.sort(g), np.sort(w), rtol=1e-9)

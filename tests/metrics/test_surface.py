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


# Reference implementations and conventions ---------------------------------

MONAI = surface.Conventions(hd95='max_directed', surface_weighting='voxel')
MEDPY = surface.Conventions(hd95='pooled', surface_weighting='voxel')


def blob(shape, seed, sigma=2.5, level=0.52):
  """A seeded random smooth blob (possibly several pieces)."""
  from scipy import ndimage
  rng = np.random.default_rng(seed)
  return ndimage.gaussian_filter(rng.random(shape), sigma) > level


def _cases():
  """(name, pred, label, spacing): blobs, border-touching, single voxels,
  anisotropic voxels."""
  cases = []
  for seed, spacing in ((0, (1, 1, 1)), (1, (0.7, 1.1, 2.5)),
                        (2, (3.0, 0.8, 0.8))):
    cases.append((f'blobs{seed}', blob((34, 30, 26), seed),
                  blob((34, 30, 26), seed + 10), spacing))
  border = box((20, 18, 16), (0, 0, 0), (9, 18, 7))
  cases.append(('border', border, box((20, 18, 16), (0, 2, 0), (12, 18, 16)),
                (1.2, 0.9, 2.0)))
  one, other = np.zeros((9, 9, 9), bool), np.zeros((9, 9, 9), bool)
  one[2, 3, 4], other[6, 1, 8] = True, True
  cases.append(('single_voxels', one, other, (0.5, 1.5, 2.0)))
  cases.append(('voxel_in_box', one, box((9, 9, 9), (1, 1, 1), (6, 7, 8)),
                (1, 1, 1)))
  return cases


CASES = _cases()


@pytest.mark.parametrize('spacing', [(1, 1, 1), (2.5, 0.7, 1.3),
                                     (0.8, 0.8, 5.0), (1.0, 0.6)])
def test_area_table_equals_deepminds(spacing):
  lookup = pytest.importorskip('surface_distance.lookup_tables')
  if len(spacing) == 3:
    want = lookup.create_table_neighbour_code_to_surface_area(spacing)
  else:
    want = lookup.create_table_neighbour_code_to_contour_length(spacing)
  np.testing.assert_allclose(surface.area_table(spacing), want, rtol=1e-12,
                             atol=1e-12)


def test_area_weights_sum_to_a_spheres_area():
  # Independent of any reference: a 15 mm sphere has 4 pi r^2 of surface;
  # midpoint marching cubes on its voxels overshoots by about 9 %, and
  # anisotropic voxels measure the same sphere alike.
  area = 4 * np.pi * 15**2
  for spacing in ((1, 1, 1), (0.75, 1.5, 1.0)):
    shape = [int(40 / s) for s in spacing]
    sphere = ball(shape, (20, 20, 20), 15, spacing)
    d = surface.weighted_surface_distances(sphere, sphere, spacing)
    assert area < d.pred_weights.sum() < 1.12 * area
  assert d.pred_to_label.max() == 0


@pytest.mark.parametrize('name,pred,label,spacing', CASES,
                         ids=[c[0] for c in CASES])
def test_area_weighted_metrics_equal_deepminds(name, pred, label, spacing):
  sd = pytest.importorskip('surface_distance')
  ref = sd.compute_surface_distances(label, pred, spacing)  # label = gt
  assert surface.hd95(pred, label, spacing) == pytest.approx(
      sd.compute_robust_hausdorff(ref, 95), rel=1e-6)
  for tolerance in (0.5, 1.0, 2.0):
    assert surface.normalized_surface_dice(
        pred, label, spacing, tolerance) == pytest.approx(
            sd.compute_surface_dice_at_tolerance(ref, tolerance), rel=1e-6)
  # DeepMind returns the two directed means; ASSD pools them by area.
  mine = surface.weighted_surface_distances(pred, label, spacing)
  label_to_pred, pred_to_label = sd.compute_average_surface_distance(ref)
  assert np.average(mine.pred_to_label, weights=mine.pred_weights) == (
      pytest.approx(pred_to_label, rel=1e-6))
  assert np.average(mine.label_to_pred, weights=mine.label_weights) == (
      pytest.approx(label_to_pred, rel=1e-6))
  pooled = ((ref['distances_gt_to_pred'] * ref['surfel_areas_gt']).sum() +
            (ref['distances_pred_to_gt'] * ref['surfel_areas_pred']).sum()) / (
                ref['surfel_areas_gt'].sum() + ref['surfel_areas_pred'].sum())
  assert surface.assd(pred, label, spacing) == pytest.approx(pooled,
                                                             rel=1e-6)


def test_2d_area_weighted_metrics_equal_deepminds():
  sd = pytest.importorskip('surface_distance')
  pred, label = blob((40, 36), 3, 2.0), blob((40, 36), 4, 2.0)
  spacing = (0.6, 1.4)
  ref = sd.compute_surface_distances(label, pred, spacing)
  assert surface.hd95(pred, label, spacing) == pytest.approx(
      sd.compute_robust_hausdorff(ref, 95), rel=1e-6)
  assert surface.normalized_surface_dice(pred, label, spacing, 1.0) == (
      pytest.approx(sd.compute_surface_dice_at_tolerance(ref, 1.0), rel=1e-6))


@pytest.mark.parametrize('name,pred,label,spacing', CASES,
                         ids=[c[0] for c in CASES])
def test_pooled_voxel_hd95_equals_medpy(name, pred, label, spacing):
  medpy_binary = pytest.importorskip('medpy.metric.binary')
  # medpy pools both directed sets before the percentile.
  assert surface.hd95(pred, label, spacing, MEDPY) == pytest.approx(
      medpy_binary.hd95(pred, label, voxelspacing=spacing), rel=1e-6)
  # medpy's asd is one directed mean (its assd averages the two means,
  # which is not our pooled ASSD).
  pred_to_label, _ = surface.surface_distances(pred, label, spacing)
  assert pred_to_label.mean() == pytest.approx(
      medpy_binary.asd(pred, label, voxelspacing=spacing), rel=1e-6)


def _brute_force_voxel_scores(pred, label, spacing, tolerance):
  """MONAI's convention by pairwise distances between surface voxels: the
  larger directed 95th percentile, pooled mean, share within tolerance."""
  from scipy import ndimage
  structure = ndimage.generate_binary_structure(pred.ndim, 1)

  def points(mask):
    edge = mask & ~ndimage.binary_erosion(mask, structure, border_value=0)
    return np.argwhere(edge) * np.asarray(spacing, np.float64)

  a, b = points(pred), points(label)
  d = np.sqrt(((a[:, None, :] - b[None, :, :])**2).sum(-1))
  ab, ba = d.min(1), d.min(0)
  both = np.concatenate([ab, ba])
  return {'hd95': max(np.percentile(ab, 95), np.percentile(ba, 95)),
          'assd': both.mean(), 'nsd': (both <= tolerance).mean()}


@pytest.mark.parametrize('name,pred,label,spacing', CASES,
                         ids=[c[0] for c in CASES])
def test_max_directed_voxel_scores_equal_brute_force(name, pred, label,
                                                     spacing):
  got = surface.surface_scores(pred, label, spacing, MONAI)
  want = _brute_force_voxel_scores(pred, label, spacing, 1.0)
  for key in ('hd95', 'assd', 'nsd'):
    assert got[key] == pytest.approx(want[key], rel=1e-9), key


def test_conventions_differ_where_the_issue_says():
  # A missed 3x3x3 piece 9 voxels from a 10x10x10 cube: 5 % of the
  # label's surface voxels, 2.6 % of both surfaces. Pooling hides it, the
  # directed percentile sees it, and by area it weighs more still.
  pred = box((30, 30, 30), (5, 5, 5), (15, 15, 15))
  label = pred.copy()
  label[24:27, 24:27, 24:27] = True
  assert surface.hd95(pred, label, (1, 1, 1), MEDPY) == 0
  voxel = surface.hd95(pred, label, (1, 1, 1), MONAI)
  area = surface.hd95(pred, label, (1, 1, 1))
  assert 0 < voxel < area


def test_conventions_validate_and_describe():
  with pytest.raises(ValueError, match='Conventions.hd95'):
    surface.Conventions(hd95='mean')
  with pytest.raises(ValueError, match='hd95_penalty_mm'):
    surface.Conventions(hd95_penalty_mm=float('nan'))
  described = surface.Conventions().describe()
  assert described['hd95'] == 'max_directed'
  assert described['surface_weighting'] == 'area'
  assert described['hd95_penalty_mm'] == 373.13
  assert 'DeepMind' in described['references']['surface_weighting']
  legacy = surface.Conventions.legacy(2.0)
  assert (legacy.hd95, legacy.surface_weighting, legacy.nsd_tolerance_mm) == (
      'pooled', 'voxel', 2.0)


def test_per_case_report_keeps_legacy_numbers_unless_given_conventions():
  shape = (20, 20, 20)
  label = box(shape, (5, 5, 5), (12, 12, 12)).astype(np.uint8)
  pred = box(shape, (6, 5, 5), (14, 12, 12)).astype(np.uint8)
  old = surface.per_case_report(pred, label, (1, 1, 1), 2)
  assert old['empty_convention'] == surface.EMPTY_CONVENTION
  assert old['per_class']['class_1']['hd95'] == surface.hd95(
      pred, label, (1, 1, 1), surface.Conventions.legacy())
  new = surface.per_case_report(pred, label, (1, 1, 1), 2,
                                conventions=surface.Conventions())
  assert new['conventions']['surface_weighting'] == 'area'
  assert new['per_class']['class_1']['nsd'] == surface.normalized_surface_dice(
      pred, label, (1, 1, 1), 1.0)
  missing = surface.per_case_report(np.zeros(shape, np.uint8), label,
                                    (1, 1, 1), 2,
                                    conventions=surface.Conventions(
                                        empty='nan'))
  summary = surface.summarize_surface([new, missing])
  assert summary['class_1']['hd95_num_nan'] == 1
  assert summary['class_1']['hd95_num_infinite'] == 0

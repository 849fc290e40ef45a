"""The planner's rules against hand-derived values."""

import numpy as np
import pytest

from unet3d.planning import rules


def test_target_spacing_is_the_median_for_isotropic_data():
  spacings = [[1.0, 1.0, 1.2], [0.8, 0.8, 1.0], [1.2, 1.0, 1.4]]
  shapes = [[100, 100, 90]] * 3
  choice = rules.target_spacing(spacings, shapes)
  assert choice.value == pytest.approx([1.0, 1.0, 1.2])
  assert 'median' in choice.reason


def test_target_spacing_takes_the_10th_percentile_on_an_anisotropic_axis():
  # z: median 5 mm > 3 x 0.8 mm, and 30 voxels * 3 < 256: anisotropic.
  z = np.array([2.0, 3.0, 5.0, 5.0, 5.0, 6.0, 8.0])
  spacings = np.stack([np.full(7, 0.8), np.full(7, 0.8), z], axis=1)
  shapes = [[256, 256, 30]] * 7
  choice = rules.target_spacing(spacings, shapes)
  assert choice.value[:2] == pytest.approx([0.8, 0.8])
  assert choice.value[2] == pytest.approx(np.percentile(z, 10))
  assert 'anisotropic' in choice.reason


def test_anisotropic_percentile_never_goes_below_the_other_axes():
  z = np.array([0.5, 5.0, 5.0, 5.0, 5.0])  # 10th percentile 2.3 -> fine
  spacings = np.stack([np.full(5, 1.5), np.full(5, 1.5), z], axis=1)
  choice = rules.target_spacing(spacings, [[200, 200, 30]] * 5)
  assert choice.value[2] == pytest.approx(np.percentile(z, 10))
  z = np.array([0.4, 0.4, 6.0, 6.0, 6.0])  # 10th percentile 0.4 < 1.5
  spacings = np.stack([np.full(5, 1.5), np.full(5, 1.5), z], axis=1)
  choice = rules.target_spacing(spacings, [[200, 200, 30]] * 5)
  assert choice.value[2] == pytest.approx(1.5)


def test_anisotropic_spacing_pools_in_plane_first():
  # 0.8 x 0.8 x 3 mm: z is 3.75x coarser, so level 0 convolves and pools
  # in-plane only; after one pool the spacings (1.6, 1.6, 3) are within 2x.
  topo = rules.topology([256, 256, 40], [0.8, 0.8, 3.0], max_levels=6)
  assert topo.kernel_sizes[0] == (3, 3, 1)
  assert topo.pool_sizes[0] == (2, 2, 1)
  assert topo.kernel_sizes[1] == (3, 3, 3)
  # sizes 128,128,40 -> 64,64,20 -> 32,32,10 -> 16,16,5: z (5 < 8) stops.
  assert topo.pool_sizes[1:] == ((2, 2, 2),) * 3 + ((2, 2, 1),)
  assert topo.levels == 6
  assert topo.strides == (32, 32, 8)  # 2^5 in-plane, 2^3 in z


def test_isotropic_pools_every_axis_until_feature_maps_reach_4_voxels():
  topo = rules.topology([64, 64, 64], [1.0, 1.0, 1.0], max_levels=8)
  # 64 -> 32 -> 16 -> 8 -> 4: four pools, five levels, all kernels 3.
  assert topo.pool_sizes == ((2, 2, 2),) * 4
  assert topo.kernel_sizes == ((3, 3, 3),) * 5
  assert rules.topology([64, 64, 64], [1.0] * 3, max_levels=3).levels == 3


def test_a_thin_axis_stops_pooling_and_keeps_its_kernel_3():
  # [72, 24, 64]: after 2 pools axis 1 has 6 voxels (< 8) and stops; the
  # others pool on. Its kernel stays 3 although its spacing is now finer.
  topo = rules.topology([72, 24, 64], [1.0, 1.0, 1.0], max_levels=5)
  assert topo.pool_sizes == ((2, 2, 2), (2, 2, 2), (2, 1, 2), (2, 1, 2))
  assert all(k == (3, 3, 3) for k in topo.kernel_sizes)


def test_fit_topology_rounds_the_patch_down_to_its_strides():
  patch, topo = rules.fit_topology([130, 45, 127], [1.0] * 3, max_levels=5)
  assert all(p % s == 0 for p, s in zip(patch, topo.strides))
  assert patch == [128, 40, 112]
  assert topo == rules.topology(patch, [1.0] * 3, 5)


@pytest.mark.parametrize('modality, fractions, scheme, mask', [
    ('CT', [1.0], 'ct', False),
    ('ct_abdomen', [0.4], 'ct', False),
    ('T1', [0.5, 0.6, 0.9], 'zscore', True),   # median 0.6 < 0.75
    ('FLAIR', [0.8, 0.9], 'zscore', False),
    ('DCT', [1.0], 'zscore', False),           # not the word CT
    ('CTA', [1.0], 'zscore', False),
    ('non-contrast CT', [1.0], 'ct', False),
])
def test_channel_normalisation(modality, fractions, scheme, mask):
  rule = rules.channel_normalisation(
      modality, fractions, {'percentile_00_5': -1000.0,
                            'percentile_99_5': 400.0})
  assert (rule.scheme, rule.nonzero_mask) == (scheme, mask)
  if scheme == 'ct':
    assert '[-1000, 400]' in rule.reason


def test_applied_normalisation_is_compared_scheme_and_mask():
  mri = rules.ChannelRule('zscore', True, '')
  assert rules.applied_matches(mri, {'scheme': 'zscore',
                                     'within_nonzero_mask': True})
  assert not rules.applied_matches(mri, {'scheme': 'zscore',
                                         'within_nonzero_mask': False})
  assert not rules.applied_matches(mri, {'scheme': 'none'})
  ct = rules.ChannelRule('ct', False, '')
  assert rules.applied_matches(ct, {'scheme': 'ct', 'clip': [0, 1]})


def test_lateral_pairs_from_label_names():
  labels = {'0': 'background', '1': 'kidney_L', '2': 'kidney_R',
            '3': 'Left-Hippocampus', '4': 'Right-Hippocampus',
            '5': 'lh.cortex', '6': 'rh.cortex', '7': 'LeftLung',
            '8': 'RightLung', '9': 'liver', '10': 'L1_vertebra',
            '11': 'lesion', '12': 'eye_left'}
  # eye_left has no right partner; L1 and lesion are not side words.
  assert rules.lateral_pairs(labels) == [(1, 2), (3, 4), (5, 6), (7, 8)]


def test_lateral_pairs_need_exactly_one_of_each_side():
  labels = {'1': 'ear_L', '2': 'ear_R', '3': 'left ear'}
  assert rules.lateral_pairs(labels) == []
  assert rules.lateral_pairs({'0': 'left', '1': 'right'}, first_class=0) == []


def test_lateral_axis_from_centroids_is_the_axis_that_separates_pairs():
  cases = [{'1': [10.0, 30.0, 5.0], '2': [12.0, 30.5, 40.0]},
           {'1': [11.0, 31.0, 6.0], '2': [10.0, 29.0, 42.0]},
           {'1': [11.0, 31.0, 6.0]}]  # no partner: ignored
  iso = [[1.0, 1.0, 1.0]] * 3
  assert rules.lateral_axis_from_centroids(cases, iso, [(1, 2)]) == 2
  assert rules.lateral_axis_from_centroids([{'1': [0, 0, 0]}], iso[:1],
                                           [(1, 2)]) is None


def test_lateral_axis_compares_millimetres_not_voxels():
  # 20 voxels apart on axis 0 at 0.5 mm (10 mm), 6 on axis 2 at 3 mm (18 mm).
  case = {'1': [10.0, 30.0, 10.0], '2': [30.0, 30.0, 16.0]}
  assert rules.lateral_axis_from_centroids([case], [[1.0, 1.0, 1.0]],
                                           [(1, 2)]) == 0
  assert rules.lateral_axis_from_centroids([case], [[0.5, 0.5, 3.0]],
                                           [(1, 2)]) == 2


@pytest.mark.parametrize('patch_voxels, dataset_voxels, records, expected', [
    (1000, 10**6, 100, 50),   # 5% of a million voxels / 1000 per patch
    (1000, 10**6, 20, 20),    # capped by the training records
    (10**5, 10**6, 100, 2),   # 5% allows 0: nnU-Net's minimum of 2
    (10**5, 10**6, 1, 1),     # one record: batch 1
])
def test_batch_cap(patch_voxels, dataset_voxels, records, expected):
  assert rules.batch_cap(patch_voxels, dataset_voxels, records) == expected

"""The tf.data pipeline: patch sampling, sharding, determinism, formats."""

import json

import numpy as np
import pytest
import tensorflow as tf

from unet3d import config
from unet3d.input import pipeline
from unet3d.input import schema

NO_AUG = {'enabled': False}


def _volume(case_id, image, label, spacing=(1.0, 1.0, 1.0)):
  return schema.Volume(image=image.astype(np.float32), label=label,
                       spacing=np.array(spacing), affine=np.eye(4),
                       case_id=case_id)


def _write(path, volumes, compressed=True):
  schema.write_records(str(path), (schema.encode_volume(v) for v in volumes),
                       compressed)


def _cfg(pattern, size=(16, 16, 16), **override):
  values = {'training_file_pattern': str(pattern),
            'eval_file_pattern': str(pattern),
            'input_image_size': list(size), 'num_classes': 3, 'depth': 2,
            'train_batch_size': 1, 'eval_batch_size': 1,
            'use_index_label_in_train': True}
  data = override.pop('data', {})
  values['data'] = {'augmentation': NO_AUG, 'cache': 'none', **data}
  values.update(override)
  return config.build_config(None, values)


def _take(dataset, n):
  return [tuple(t.numpy() for t in batch) for batch in dataset.take(n)]


def test_foreground_oversampling_rate_matches_the_configured_share(tmp_path):
  # One 32^3 volume with a 4^3 foreground cube; 16^3 patches. A random crop's
  # centre voxel (start + 8) is foreground with probability q (counted
  # below); an oversampled crop is centred on the cube (never clipped here).
  label = np.zeros([32] * 3, np.int32)
  label[14:18, 14:18, 14:18] = 1
  _write(tmp_path / 'a.tfrecord', [_volume('a', label[..., None], label)])
  centres = np.arange(17) + 8
  hit = ((centres >= 14) & (centres < 18)).mean()
  q = hit ** 3
  p = 0.33
  n = 1500
  cfg = _cfg(tmp_path / 'a.tfrecord', seed=3,
             data={'foreground_oversample': p, 'shuffle_buffer': 1})
  dataset = pipeline.build_dataset(cfg, 'train').unbatch().batch(n)
  _, labels = next(iter(dataset))
  rate = float(np.mean(labels.numpy()[:, 8, 8, 8] == 1))
  expected = p + (1 - p) * q
  assert abs(rate - expected) < 4 * np.sqrt(expected * (1 - expected) / n)


def test_oversampling_picks_among_present_classes_only(tmp_path):
  # Class 2 is absent: oversampled patches must centre on class 1.
  label = np.zeros([24] * 3, np.int32)
  label[3:5, 3:5, 3:5] = 1
  _write(tmp_path / 'a.tfrecord', [_volume('a', label[..., None], label)])
  cfg = _cfg(tmp_path / 'a.tfrecord', size=(8, 8, 8), seed=0,
             data={'foreground_oversample': 1.0})
  _, labels = next(iter(pipeline.build_dataset(cfg, 'train').unbatch()
                        .batch(50)))
  # Near the border the crop is clipped, so the cube is in the patch though
  # not always at its centre.
  assert np.all(labels.numpy().reshape(50, -1).max(axis=1) == 1)


def test_small_volumes_are_padded_to_the_patch(tmp_path):
  image = np.arange(6 ** 3, dtype=np.float32).reshape([6] * 3)
  label = np.ones([6] * 3, np.int32)
  _write(tmp_path / 'a.tfrecord', [_volume('a', image[..., None], label)])
  cfg = _cfg(tmp_path / 'a.tfrecord', size=(8, 8, 8), seed=0,
             data={'foreground_oversample': 0.0})
  images, labels = _take(pipeline.build_dataset(cfg, 'train'), 1)[0]
  assert images.shape == (1, 8, 8, 8, 1)
  # Symmetric padding by 1 on each side: the volume sits at [1:7].
  np.testing.assert_array_equal(images[0, 1:7, 1:7, 1:7, 0], image)
  assert labels[0].sum() == 6 ** 3 and labels[0, 0].sum() == 0


def test_eval_centre_crop_and_pad(tmp_path):
  image = np.random.default_rng(0).normal(size=(20, 12, 16)).astype(np.float32)
  label = (image > 0).astype(np.int32)
  _write(tmp_path / 'a.tfrecord', [_volume('a', image[..., None], label)])
  cfg = _cfg(tmp_path / 'a.tfrecord',
             data={'eval_image_size': [16, 16, 16]})
  images, labels = _take(pipeline.build_dataset(cfg, 'eval'), 1)[0]
  expected = np.pad(image[2:18], [[0, 0], [2, 2], [0, 0]])
  np.testing.assert_array_equal(images[0, ..., 0], expected)
  np.testing.assert_array_equal(labels[0], (expected > 0).astype(np.int32))


def _constant_cases(tmp_path, num_files, per_file):
  """Cases whose image is the constant case number."""
  number = 0
  for f in range(num_files):
    volumes = []
    for _ in range(per_file):
      volumes.append(_volume(f'case{number}', np.full([8, 8, 8, 1], number),
                             np.zeros([8] * 3, np.int32)))
      number += 1
    _write(tmp_path / f'shard-{f}.tfrecord', volumes)
  return number


@pytest.mark.parametrize('num_files', [4, 1])
def test_sharding_is_disjoint_and_complete_across_two_pipelines(tmp_path,
                                                                 num_files):
  total = _constant_cases(tmp_path, num_files, 8 // num_files)
  cfg = _cfg(tmp_path / 'shard-*', size=(8, 8, 8), eval_batch_size=2)
  seen = []
  for pipeline_id in range(2):
    context = tf.distribute.InputContext(num_input_pipelines=2,
                                         input_pipeline_id=pipeline_id,
                                         num_replicas_in_sync=2)
    dataset = pipeline.build_dataset(cfg, 'eval', input_context=context)
    seen.append({int(case) for images, _ in _take(dataset, 100)
                 for case in images[:, 0, 0, 0, 0]})
  assert not seen[0] & seen[1]
  assert seen[0] | seen[1] == set(range(total))


def test_per_replica_batch_size_comes_from_the_input_context(tmp_path):
  _constant_cases(tmp_path, 2, 2)
  cfg = _cfg(tmp_path / 'shard-*', size=(8, 8, 8), train_batch_size=4)
  context = tf.distribute.InputContext(num_input_pipelines=1,
                                       input_pipeline_id=0,
                                       num_replicas_in_sync=2)
  images, _ = _take(pipeline.build_dataset(cfg, 'train', context), 1)[0]
  assert images.shape[0] == 2
  odd = _cfg(tmp_path / 'shard-*', size=(8, 8, 8), train_batch_size=3)
  with pytest.raises(config.ConfigError, match='train_batch_size: 3 is not '
                     'divisible by the 2 replicas'):
    pipeline.build_dataset(odd, 'train', context)


def _demo_like_records(tmp_path):
  rng = np.random.default_rng(0)
  volumes = []
  for i in range(3):
    label = np.zeros([24] * 3, np.int32)
    label[4:12, 6:14, 5:15] = 1
    label[14:20, 14:20, 14:20] = 2
    image = label + rng.normal(0, 0.3, label.shape)
    volumes.append(_volume(f'c{i}', image[..., None], label))
  _write(tmp_path / 'r.tfrecord', volumes)
  return tmp_path / 'r.tfrecord'


ALL_AUG = {'affine_prob': 0.5, 'elastic_prob': 0.3, 'rot90_prob': 0.5,
           'noise_prob': 0.5, 'blur_prob': 0.5, 'brightness_prob': 0.5,
           'contrast_prob': 0.5, 'gamma_prob': 0.5,
           'low_resolution_prob': 0.5, 'elastic_magnitude': 3.0,
           'elastic_sigma': 3.0}


def test_seeded_deterministic_pipeline_repeats_its_batches(tmp_path):
  pattern = _demo_like_records(tmp_path)
  runs = []
  for _ in range(2):
    cfg = _cfg(pattern, seed=7, deterministic=True,
               data={'augmentation': ALL_AUG, 'cache': 'memory'})
    runs.append(_take(pipeline.build_dataset(cfg, 'train'), 6))
  for (image_a, label_a), (image_b, label_b) in zip(*runs):
    np.testing.assert_array_equal(image_a, image_b)
    np.testing.assert_array_equal(label_a, label_b)
  other = _cfg(pattern, seed=8, deterministic=True,
               data={'augmentation': ALL_AUG})
  different = _take(pipeline.build_dataset(other, 'train'), 6)
  assert any(not np.array_equal(a[0], b[0])
             for a, b in zip(runs[0], different))


def test_all_augmentations_keep_labels_integral_and_shapes(tmp_path):
  pattern = _demo_like_records(tmp_path)
  cfg = _cfg(pattern, seed=1, train_batch_size=2,
             data={'augmentation': ALL_AUG})
  for images, labels in _take(pipeline.build_dataset(cfg, 'train'), 8):
    assert images.shape == (2, 16, 16, 16, 1) and images.dtype == np.float32
    assert labels.shape == (2, 16, 16, 16)
    assert set(np.unique(labels)) <= {0, 1, 2}
    assert np.all(np.isfinite(images))


def test_one_hot_labels_when_index_labels_are_off(tmp_path):
  pattern = _demo_like_records(tmp_path)
  common = {'seed': 4, 'deterministic': True}
  one_hot_cfg = _cfg(pattern, use_index_label_in_train=False,
                     label_dtype='float32', **common)
  index_cfg = _cfg(pattern, **common)
  one_hot = _take(pipeline.build_dataset(one_hot_cfg, 'train'), 3)
  index = _take(pipeline.build_dataset(index_cfg, 'train'), 3)
  for (_, hot), (_, idx) in zip(one_hot, index):
    assert hot.shape == (1, 16, 16, 16, 3) and hot.dtype == np.float32
    np.testing.assert_array_equal(hot, np.eye(3, dtype=np.float32)[idx])


def test_uncompressed_records_and_disk_cache(tmp_path):
  image = np.arange(16 ** 3, dtype=np.float32).reshape([16] * 3)
  label = np.zeros([16] * 3, np.int32)
  _write(tmp_path / 'u.tfrecord', [_volume('u', image[..., None], label)],
         compressed=False)
  cfg = _cfg(tmp_path / 'u.tfrecord', compressed_input=False,
             data={'cache': str(tmp_path / 'cache')})
  # Whole passes: tf.data discards a file cache that was not read to the end.
  for _ in range(2):  # the second pass reads the cache
    (images, _), = [tuple(t.numpy() for t in batch)
                    for batch in pipeline.build_dataset(cfg, 'eval')]
    np.testing.assert_array_equal(images[0, ..., 0], image)
  assert list(tmp_path.glob('cache-eval*'))


def test_model_garden_shards_are_read(tmp_path):
  rng = np.random.default_rng(0)
  image = rng.normal(size=(16, 16, 16, 1)).astype(np.float32)
  classes = rng.integers(0, 3, size=(16, 16, 16))
  one_hot = np.eye(3, dtype=np.float32)[classes]
  schema.write_records(str(tmp_path / 'mg.tfrecord'),
                       [schema.encode_model_garden_example(image, one_hot)],
                       compressed=True)
  cfg = _cfg(tmp_path / 'mg.tfrecord', data={'record_format': 'model_garden'})
  images, labels = _take(pipeline.build_dataset(cfg, 'eval'), 1)[0]
  np.testing.assert_array_equal(images[0], image)
  np.testing.assert_array_equal(labels[0], classes)


def test_multi_label_masks_for_sigmoid_models(tmp_path):
  masks = np.zeros([16, 16, 16, 2], np.uint8)
  masks[2:10, 2:10, 2:10, 0] = 1
  masks[4:6, 4:6, 4:6, 1] = 1
  _write(tmp_path / 'm.tfrecord',
         [_volume('m', masks[..., :1].astype(np.float32), masks)])
  cfg = _cfg(tmp_path / 'm.tfrecord', size=(8, 8, 8), num_classes=2, seed=0,
             model={'output_activation': 'sigmoid'},
             data={'foreground_oversample': 1.0})
  images, labels = _take(pipeline.build_dataset(cfg, 'train'), 1)[0]
  assert labels.shape == (1, 8, 8, 8, 2)
  np.testing.assert_array_equal(labels[0, ..., 0], images[0, ..., 0])
  assert labels[0, ..., 0].sum() > 0


def test_split_file_selects_the_fold(tmp_path):
  _constant_cases(tmp_path, 1, 4)
  split = tmp_path / 'splits.json'
  split.write_text(json.dumps({'folds': [
      {'train': ['case0', 'case1'], 'val': ['case2']},
      {'train': ['case2', 'case3'], 'val': ['case0']}]}))
  cfg = _cfg(tmp_path / 'shard-*', size=(8, 8, 8),
             data={'split_file': str(split), 'fold': 1})
  val = {int(i[0, 0, 0, 0, 0]) for i, _ in
         _take(pipeline.build_dataset(cfg, 'eval'), 10)}
  assert val == {0}
  train = {int(i[0, 0, 0, 0, 0]) for i, _ in
           _take(pipeline.build_dataset(cfg, 'train'), 20)}
  assert train == {2, 3}
  bad = _cfg(tmp_path / 'shard-*', size=(8, 8, 8),
             data={'split_file': str(split), 'fold': 5})
  with pytest.raises(config.ConfigError, match='split_file: .*no fold 5'):
    pipeline.build_dataset(bad, 'eval')


def test_a_fold_of_one_case_trains_at_batch_one_and_an_empty_fold_fails(
    tmp_path):
  """The MNI152 walkthrough trains on one hemisphere at batch 1; a split
  that leaves no record fails in one line instead of hanging."""
  _constant_cases(tmp_path, 1, 2)
  split = tmp_path / 'splits.json'
  split.write_text(json.dumps({'folds': [
      {'train': ['case1'], 'val': ['case0']},
      {'train': ['nobody'], 'val': ['case0']}]}))
  cfg = _cfg(tmp_path / 'shard-*', size=(8, 8, 8),
             data={'split_file': str(split), 'fold': 0})
  batches = _take(pipeline.build_dataset(cfg, 'train'), 3)
  assert all(images.shape[0] == 1 and np.all(images == 1)
             for images, _ in batches)
  empty = _cfg(tmp_path / 'shard-*', size=(8, 8, 8),
               data={'split_file': str(split), 'fold': 1})
  with pytest.raises(config.ConfigError,
                     match=r'data.split_file: no training case of fold 1 in '
                     r'.*splits.json is in .*shard-\*'):
    pipeline.build_dataset(empty, 'train')
  split.write_text('{"folds": [')
  with pytest.raises(config.ConfigError,
                     match=r'data.split_file: .*splits.json is not valid JSON'):
    pipeline.build_dataset(cfg, 'train')


def test_split_file_keeps_the_parts_of_a_case(tmp_path):
  """Records `<case>#<part>` (LiTS crops, 2D slices) follow their case's
  fold side."""
  image = np.zeros((8, 8, 8, 1), np.float32)
  label = np.zeros((8, 8, 8), np.uint8)
  ids = ['a', 'a#aug00', 'a#aug01', 'b', 'b#z0001', 'c']
  _write(tmp_path / 'r.tfrecord', [_volume(i, image, label) for i in ids])
  split = tmp_path / 'splits.json'
  split.write_text(json.dumps({'folds': [{'train': ['a', 'c'],
                                          'val': ['b']}]}))
  cfg = _cfg(tmp_path / 'r.tfrecord', data={'split_file': str(split)})
  got = [ex['case_id'].numpy().decode() for ex in
         pipeline.build_volume_dataset(cfg, str(tmp_path / 'r.tfrecord'))]
  assert got == ['b', 'b#z0001']


# ----------------------------------------------------------------------------
# Records that break the contract stop with one line naming file and case
# ----------------------------------------------------------------------------


def _read_error(cfg, mode='eval'):
  """describe_read_error's line for the error that reading mode's data
  raises."""
  with pytest.raises(tf.errors.OpError) as info:
    for _ in pipeline.build_dataset(cfg, mode):
      pass
  return pipeline.describe_read_error(cfg, info.value)


def _labelled(value, dtype=np.uint8, shape=(16, 16, 12)):
  label = np.zeros(shape, dtype)
  label[2:4, 2:4, 2:4] = 1
  label[5, 5, 5] = value
  return label


@pytest.mark.parametrize('mode', ['train', 'eval'])
@pytest.mark.parametrize('value,dtype', [(3, np.uint8), (255, np.uint8),
                                         (-1, np.int16), (70000, np.int32)])
def test_label_values_outside_the_classes_name_record_and_range(
    tmp_path, mode, value, dtype):
  path = tmp_path / 'a.tfrecord'
  label = _labelled(value, dtype)
  _write(path, [_volume('good', label[..., None] * 0 + 1.0, label * 0),
                _volume('case_7', label[..., None].astype(np.float32),
                        label)])
  message = _read_error(_cfg(path, data={'shuffle_buffer': 1}), mode)
  assert message == (f'{path}: record case case_7: label value {value} (1 '
                     'voxel(s)); expected class indices in [0, 3) '
                     '(num_classes=3)')


def test_the_ignore_label_is_allowed(tmp_path):
  path = tmp_path / 'a.tfrecord'
  label = _labelled(255)
  _write(path, [_volume('a', label[..., None], label)])
  cfg = _cfg(path, loss_options={'ignore_label': 255})
  crops = list(pipeline.build_dataset(cfg, 'eval'))
  assert crops[0][1].numpy().max() == 255
  cfg = _cfg(path, loss_options={'ignore_label': 254})
  assert 'label value 255' in _read_error(cfg)


@pytest.mark.parametrize('value', [2, 255])
def test_sigmoid_masks_must_be_zero_or_one(tmp_path, value):
  path = tmp_path / 'a.tfrecord'
  masks = np.zeros((16, 16, 12, 3), np.uint8)
  masks[1, 1, 1, 2] = value
  _write(path, [_volume('m', masks[..., :1].astype(np.float32), masks)])
  cfg = _cfg(path, model={'output_activation': 'sigmoid'})
  assert _read_error(cfg) == (f'{path}: record case m: label value {value} '
                              '(1 voxel(s)); expected masks of 0 or 1 '
                              '(sigmoid, multi-label)')


@pytest.mark.parametrize('channels', [2, 5])
def test_a_record_with_other_channels_names_record_and_count(tmp_path,
                                                             channels):
  path = tmp_path / 'a.tfrecord'
  label = _labelled(1)
  _write(path, [_volume('c', np.zeros((16, 16, 12, channels)), label)])
  assert _read_error(_cfg(path), 'train') == (
      f'{path}: record case c: image shape [16 16 12 {channels}] has '
      f'{channels} channel(s); expected num_channels=1')


@pytest.mark.parametrize('label_shape', [(16, 12, 16), (12, 16, 16),
                                         (16, 16, 11)])
def test_a_permuted_or_mismatched_label_shape_names_both_shapes(
    tmp_path, label_shape):
  path = tmp_path / 'a.tfrecord'
  record = schema.encode_volume(_volume('p', np.zeros((16, 16, 12, 1)),
                                        _labelled(1)))
  example = tf.train.Example.FromString(record)
  shape = example.features.feature[schema.KEY_LABEL_SHAPE].int64_list
  shape.value[:] = label_shape
  schema.write_records(str(path), [example.SerializeToString()])
  found = ' '.join(map(str, label_shape))
  assert _read_error(_cfg(path)) == (
      f'{path}: record case p: label shape [{found}] ({16 * 16 * 12} values)'
      ' does not match image shape [16 16 12 1]; expected [16 16 12]')


@pytest.mark.parametrize('image_shape', [(2**16, 2**16, 2, 1),
                                         (16, 12, 16, 2), (16, 16, 12)])
def test_an_image_shape_that_does_not_hold_the_bytes_is_named(
    tmp_path, image_shape):
  path = tmp_path / 'a.tfrecord'
  record = schema.encode_volume(_volume('s', np.zeros((16, 16, 12, 1)),
                                        _labelled(1)))
  example = tf.train.Example.FromString(record)
  example.features.feature[schema.KEY_IMAGE_SHAPE].int64_list.value[:] = (
      image_shape)
  schema.write_records(str(path), [example.SerializeToString()])
  shown = ' '.join(map(str, image_shape))
  # Sizes in int64: 2**33 voxels is not wrapped into a small number.
  assert _read_error(_cfg(path)) == (
      f'{path}: record case s: image/shape [{shown}] (expected rank 4, '
      '[*spatial, C]) does not hold the 3072 values of image/encoded')


@pytest.mark.parametrize('value', [3, 200])
def test_model_garden_label_values_are_checked(tmp_path, value):
  path = tmp_path / 'mg.tfrecord'
  label = np.zeros((16, 16, 16), np.float32)
  label[3, 3, 3] = value
  schema.write_records(str(path), [schema.encode_model_garden_example(
      np.zeros((16, 16, 16, 1)), label)])
  cfg = _cfg(path, data={'record_format': 'model_garden'})
  assert _read_error(cfg) == (
      f'{path}: label value {value} '
      '(1 voxel(s)); expected class indices in [0, 3) (num_classes=3)')


def test_model_garden_image_size_is_checked(tmp_path):
  path = tmp_path / 'mg.tfrecord'
  schema.write_records(str(path), [schema.encode_model_garden_example(
      np.zeros((16, 16, 12, 1)), np.zeros((16, 16, 16)))])
  cfg = _cfg(path, data={'record_format': 'model_garden'})
  assert _read_error(cfg) == (
      f'{path}: image/ct_image holds 3072 float32 values; expected 4096 for '
      'input_image_size [16, 16, 16] x num_channels=1')

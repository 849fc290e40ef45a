"""Tests for unet3d/input/schema.py: the TFRecord round trip."""

import numpy as np
import pytest
import tensorflow as tf

from unet3d.input import schema


def _volume(label_shape=None, dtype=np.float32):
  rng = np.random.default_rng(0)
  image = rng.normal(size=(5, 6, 7, 2)).astype(dtype)
  label = None
  if label_shape is not None:
    label = rng.integers(0, 4, size=label_shape).astype(np.uint8)
  affine = np.array([[0, 0, -1.5, 10], [0.8, 0, 0, -3], [0, 0.9, 0, 7],
                     [0, 0, 0, 1]], np.float64)
  return schema.Volume(image=image, label=label,
                       spacing=np.array([0.8, 0.9, 1.5]), affine=affine,
                       case_id='case_007', channel_mean=np.array([3.0, 4.0]),
                       channel_std=np.array([2.0, 5.0]))


def test_numpy_round_trip_keeps_every_field(tmp_path):
  volume = _volume((5, 6, 7))
  path = str(tmp_path / 'shard.tfrecord')
  assert schema.write_records(path, [schema.encode_volume(volume)]) == 1
  (record,) = schema.read_records(path)
  back = schema.decode_volume(record)
  np.testing.assert_array_equal(back.image, volume.image)
  np.testing.assert_array_equal(back.label, volume.label)
  np.testing.assert_allclose(back.spacing, volume.spacing)
  np.testing.assert_allclose(back.affine, volume.affine)
  np.testing.assert_allclose(back.channel_mean, [3, 4])
  np.testing.assert_allclose(back.channel_std, [2, 5])
  assert back.case_id == 'case_007'


@pytest.mark.parametrize('label_shape, multi_label', [
    ((5, 6, 7), False), ((5, 6, 7, 3), True)])
def test_in_graph_parse_matches_the_arrays(label_shape, multi_label):
  volume = _volume(label_shape, dtype=np.int16)
  parsed = schema.parse_example(tf.constant(schema.encode_volume(volume)),
                                multi_label=multi_label)
  np.testing.assert_array_equal(parsed['image'].numpy(), volume.image)
  assert parsed['image'].dtype == tf.float32
  np.testing.assert_array_equal(parsed['label'].numpy(), volume.label)
  assert bool(parsed['has_label'])
  np.testing.assert_allclose(parsed['affine'].numpy(), volume.affine,
                             rtol=1e-6)
  np.testing.assert_allclose(parsed['spacing'].numpy(), volume.spacing,
                             rtol=1e-6)
  assert parsed['case_id'].numpy() == b'case_007'


def test_unlabelled_volume():
  parsed = schema.parse_example(tf.constant(schema.encode_volume(_volume())))
  assert not bool(parsed['has_label'])
  assert schema.decode_volume(schema.encode_volume(_volume())).label is None


def test_model_garden_record_is_read_as_index_labels():
  rng = np.random.default_rng(1)
  image = rng.normal(size=(4, 4, 4, 1)).astype(np.float32)
  index = rng.integers(0, 3, size=(4, 4, 4))
  one_hot = np.eye(3, dtype=np.float32)[index]
  record = schema.encode_model_garden_example(image, one_hot)
  parsed = schema.parse_model_garden_example(
      tf.constant(record), image_size=[4, 4, 4], num_channels=1,
      num_classes=3)
  np.testing.assert_array_equal(parsed['image'].numpy(), image)
  np.testing.assert_array_equal(parsed['label'].numpy(), index)


@pytest.mark.parametrize('label_dtype', ['float32', 'int64'])
def test_model_garden_whole_ct_record_with_index_labels(label_dtype):
  # The Model Garden's convert_lits.py writes whole-CT crops
  # (crop_liver_region=False) without one-hot: label bytes are the indices.
  rng = np.random.default_rng(2)
  image = rng.normal(size=(8, 8, 8, 1)).astype(np.float32)
  index = rng.integers(0, 3, size=(8, 8, 8))
  record = schema.encode_model_garden_example(image, index.astype(label_dtype),
                                              label_dtype)
  parsed = schema.parse_model_garden_example(
      tf.constant(record), image_size=[8, 8, 8], num_channels=1,
      num_classes=3, label_dtype=label_dtype)
  np.testing.assert_array_equal(parsed['label'].numpy(), index)


def test_model_garden_record_of_another_size_is_refused():
  image = np.zeros((8, 8, 8, 1), np.float32)
  record = schema.encode_model_garden_example(
      image, np.zeros((8, 8, 8), np.float32))
  with pytest.raises(tf.errors.InvalidArgumentError,
                     match='neither 64 class indices'):
    schema.parse_model_garden_example(
        tf.constant(record), image_size=[4, 4, 4], num_channels=8,
        num_classes=3)


def test_bad_volumes_are_rejected_with_the_case_named():
  volume = _volume((5, 6, 8))
  with pytest.raises(ValueError, match='case case_007: label shape'):
    schema.encode_volume(volume)
  volume = _volume((5, 6, 7))
  volume.spacing = np.array([1.0, 1.0])
  with pytest.raises(ValueError, match='case case_007: spacing has 2 values'):
    schema.encode_volume(volume)


def test_failed_write_leaves_no_shard(tmp_path):
  path = str(tmp_path / 'shard.tfrecord')

  def records():
    yield schema.encode_volume(_volume((5, 6, 7)))
    raise RuntimeError('interrupted')

  with pytest.raises(RuntimeError):
    schema.write_records(path, records())
  assert list(tmp_path.iterdir()) == []

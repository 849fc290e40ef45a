"""The one TFRecord format of unet3d. Writers and readers both import this.

Each `tf.train.Example` holds one whole preprocessed volume (or a crop of one).
Arrays keep nibabel's voxel-axis order (i, j, k): `spacing[a]` is the size in
millimetres of one voxel along array axis `a`, and `affine` maps (i, j, k, 1)
to world (RAS+) millimetres, exactly as in the NIfTI it came from.

Schema version 1 keys:

| key                    | type          | content                                   |
|------------------------|---------------|-------------------------------------------|
| `schema_version`       | int64 [1]     | 1                                         |
| `case_id`              | bytes [1]     | a unique case name                        |
| `image/encoded`        | bytes [1]     | raw little-endian image bytes, C order    |
| `image/dtype`          | bytes [1]     | numpy dtype name, e.g. `float32`          |
| `image/shape`          | int64 [R+1]   | [D, H, W, C] (or [H, W, C] in 2D)         |
| `label/encoded`        | bytes [0/1]   | raw label bytes, C order                  |
| `label/dtype`          | bytes [0/1]   | e.g. `uint8`                              |
| `label/shape`          | int64 [R/R+1] | [D, H, W] class indices, or [D, H, W, K]  |
|                        |               | binary masks (multi-label); empty when    |
|                        |               | unlabelled                                |
| `spacing`              | float [R]     | voxel size in mm per array axis           |
| `affine`               | float [16]    | 4x4 voxel-to-world matrix, row-major      |
| `image/channel_mean`   | float [C]     | per-channel mean before normalisation     |
| `image/channel_std`    | float [C]     | per-channel std before normalisation      |

The TF Model Garden UNet3D format (`image/ct_image`, `image/label`) is read by
`parse_model_garden_example`.

The module is one file of a little over 450 lines on purpose: the record
format is one fact that writers and readers share, and both parsers share
the same in-graph checks (sizes, channels, label values naming the record).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Optional

import numpy as np
import tensorflow as tf

from unet3d import fileio

SCHEMA_VERSION = 1

KEY_VERSION = 'schema_version'
KEY_CASE_ID = 'case_id'
KEY_IMAGE = 'image/encoded'
KEY_IMAGE_DTYPE = 'image/dtype'
KEY_IMAGE_SHAPE = 'image/shape'
KEY_LABEL = 'label/encoded'
KEY_LABEL_DTYPE = 'label/dtype'
KEY_LABEL_SHAPE = 'label/shape'
KEY_SPACING = 'spacing'
KEY_AFFINE = 'affine'
KEY_CHANNEL_MEAN = 'image/channel_mean'
KEY_CHANNEL_STD = 'image/channel_std'

# The Model Garden's LiTS records.
MG_KEY_IMAGE = 'image/ct_image'
MG_KEY_LABEL = 'image/label'

# Dtypes the parser can decode. Images are cast to float32, labels to int32.
IMAGE_DTYPES = ('float32', 'float16', 'int16', 'uint8', 'int32')
LABEL_DTYPES = ('uint8', 'int16', 'int32', 'int64', 'float32')


@dataclass
class Volume:
  """A case in memory: numpy arrays and their geometry.

  image: [D, H, W, C] (3D) or [H, W, C] (2D).
  label: [D, H, W] integer class indices, [D, H, W, K] binary masks for
    multi-label (sigmoid) targets, or None when unlabelled.
  spacing: voxel size in mm per spatial axis.
  affine: 4x4 voxel-to-world matrix.
  """
  image: np.ndarray
  label: Optional[np.ndarray]
  spacing: np.ndarray
  affine: np.ndarray
  case_id: str
  channel_mean: Optional[np.ndarray] = None
  channel_std: Optional[np.ndarray] = None


def _bytes(values):
  return tf.train.Feature(bytes_list=tf.train.BytesList(value=values))


def _ints(values):
  return tf.train.Feature(
      int64_list=tf.train.Int64List(value=[int(v) for v in values]))


def _floats(values):
  return tf.train.Feature(
      float_list=tf.train.FloatList(value=[float(v) for v in values]))


def encode_volume(volume: Volume) -> bytes:
  """Serialises a Volume to a `tf.train.Example` string."""
  image = np.ascontiguousarray(volume.image)
  if image.dtype.name not in IMAGE_DTYPES:
    raise ValueError(f'case {volume.case_id}: image dtype {image.dtype} is '
                     f'not one of {IMAGE_DTYPES}')
  spatial_rank = image.ndim - 1
  if spatial_rank not in (2, 3):
    raise ValueError(f'case {volume.case_id}: image must be [D,H,W,C] or '
                     f'[H,W,C], got shape {image.shape}')
  spacing = np.asarray(volume.spacing, np.float64).reshape(-1)
  if spacing.size != spatial_rank:
    raise ValueError(f'case {volume.case_id}: spacing has {spacing.size} '
                     f'values for {spatial_rank} spatial axes')
  affine = np.asarray(volume.affine, np.float64)
  if affine.shape != (4, 4):
    raise ValueError(f'case {volume.case_id}: affine must be 4x4, got '
                     f'{affine.shape}')
  channels = image.shape[-1]
  mean = (np.zeros(channels) if volume.channel_mean is None else
          np.asarray(volume.channel_mean).reshape(-1))
  std = (np.ones(channels) if volume.channel_std is None else
         np.asarray(volume.channel_std).reshape(-1))
  feature = {
      KEY_VERSION: _ints([SCHEMA_VERSION]),
      KEY_CASE_ID: _bytes([volume.case_id.encode()]),
      KEY_IMAGE: _bytes([image.astype(image.dtype.newbyteorder('<')).tobytes()]),
      KEY_IMAGE_DTYPE: _bytes([image.dtype.name.encode()]),
      KEY_IMAGE_SHAPE: _ints(image.shape),
      KEY_SPACING: _floats(spacing),
      KEY_AFFINE: _floats(affine.reshape(-1)),
      KEY_CHANNEL_MEAN: _floats(mean),
      KEY_CHANNEL_STD: _floats(std),
  }
  if volume.label is not None:
    label = np.ascontiguousarray(volume.label)
    if label.dtype.name not in LABEL_DTYPES:
      raise ValueError(f'case {volume.case_id}: label dtype {label.dtype} is '
                       f'not one of {LABEL_DTYPES}')
    if label.shape[:spatial_rank] != image.shape[:-1] or label.ndim not in (
        spatial_rank, spatial_rank + 1):
      raise ValueError(f'case {volume.case_id}: label shape {label.shape} does '
                       f'not match image shape {image.shape[:-1]}')
    feature[KEY_LABEL] = _bytes(
        [label.astype(label.dtype.newbyteorder('<')).tobytes()])
    feature[KEY_LABEL_DTYPE] = _bytes([label.dtype.name.encode()])
    feature[KEY_LABEL_SHAPE] = _ints(label.shape)
  else:
    feature[KEY_LABEL] = _bytes([])
    feature[KEY_LABEL_DTYPE] = _bytes([])
    feature[KEY_LABEL_SHAPE] = _ints([])
  example = tf.train.Example(features=tf.train.Features(feature=feature))
  return example.SerializeToString()


def decode_volume(serialized: bytes) -> Volume:
  """Host-side (numpy) inverse of `encode_volume`."""
  example = tf.train.Example.FromString(serialized)
  f = example.features.feature

  def one_bytes(key):
    values = f[key].bytes_list.value
    return values[0] if values else None

  version = f[KEY_VERSION].int64_list.value
  if not version or version[0] != SCHEMA_VERSION:
    raise ValueError(f'record has schema_version {list(version)}, expected '
                     f'{SCHEMA_VERSION}')
  image_shape = tuple(f[KEY_IMAGE_SHAPE].int64_list.value)
  image = np.frombuffer(one_bytes(KEY_IMAGE),
                        np.dtype(one_bytes(KEY_IMAGE_DTYPE).decode())
                        .newbyteorder('<')).reshape(image_shape)
  label = None
  label_bytes = one_bytes(KEY_LABEL)
  if label_bytes is not None:
    label_shape = tuple(f[KEY_LABEL_SHAPE].int64_list.value)
    label = np.frombuffer(label_bytes,
                          np.dtype(one_bytes(KEY_LABEL_DTYPE).decode())
                          .newbyteorder('<')).reshape(label_shape)
  return Volume(
      image=image.astype(image.dtype.newbyteorder('=')),
      label=None if label is None else label.astype(
          label.dtype.newbyteorder('=')),
      spacing=np.array(f[KEY_SPACING].float_list.value, np.float64),
      affine=np.array(f[KEY_AFFINE].float_list.value,
                      np.float64).reshape(4, 4),
      case_id=one_bytes(KEY_CASE_ID).decode(),
      channel_mean=np.array(f[KEY_CHANNEL_MEAN].float_list.value),
      channel_std=np.array(f[KEY_CHANNEL_STD].float_list.value))


_FEATURES = {
    KEY_VERSION: tf.io.FixedLenFeature([1], tf.int64),
    KEY_CASE_ID: tf.io.FixedLenFeature([], tf.string),
    KEY_IMAGE: tf.io.FixedLenFeature([], tf.string),
    KEY_IMAGE_DTYPE: tf.io.FixedLenFeature([], tf.string),
    KEY_IMAGE_SHAPE: tf.io.VarLenFeature(tf.int64),
    KEY_LABEL: tf.io.VarLenFeature(tf.string),
    KEY_LABEL_DTYPE: tf.io.VarLenFeature(tf.string),
    KEY_LABEL_SHAPE: tf.io.VarLenFeature(tf.int64),
    KEY_SPACING: tf.io.VarLenFeature(tf.float32),
    KEY_AFFINE: tf.io.FixedLenFeature([16], tf.float32),
    KEY_CHANNEL_MEAN: tf.io.VarLenFeature(tf.float32),
    KEY_CHANNEL_STD: tf.io.VarLenFeature(tf.float32),
}


def _decode_raw_by_name(data: tf.Tensor, dtype_name: tf.Tensor,
                        names: tuple[str, ...], out_dtype: tf.DType):
  """Decodes raw bytes whose dtype is only known at run time."""
  branches = []
  for name in names:
    tf_dtype = tf.as_dtype(name)
    branches.append((tf.equal(dtype_name, name),
                     lambda d=tf_dtype: tf.cast(
                         tf.io.decode_raw(data, d, little_endian=True),
                         out_dtype)))

  def _unsupported():
    check = tf.debugging.Assert(
        False, ['unsupported dtype in record:', dtype_name])
    with tf.control_dependencies([check]):
      return tf.zeros([0], out_dtype)

  return tf.case(branches, default=_unsupported, exclusive=True)


def _checked(tensor: tf.Tensor, ok: tf.Tensor, case_id: Optional[tf.Tensor],
             template: str, *values) -> tf.Tensor:
  """`tensor`, after an in-graph check that fails with InvalidArgumentError
  `assertion failed: [record case <case_id>: <template formatted with
  values>]` (without the case when None) when `ok` is false
  (`pipeline.describe_read_error` makes it one line naming the file)."""
  message = tf.strings.format(template, values, summarize=-1)
  if case_id is not None:
    message = tf.strings.join(['record case ', case_id, ': ', message])
  check = tf.debugging.Assert(ok, [message])
  with tf.control_dependencies([check]):
    return tf.identity(tensor)


def _label_values_ok(label: tf.Tensor, case_id: Optional[tf.Tensor],
                     num_classes: int,
                     multi_label: bool, ignore_label: Optional[int]
                    ) -> tf.Tensor:
  """label, checked: class indices in [0, num_classes) (or ignore_label),
  or 0/1 masks for multi_label."""
  high = 2 if multi_label else num_classes
  ok = tf.logical_and(label >= 0, label < high)
  if ignore_label is not None and not multi_label:
    ok = tf.logical_or(ok, tf.equal(label, ignore_label))
  bad = tf.boolean_mask(label, tf.logical_not(ok))
  first = tf.concat([bad, [0]], 0)[0]
  if multi_label:
    expected = 'masks of 0 or 1 (sigmoid, multi-label)'
  else:
    expected = (f'class indices in [0, {num_classes}) (num_classes='
                f'{num_classes}' + (f', loss_options.ignore_label='
                                    f'{ignore_label}' if ignore_label
                                    is not None else '') + ')')
  return _checked(label, tf.equal(tf.size(bad), 0),
                  case_id, 'label value {} ({} voxel(s)); expected ' + expected,
                  first, tf.size(bad))


def parse_example(serialized: tf.Tensor, spatial_dims: int = 3,
                  multi_label: bool = False,
                  num_channels: Optional[int] = None,
                  num_classes: Optional[int] = None,
                  ignore_label: Optional[int] = None
                 ) -> dict[str, tf.Tensor]:
  """Parses one serialised record in-graph.

  Every record is checked: image/shape against the image bytes, the label
  shape against the image's; with num_channels, the channel count; with
  num_classes, the label values (class indices in [0, num_classes) or
  ignore_label; 0/1 masks with num_classes channels for multi_label). A
  failed check is an InvalidArgumentError `record case <id>: ...` saying
  what was found and what was expected.

  Args:
    serialized: a scalar string tensor.
    spatial_dims: 3 for volumes, 2 for slices.
    multi_label: the labels are [D, H, W, K] binary masks, not indices.
    num_channels: the image channels the model expects (None: unchecked).
    num_classes: the classes (masks) the model predicts (None: unchecked).
    ignore_label: a label value allowed besides the classes.

  Returns a dict with:
    image: float32 [D, H, W, C]; label: int32 [D, H, W] (or [D, H, W, K] when
    multi_label; zero-sized when unlabelled); has_label: bool scalar;
    spacing: float32 [R] mm; affine: float32 [4, 4]; case_id: string scalar;
    channel_mean, channel_std: float32 [C].
  """
  label_rank = spatial_dims + (1 if multi_label else 0)
  f = tf.io.parse_single_example(serialized, _FEATURES)
  case_id = f[KEY_CASE_ID]
  # Sizes in int64: a shape over 2**31 voxels must not wrap in a check.
  image_shape = tf.sparse.to_dense(f[KEY_IMAGE_SHAPE])
  image = _decode_raw_by_name(f[KEY_IMAGE], f[KEY_IMAGE_DTYPE], IMAGE_DTYPES,
                              tf.float32)
  rank_ok = tf.equal(tf.size(image_shape), spatial_dims + 1)
  image = _checked(
      image, tf.logical_and(rank_ok, tf.equal(
          tf.reduce_prod(image_shape), tf.size(image, out_type=tf.int64))),
      case_id, f'image/shape {{}} (expected rank {spatial_dims + 1}, '
      '[*spatial, C]) does not hold the {} values of image/encoded',
      image_shape, tf.size(image, out_type=tf.int64))
  if num_channels is not None:
    image = _checked(image, tf.equal(image_shape[-1], num_channels),
                     case_id, 'image shape {} has {} channel(s); expected '
                     f'num_channels={num_channels}', image_shape,
                     image_shape[-1])
  image = tf.reshape(image, image_shape)
  image.set_shape([None] * (spatial_dims + 1))
  label_bytes = tf.sparse.to_dense(f[KEY_LABEL], default_value='')
  label_dtype = tf.sparse.to_dense(f[KEY_LABEL_DTYPE], default_value='')
  label_shape = tf.sparse.to_dense(f[KEY_LABEL_SHAPE])
  has_label = tf.size(label_bytes) > 0

  def _label():
    raw = _decode_raw_by_name(label_bytes[0], label_dtype[0], LABEL_DTYPES,
                              tf.int32)
    expected = image_shape[:spatial_dims]
    if multi_label and num_classes is not None:
      expected = tf.concat([expected, [num_classes]], 0)
    found = label_shape[:spatial_dims + (1 if multi_label and num_classes
                                         is not None else 0)]
    ok = tf.logical_and(
        tf.equal(tf.size(label_shape), label_rank),
        tf.logical_and(tf.reduce_all(tf.equal(found, expected)), tf.equal(
            tf.reduce_prod(label_shape), tf.size(raw, out_type=tf.int64))))
    raw = _checked(raw, ok, case_id, 'label shape {} ({} values) does not '
                   'match image shape {}; expected {}', label_shape,
                   tf.size(raw, out_type=tf.int64), image_shape, expected)
    if num_classes is not None:
      raw = _label_values_ok(raw, case_id, num_classes, multi_label,
                             ignore_label)
    return tf.reshape(raw, label_shape)

  def _no_label():
    return tf.zeros(tf.concat([[0], tf.ones([label_rank - 1], tf.int32)],
                              axis=0), tf.int32)

  label = tf.cond(has_label, _label, _no_label)
  label.set_shape([None] * label_rank)
  return {
      'image': image,
      'label': label,
      'has_label': has_label,
      'spacing': tf.sparse.to_dense(f[KEY_SPACING]),
      'affine': tf.reshape(f[KEY_AFFINE], [4, 4]),
      'case_id': case_id,
      'channel_mean': tf.sparse.to_dense(f[KEY_CHANNEL_MEAN]),
      'channel_std': tf.sparse.to_dense(f[KEY_CHANNEL_STD]),
  }


def parse_model_garden_example(serialized: tf.Tensor,
                               image_size: list[int],
                               num_channels: int,
                               num_classes: int,
                               label_dtype: str = 'float32'
                              ) -> dict[str, tf.Tensor]:
  """Parses a TF Model Garden UNet3D record into the same dict layout.

  Those records hold `image/ct_image` (float32 bytes, image_size + [C]) and
  `image/label` of `label_dtype`: one-hot (image_size + [num_classes], its
  liver-crop records) or class indices (image_size, its whole-CT records,
  written without one-hot to save space). The element count tells which;
  either way the label is returned as int32 class indices.
  """
  f = tf.io.parse_single_example(serialized, {
      MG_KEY_IMAGE: tf.io.FixedLenFeature([], tf.string),
      MG_KEY_LABEL: tf.io.FixedLenFeature([], tf.string),
  })
  image = tf.io.decode_raw(f[MG_KEY_IMAGE], tf.float32)
  expected = int(np.prod(image_size, dtype=np.int64)) * num_channels
  image = _checked(
      image, tf.equal(tf.size(image, out_type=tf.int64), expected), None,
      'image/ct_image holds {} float32 values; expected '
      f'{expected} for input_image_size {list(image_size)} x num_channels='
      f'{num_channels}', tf.size(image, out_type=tf.int64))
  image = tf.reshape(image, list(image_size) + [num_channels])
  label = tf.io.decode_raw(f[MG_KEY_LABEL], tf.as_dtype(label_dtype))
  voxels = int(np.prod(image_size, dtype=np.int64))
  count = tf.size(label)
  check = tf.debugging.Assert(
      tf.logical_or(tf.equal(count, voxels),
                    tf.equal(count, voxels * num_classes)),
      [f'image/label holds neither {voxels} class indices nor '
       f'{voxels}x{num_classes} one-hot values for input_image_size '
       f'{list(image_size)}; it holds', count])
  with tf.control_dependencies([check]):
    label = tf.cond(
        tf.equal(count, voxels),
        lambda: tf.cast(tf.round(tf.cast(label, tf.float32)), tf.int32),
        lambda: tf.argmax(tf.reshape(label, [-1, num_classes]), axis=-1,
                          output_type=tf.int32))
  label = _label_values_ok(tf.reshape(label, list(image_size)),
                           None, num_classes, False, None)
  rank = len(image_size)
  return {
      'image': image,
      'label': label,
      'has_label': tf.constant(True),
      'spacing': tf.ones([rank], tf.float32),
      'affine': tf.eye(4, dtype=tf.float32),
      'case_id': tf.constant(''),
      'channel_mean': tf.zeros([num_channels], tf.float32),
      'channel_std': tf.ones([num_channels], tf.float32),
  }


def encode_model_garden_example(image: np.ndarray, one_hot_label: np.ndarray,
                                label_dtype: str = 'float32') -> bytes:
  """Writes the Model Garden layout (for tests and for users' tools); the
  label may be one-hot [*size, K] or class indices [*size]."""
  feature = {
      MG_KEY_IMAGE: _bytes([np.asarray(image, np.float32).tobytes()]),
      MG_KEY_LABEL: _bytes([np.asarray(one_hot_label, label_dtype).tobytes()]),
  }
  return tf.train.Example(features=tf.train.Features(
      feature=feature)).SerializeToString()


def write_records(path: str, records: Iterable[bytes],
                  compressed: bool = True) -> int:
  """Writes serialised records to `path` atomically; returns the count.

  The shard is written under a temporary name and renamed when complete, so a
  crash never leaves a truncated shard behind under the final name.
  """
  parent = fileio.dirname(path)
  if parent:
    fileio.makedirs(parent)
  tmp = path + '.tmp-incomplete'
  options = tf.io.TFRecordOptions(compression_type='GZIP' if compressed else '')
  count = 0
  try:
    with tf.io.TFRecordWriter(tmp, options) as writer:
      for record in records:
        writer.write(record)
        count += 1
    fileio.gfile.rename(tmp, path, overwrite=True)
  finally:
    fileio.remove(tmp)
  return count


def read_records(path: str, compressed: bool = True) -> list[bytes]:
  """Reads every serialised record of one shard (host side)."""
  dataset = tf.data.TFRecordDataset(path,
                                    compression_type='GZIP' if compressed else '')
  return [r.numpy() for r in dataset]

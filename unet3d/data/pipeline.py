"""tf.data input pipelines: parse -> sample patch -> augment -> batch.

Training samples random patches of `input_image_size` from whole volumes, a
share of them centred on a foreground voxel (nnU-Net's oversampling).
Evaluation takes one centre crop/pad per case, or whole volumes.
"""

from __future__ import annotations

import functools
from typing import Optional

import tensorflow as tf

from unet3d.config import Config, ConfigError
from unet3d.data import schema

AUTOTUNE = tf.data.AUTOTUNE


def list_files(pattern: str, shuffle: bool, seed: Optional[int]) -> list[str]:
  """Files matching a (comma-separated) glob; errors name the pattern."""
  files = []
  for part in pattern.split(','):
    part = part.strip()
    if part:
      files.extend(sorted(tf.io.gfile.glob(part)))
  if not files:
    raise ValueError(f'file pattern {pattern!r}: no files match')
  return files


def _parse_fn(cfg: Config):
  if cfg.data.record_format == 'model_garden':
    return functools.partial(
        schema.parse_model_garden_example, image_size=cfg.input_image_size,
        num_channels=cfg.num_channels, num_classes=cfg.num_classes,
        label_dtype=cfg.label_dtype)
  return functools.partial(schema.parse_example,
                           spatial_dims=cfg.model.spatial_dims)


def _pad_to(image, label, size):
  """Pads image and label at the end of each axis to at least `size`."""
  shape = tf.shape(label)
  pads = [tf.maximum(0, s - shape[i]) for i, s in enumerate(size)]
  before = [p // 2 for p in pads]
  paddings = [[b, p - b] for b, p in zip(before, pads)]
  image = tf.pad(image, paddings + [[0, 0]])
  label = tf.pad(label, paddings)
  return image, label


def _sample_patch(example, size, oversample, seed):
  """A random crop of `size`; with probability `oversample` centred on a
  voxel of a randomly chosen present foreground class."""
  image, label = _pad_to(example['image'], example['label'], size)
  shape = tf.shape(label)
  rank = len(size)
  seeds = tf.random.experimental.stateless_split(seed, 3)
  size_t = tf.constant(size, tf.int32)
  max_start = shape[:rank] - size_t

  random_start = tf.cast(
      tf.random.stateless_uniform([rank], seeds[0]) *
      tf.cast(max_start + 1, tf.float32), tf.int32)
  random_start = tf.minimum(random_start, max_start)

  classes, _ = tf.unique(tf.reshape(label, [-1]))
  foreground = tf.boolean_mask(classes, classes > 0)
  want_foreground = tf.random.stateless_uniform([], seeds[1]) < oversample

  def foreground_start():
    pick = tf.random.stateless_uniform([2], seeds[2])
    chosen = foreground[tf.minimum(
        tf.cast(pick[0] * tf.cast(tf.size(foreground), tf.float32), tf.int32),
        tf.size(foreground) - 1)]
    voxels = tf.where(tf.equal(label, chosen))
    index = tf.minimum(
        tf.cast(pick[1] * tf.cast(tf.shape(voxels)[0], tf.float32), tf.int32),
        tf.shape(voxels)[0] - 1)
    centre = tf.cast(voxels[index], tf.int32)
    return tf.clip_by_value(centre - size_t // 2, 0, max_start)

  start = tf.cond(want_foreground & (tf.size(foreground) > 0),
                  foreground_start, lambda: random_start)
  image = tf.slice(image, tf.concat([start, [0]], 0),
                   tf.concat([size_t, [-1]], 0))
  label = tf.slice(label, start, size_t)
  return image, label


def _flip(image, label, axes, prob, seed):
  draws = tf.random.stateless_uniform([len(axes)], seed)
  for i, axis in enumerate(axes):
    do = draws[i] < prob
    image = tf.cond(do, lambda im=image, a=axis: tf.reverse(im, [a]),
                    lambda im=image: im)
    label = tf.cond(do, lambda lb=label, a=axis: tf.reverse(lb, [a]),
                    lambda lb=label: lb)
  return image, label


def _finish_label(cfg: Config, label, training: bool):
  if training and not cfg.use_index_label_in_train:
    return tf.one_hot(label, cfg.num_classes, dtype=tf.as_dtype(
        cfg.label_dtype))
  return label


def _centre_crop_or_pad(image, label, size):
  image, label = _pad_to(image, label, size)
  shape = tf.shape(label)
  start = (shape[:len(size)] - tf.constant(size, tf.int32)) // 2
  image = tf.slice(image, tf.concat([start, [0]], 0),
                   tf.concat([tf.constant(size, tf.int32), [-1]], 0))
  label = tf.slice(label, start, tf.constant(size, tf.int32))
  return image, label


def _records(cfg: Config, pattern: str, training: bool,
             input_context: Optional[tf.distribute.InputContext]):
  files = list_files(pattern, training, cfg.seed)
  dataset = tf.data.Dataset.from_tensor_slices(files)
  if input_context and input_context.num_input_pipelines > 1:
    if len(files) < input_context.num_input_pipelines:
      raise ValueError(
          f'file pattern {pattern!r}: {len(files)} files cannot be sharded '
          f'over {input_context.num_input_pipelines} input pipelines')
    dataset = dataset.shard(input_context.num_input_pipelines,
                            input_context.input_pipeline_id)
  compression = 'GZIP' if cfg.compressed_input else ''
  dataset = dataset.interleave(
      lambda f: tf.data.TFRecordDataset(f, compression_type=compression),
      cycle_length=min(len(files), 8), num_parallel_calls=AUTOTUNE,
      deterministic=True if cfg.deterministic else None)
  return dataset.map(_parse_fn(cfg), num_parallel_calls=AUTOTUNE)


def _options(cfg: Config) -> tf.data.Options:
  options = tf.data.Options()
  options.deterministic = bool(cfg.deterministic)
  return options


def build_dataset(cfg: Config, mode: str,
                  input_context: Optional[tf.distribute.InputContext] = None,
                  file_pattern: Optional[str] = None) -> tf.data.Dataset:
  """Batches of (image [b, *size, C] float32, label) for 'train' or 'eval'."""
  if mode not in ('train', 'eval'):
    raise ValueError(f"mode: expected 'train' or 'eval', got {mode!r}")
  training = mode == 'train'
  pattern = file_pattern or (cfg.training_file_pattern if training
                             else cfg.eval_file_pattern)
  key = 'training_file_pattern' if training else 'eval_file_pattern'
  if not pattern:
    raise ConfigError(f'{key}: required for {mode}')
  global_batch = cfg.train_batch_size if training else cfg.eval_batch_size
  batch = (input_context.get_per_replica_batch_size(global_batch)
           if input_context else global_batch)
  dataset = _records(cfg, pattern, training, input_context)
  if cfg.data.cache == 'memory':
    dataset = dataset.cache()
  elif cfg.data.cache != 'none':
    dataset = dataset.cache(cfg.data.cache)

  if training:
    size = list(cfg.input_image_size)
    aug = cfg.data.augmentation
    dataset = dataset.shuffle(cfg.data.shuffle_buffer, seed=cfg.seed).repeat()
    seeds = tf.data.Dataset.random(seed=cfg.seed).batch(2)

    def train_map(example, seed):
      image, label = _sample_patch(example, size, cfg.data.foreground_oversample,
                                   seed)
      if aug.enabled and aug.flip_prob > 0:
        image, label = _flip(image, label, aug.flip_axes, aug.flip_prob,
                             tf.random.experimental.stateless_fold_in(seed, 7))
      image.set_shape(size + [cfg.num_channels])
      label.set_shape(size)
      return image, _finish_label(cfg, label, True)

    dataset = tf.data.Dataset.zip((dataset, seeds)).map(
        train_map, num_parallel_calls=cfg.data.num_parallel_calls or AUTOTUNE)
    dataset = dataset.batch(batch, drop_remainder=True)
  else:
    size = list(cfg.data.eval_image_size or cfg.input_image_size)

    def eval_map(example):
      image, label = _centre_crop_or_pad(example['image'], example['label'],
                                         size)
      image.set_shape(size + [cfg.num_channels])
      label.set_shape(size)
      return image, label

    dataset = dataset.map(eval_map, num_parallel_calls=AUTOTUNE)
    dataset = dataset.batch(batch, drop_remainder=False)
  return dataset.prefetch(AUTOTUNE).with_options(_options(cfg))


def build_volume_dataset(cfg: Config, file_pattern: str) -> tf.data.Dataset:
  """Whole parsed cases (dicts of image, label, spacing, affine, case_id)."""
  return _records(cfg, file_pattern, False, None).with_options(_options(cfg))

"""tf.data input pipelines: parse -> sample patch -> augment -> batch.

Training samples random patches of `input_image_size` from whole volumes, a
share of them centred on a foreground voxel (nnU-Net's oversampling), and
augments them (unet3d/input/augment.py). Evaluation takes one centre crop/pad
per case, or whole volumes; it never augments.
"""

from __future__ import annotations

from dataclasses import dataclass
import functools
import json
import re
from typing import Optional

from absl import logging
import tensorflow as tf

from unet3d import config as config_lib
from unet3d import errors
from unet3d.config import Config, ConfigError
from unet3d.input import augment
from unet3d.input import schema
from unet3d.input import splits

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


def is_multi_label(cfg: Config) -> bool:
  """Sigmoid models train on [*spatial, K] binary masks, not indices."""
  return cfg.model.output_activation == 'sigmoid'


def _parse_fn(cfg: Config):
  if cfg.data.record_format == 'model_garden':
    return functools.partial(
        schema.parse_model_garden_example, image_size=cfg.input_image_size,
        num_channels=cfg.num_channels, num_classes=cfg.num_classes,
        label_dtype=cfg.label_dtype)
  return functools.partial(schema.parse_example,
                           spatial_dims=cfg.model.spatial_dims,
                           multi_label=is_multi_label(cfg),
                           num_channels=cfg.num_channels,
                           num_classes=cfg.num_classes,
                           ignore_label=cfg.loss_options.ignore_label)


def _pad_to(image, label, size):
  """Pads image and label symmetrically to at least `size` (label pads
  with 0, background)."""
  rank = len(size)
  shape = tf.shape(image)
  pads = [tf.maximum(0, s - shape[i]) for i, s in enumerate(size)]
  paddings = [[p // 2, p - p // 2] for p in pads]
  image = tf.pad(image, paddings + [[0, 0]])
  label = tf.pad(label, paddings + [[0, 0]] * (label.shape.rank - rank))
  return image, label


def _foreground_voxels(label, chosen, multi_label: bool):
  if multi_label:
    return tf.where(label[..., chosen] > 0)
  return tf.where(tf.equal(label, chosen))


def _present_foreground(label, multi_label: bool):
  """Foreground classes (index labels) or mask channels present in label."""
  if multi_label:
    rank = label.shape.rank - 1
    present = tf.reduce_any(label > 0, axis=list(range(rank)))
    return tf.cast(tf.where(present)[:, 0], tf.int32)
  classes, _ = tf.unique(tf.reshape(label, [-1]))
  return tf.boolean_mask(classes, classes > 0)


def sample_patch_centre(label, size, oversample: float, seed,
                        multi_label: bool = False):
  """The centre voxel [R] of a training patch inside a volume padded to at
  least `size`.

  With probability `oversample` the patch is centred on a random voxel of a
  randomly chosen foreground class present in the volume (nnU-Net's
  oversampling); otherwise it is a uniformly random crop. Centres are
  clipped so that the patch lies inside the volume.
  """
  rank = len(size)
  seeds = tf.random.experimental.stateless_split(seed, 3)
  size_t = tf.constant(size, tf.int32)
  max_start = tf.shape(label)[:rank] - size_t
  random_start = tf.cast(
      tf.random.stateless_uniform([rank], seeds[0]) *
      tf.cast(max_start + 1, tf.float32), tf.int32)
  random_start = tf.minimum(random_start, max_start)
  foreground = _present_foreground(label, multi_label)
  want_foreground = tf.random.stateless_uniform([], seeds[1]) < oversample

  def foreground_start():
    pick = tf.random.stateless_uniform([2], seeds[2])
    chosen = foreground[tf.minimum(
        tf.cast(pick[0] * tf.cast(tf.size(foreground), tf.float32), tf.int32),
        tf.size(foreground) - 1)]
    voxels = _foreground_voxels(label, chosen, multi_label)
    index = tf.minimum(
        tf.cast(pick[1] * tf.cast(tf.shape(voxels)[0], tf.float32), tf.int32),
        tf.shape(voxels)[0] - 1)
    centre = tf.cast(voxels[index], tf.int32)
    return tf.clip_by_value(centre - size_t // 2, 0, max_start)

  start = tf.cond(want_foreground & (tf.size(foreground) > 0),
                  foreground_start, lambda: random_start)
  return start + size_t // 2


def _finish_label(cfg: Config, label, training: bool):
  if (training and not cfg.use_index_label_in_train and
      not is_multi_label(cfg)):
    return tf.one_hot(label, cfg.num_classes, dtype=tf.as_dtype(
        cfg.label_dtype))
  return label


def _label_shape(cfg: Config, size: list[int]) -> list[int]:
  return size + ([cfg.num_classes] if is_multi_label(cfg) else [])


def _centre_crop_or_pad(image, label, size):
  image, label = _pad_to(image, label, size)
  start = (tf.shape(image)[:len(size)] - tf.constant(size, tf.int32)) // 2
  return augment.sample_patch(image, label,
                              start + tf.constant(size, tf.int32) // 2, size)


def split_case_ids(cfg: Config, training: bool) -> Optional[list[str]]:
  """Case ids of `data.fold` in `data.split_file` (train or val side)."""
  if not cfg.data.split_file:
    return None
  path = cfg.data.split_file
  try:
    with tf.io.gfile.GFile(path) as f:
      content = json.load(f)
  except (OSError, tf.errors.OpError) as e:
    raise ConfigError(f'data.split_file: cannot read {path} ({e})') from None
  except ValueError as e:
    raise ConfigError(f'data.split_file: {path} is not valid JSON '
                      f'({errors.first_line(e)})') from None
  try:
    return splits.fold_case_ids(content, cfg.data.fold,
                                'train' if training else 'val')
  except ValueError as e:
    raise ConfigError(f'data.split_file: {path} {e}') from None


def _records(cfg: Config, pattern: str, training: bool,
             input_context: Optional[tf.distribute.InputContext]):
  """Parsed examples of this input pipeline's share of the files.

  Files are sharded across input pipelines; with fewer files than
  pipelines, records are sharded instead so every pipeline still gets a
  disjoint share.
  """
  files = list_files(pattern, training, cfg.seed)
  dataset = tf.data.Dataset.from_tensor_slices(files)
  shards = input_context.num_input_pipelines if input_context else 1
  shard_files = shards > 1 and len(files) >= shards
  if shard_files:
    dataset = dataset.shard(shards, input_context.input_pipeline_id)
  compression = 'GZIP' if cfg.compressed_input else ''
  dataset = dataset.interleave(
      lambda f: tf.data.TFRecordDataset(f, compression_type=compression),
      cycle_length=min(len(files), 8), num_parallel_calls=AUTOTUNE)
  if shards > 1 and not shard_files:
    dataset = dataset.shard(shards, input_context.input_pipeline_id)
  dataset = dataset.map(_parse_fn(cfg), num_parallel_calls=AUTOTUNE)
  case_ids = split_case_ids(cfg, training)
  if case_ids is not None:
    wanted = tf.constant(case_ids or [''], tf.string)
    # Parts of a case (`<case>#<part>`: crops, 2D slices) follow their case.
    dataset = dataset.filter(lambda ex: tf.reduce_any(tf.equal(
        tf.strings.regex_replace(ex['case_id'],
                                 splits.PART_SEPARATOR + '.*$', ''),
        wanted)))
  return dataset


def _options(cfg: Config, training: bool) -> tf.data.Options:
  # Evaluation always keeps file order, so reports list cases in the same
  # order on every run and every replica count.
  options = tf.data.Options()
  options.deterministic = bool(cfg.deterministic) or not training
  return options


def _cache(cfg: Config, dataset: tf.data.Dataset, mode: str):
  if cfg.data.cache == 'memory':
    return dataset.cache()
  if cfg.data.cache != 'none':
    return dataset.cache(f'{cfg.data.cache}-{mode}')
  return dataset


def train_example_fn(cfg: Config):
  """(parsed example, seed [2]) -> (image patch, label patch), augmented."""
  size = list(cfg.input_image_size)
  aug = cfg.data.augmentation
  multi_label = is_multi_label(cfg)
  transform = augment.uses_spatial_transform(aug)

  def fn(example, seed):
    seeds = tf.random.experimental.stateless_split(seed, 3)
    image, label = _pad_to(example['image'], example['label'], size)
    centre = sample_patch_centre(label, size, cfg.data.foreground_oversample,
                                 seeds[0], multi_label)
    if transform:
      image, label = augment.cut_patch(image, label, centre, size, aug,
                                       seeds[1])
    else:
      image, label = augment.sample_patch(image, label, centre, size)
    if aug.enabled:
      image, label = augment.augment_patch(image, label, aug, seeds[2],
                                           multi_label)
    image = tf.ensure_shape(image, size + [cfg.num_channels])
    label = tf.ensure_shape(label, _label_shape(cfg, size))
    return image, _finish_label(cfg, label, True)

  return fn


@dataclass(frozen=True)
class InputPosition:
  """Where the training stream of one input pipeline starts.

  The stream is a pure function of (seed, example index): epoch e visits the
  records in a shuffle seeded by (seed, e), and example k draws its patch and
  augmentations from the stateless seed (seed, k). Resuming at `examples`
  therefore continues exactly where an uninterrupted run would be.
  """
  seed: int
  examples: int = 0


def _check_enough_records(cfg: Config, records: tf.data.Dataset, batch: int,
                          pattern: str) -> None:
  """One line when a pipeline's records cannot fill one batch without
  repeating a record inside it (and instead of a hang when it has none)."""
  found = _count(records.take(batch))
  if not found and cfg.data.split_file:
    raise ConfigError(
        f'data.split_file: no training case of fold {cfg.data.fold} in '
        f'{cfg.data.split_file} is in {pattern} (check the case ids and '
        'data.fold)')
  if found < batch:
    raise ConfigError(
        f'training_file_pattern: {pattern} gives {found} training record(s) '
        f'to an input pipeline whose batch needs {batch} (check the files, '
        'data.split_file and data.fold, or lower train_batch_size)')


def _count(dataset: tf.data.Dataset) -> int:
  return int(dataset.reduce(tf.constant(0, tf.int64), lambda n, _: n + 1))


def training_stream(records: tf.data.Dataset, shuffle_buffer: int,
                    position: InputPosition) -> tf.data.Dataset:
  """(example, example index) from `position.examples` on, endlessly.

  Epoch e is the records in a shuffle seeded by (seed, e); resuming skips
  into the current epoch only, so it reads at most one epoch.
  """
  start_epoch, offset = 0, 0
  if position.examples:
    epoch_size = _count(records)
    start_epoch, offset = divmod(position.examples, epoch_size)
    logging.info('input resumes at example %d (epoch %d, offset %d of %d)',
                 position.examples, start_epoch, offset, epoch_size)
  seed = tf.constant(position.seed, tf.int64)

  def epoch(e):
    # The shuffle's seed is a tensor here. With a TF global seed set (e.g. by
    # keras.utils.set_random_seed(0)), tf.random's seed logic compares it as
    # a Python bool and fails; without one the order is a function of our
    # seed alone, which is what resuming needs. So this function's graph
    # gets no global seed.
    tf.compat.v1.get_default_graph().seed = None
    return records.shuffle(shuffle_buffer, seed=seed * 1_000_003 + e,
                           reshuffle_each_iteration=False)

  examples = tf.data.Dataset.counter(start_epoch).flat_map(epoch).skip(offset)
  indices = tf.data.Dataset.counter(position.examples)
  return tf.data.Dataset.zip((examples, indices))


def build_train_dataset(cfg: Config,
                        input_context: Optional[tf.distribute.InputContext]
                        = None,
                        position: Optional[InputPosition] = None
                       ) -> tf.data.Dataset:
  """Batches of augmented training patches (image [b, *size, C] float32,
  label), starting at `position` (default: example 0, seed `cfg.seed`)."""
  pattern = cfg.training_file_pattern
  if not pattern:
    raise ConfigError('training_file_pattern: required for train')
  batch = _per_replica_batch(cfg.train_batch_size, 'train_batch_size',
                             input_context)
  records = _records(cfg, pattern, True, input_context)
  replicas_per_pipeline = (input_context.num_replicas_in_sync //
                           input_context.num_input_pipelines
                           if input_context else 1)
  # Before the cache: a partial read would make tf.data drop the cache.
  _check_enough_records(cfg, records, batch * replicas_per_pipeline,
                        pattern)
  records = _cache(cfg, records, 'train')
  position = position or InputPosition(seed=cfg.seed or 0)
  pipelines = input_context.num_input_pipelines if input_context else 1
  pipeline_id = input_context.input_pipeline_id if input_context else 0
  example_fn = train_example_fn(cfg)

  def with_seed(example, index):
    # Unique over pipelines, so no two examples of a run share a draw.
    global_index = index * pipelines + pipeline_id
    return example_fn(example, tf.stack([tf.constant(position.seed, tf.int64),
                                         global_index]))

  dataset = training_stream(records, cfg.data.shuffle_buffer, position).map(
      with_seed, num_parallel_calls=cfg.data.num_parallel_calls or AUTOTUNE)
  dataset = dataset.batch(batch, drop_remainder=True)
  return dataset.prefetch(AUTOTUNE).with_options(_options(cfg, True))


def _per_replica_batch(global_batch: int, key: str,
                       input_context: Optional[tf.distribute.InputContext]
                      ) -> int:
  if input_context:
    config_lib.check_divisible_by_replicas(
        key, global_batch, input_context.num_replicas_in_sync)
  return (input_context.get_per_replica_batch_size(global_batch)
          if input_context else global_batch)


def _eval_crops(cfg: Config,
                input_context: Optional[tf.distribute.InputContext] = None
               ) -> tf.data.Dataset:
  """Each eval case's centre crop/pad of `data.eval_image_size` as a dict:
  image [*size, C], label, case_id, spacing; in file order."""
  if not cfg.eval_file_pattern:
    raise ConfigError('eval_file_pattern: required for eval')
  size = list(cfg.data.eval_image_size or cfg.input_image_size)

  def crop(example):
    image, label = _centre_crop_or_pad(example['image'], example['label'],
                                       size)
    return {'image': tf.ensure_shape(image, size + [cfg.num_channels]),
            'label': tf.ensure_shape(label, _label_shape(cfg, size)),
            'case_id': example['case_id'], 'spacing': example['spacing']}

  dataset = _cache(cfg, _records(cfg, cfg.eval_file_pattern, False,
                                 input_context), 'eval')
  return dataset.map(crop, num_parallel_calls=AUTOTUNE)


def build_eval_dataset(cfg: Config,
                       input_context: Optional[tf.distribute.InputContext]
                       = None) -> tf.data.Dataset:
  """Batches of centre crops/pads (image [b, *size, C] float32, label) of
  every eval case, once."""
  dataset = _eval_crops(cfg, input_context).map(
      lambda crop: (crop['image'], crop['label']))
  batch = _per_replica_batch(cfg.eval_batch_size, 'eval_batch_size',
                             input_context)
  dataset = dataset.batch(batch, drop_remainder=False)
  return dataset.prefetch(AUTOTUNE).with_options(_options(cfg, False))


def build_dataset(cfg: Config, mode: str,
                  input_context: Optional[tf.distribute.InputContext] = None
                 ) -> tf.data.Dataset:
  """`build_train_dataset` (from example 0) or `build_eval_dataset`."""
  if mode == 'train':
    return build_train_dataset(cfg, input_context)
  if mode == 'eval':
    return build_eval_dataset(cfg, input_context)
  raise ValueError(f"mode: expected 'train' or 'eval', got {mode!r}")


def build_eval_cases(cfg: Config) -> tf.data.Dataset:
  """Eval cases one at a time, for per-case reports: dicts of the centre
  crop/pad of `data.eval_image_size` (image [*size, C], label), with
  case_id and spacing. Unbatched and not distributed (strings stay on the
  host); the same crops as `build_dataset(cfg, 'eval')`."""
  return _eval_crops(cfg).prefetch(AUTOTUNE).with_options(
      _options(cfg, False))


# What schema's in-graph record checks say, inside TensorFlow's wrapping.
_RECORD_CHECK = re.compile(r'assertion failed: \[((?:record case |image/'
                           r'ct_image |label value ).*?)\]\s*$', re.MULTILINE)


def describe_read_error(cfg: Config, error: tf.errors.OpError) -> str:
  """One line naming the first shard that cannot be read or parsed.

  tf.data errors rarely name the file, so on failure each configured shard
  is read on its own until one fails the same way.
  """
  compression = 'GZIP' if cfg.compressed_input else ''
  parse = _parse_fn(cfg)
  for key in ('training_file_pattern', 'eval_file_pattern'):
    pattern = getattr(cfg, key)
    if not pattern:
      continue
    try:
      files = list_files(pattern, False, None)
    except ValueError:
      continue
    for path in files:
      try:
        for _ in tf.data.TFRecordDataset(path, compression).map(parse):
          pass
      except tf.errors.OpError as e:
        found = _RECORD_CHECK.search(e.message or '')
        if found:  # a record that parses but breaks schema's checks
          return f'{path}: {found.group(1)}'
        return (f'{path}: cannot read this TFRecord shard '
                f'({errors.first_line(e.message)}); expected {cfg.data.record_format}'
                f' records, compressed_input={cfg.compressed_input}')
  return f'input data: {errors.first_line(error.message)}'


def build_volume_dataset(cfg: Config, file_pattern: str,
                         input_context: Optional[tf.distribute.InputContext]
                         = None) -> tf.data.Dataset:
  """Whole parsed cases (dicts of image, label, spacing, affine, case_id)."""
  return _records(cfg, file_pattern, False, input_context).with_options(
      _options(cfg, False))

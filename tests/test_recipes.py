"""Every YAML under configs/: it names its hardware, loads, builds its model
at full size, and trains one step at tiny size on records of its input spec.

Tiny size: the smallest input the model's stride on each axis allows (at
least 16 per axis), 2 base filters (8 when group norm sits before a conv, so
that every concatenation divides into groups), batch 2, on the CPU.
"""

import dataclasses
import glob
import os
import re

import keras
import numpy as np
import pytest
import tensorflow as tf

from unet3d import config
from unet3d import distribute
from unet3d import losses
from unet3d import models
from unet3d import optimizers
from unet3d.input import pipeline
from unet3d.input import schema

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RECIPES = sorted(glob.glob(os.path.join(REPO, 'configs', '**', '*.yaml'),
                           recursive=True))


def _id(path):
  return os.path.relpath(path, os.path.join(REPO, 'configs'))


def test_every_config_folder_is_covered():
  folders = {os.path.dirname(_id(p)) for p in RECIPES}
  assert folders >= {'', 'brats', 'cloud', 'decathlon', 'gpu', 'hdf5',
                     'lits'}
  assert len([p for p in RECIPES if '/cloud/' in p]) == 6


@pytest.mark.parametrize('path', RECIPES, ids=_id)
def test_recipe_opens_with_the_hardware_it_is_for(path):
  if '/cloud/' in path:
    # The Model Garden's recipes stay as published; their README names the
    # TPU slice of each.
    with open(os.path.join(os.path.dirname(path), 'README.md')) as f:
      lines = [l for l in f if os.path.basename(path) in l]
    assert lines and all(re.search(r'\bTPU\b|v3-\d+', l) for l in lines)
    return
  with open(path) as f:
    first = f.readline()
  assert first.startswith('# '), first
  assert re.search(r'\b(CPUs?|GPUs?|TPU)\b', first), first


def _tiny(cfg: config.Config) -> config.Config:
  size = [max(stride, 16) for stride in models.axis_strides(cfg)]
  order = cfg.model.layer_order or ''
  group_first = 'g' in order and order.index('g') < order.index('c')
  base = 8 if group_first else 2
  model = {'cat_channels': 2}
  if cfg.model.filters is not None:
    model['filters'] = [base] * len(cfg.model.filters)
  values = {
      'input_image_size': size, 'num_base_filters': base,
      'train_batch_size': 2, 'eval_batch_size': 1, 'predict_batch_size': 1,
      'distribution_strategy': 'cpu', 'num_gpus': 0, 'tpu': None,
      'input_partition_dims': None, 'model': model,
      'data': {'eval_image_size': None, 'cache': 'none'}, 'seed': 0,
  }
  return config.merge(cfg, values)


def _write_records(cfg: config.Config, path: str) -> None:
  """Two cases of the recipe's channels and label type, larger than a
  patch so that patches are cut."""
  rng = np.random.default_rng(0)
  shape = [s + 4 for s in cfg.input_image_size]
  volumes = []
  for i in range(2):
    image = rng.normal(size=shape + [cfg.num_channels]).astype(np.float32)
    if cfg.model.output_activation == 'sigmoid':
      label = (rng.random(shape + [cfg.num_classes]) > 0.7).astype(np.uint8)
    else:
      label = rng.integers(0, cfg.num_classes, shape).astype(np.uint8)
    volumes.append(schema.Volume(image=image, label=label,
                                 spacing=np.ones(len(shape)),
                                 affine=np.eye(4), case_id=f'case{i}'))
  schema.write_records(path, (schema.encode_volume(v) for v in volumes),
                       cfg.compressed_input)


def _expected_label_shape(cfg, batch):
  size = list(cfg.input_image_size)
  if cfg.model.output_activation == 'sigmoid':
    return [batch] + size + [cfg.num_classes]
  if cfg.use_index_label_in_train:
    return [batch] + size
  return [batch] + size + [cfg.num_classes]


@pytest.mark.parametrize('path', RECIPES, ids=_id)
def test_recipe_builds_and_trains_one_step_at_tiny_size(path, tmp_path):
  cfg = config.build_config(path)
  # The model at the recipe's own size (layers only; nothing runs).
  distribute.set_precision_policy(cfg)
  full = models.build_model(cfg)
  assert full.count_params() > 0
  keras.mixed_precision.set_global_policy('float32')
  del full

  records = str(tmp_path / 'train-0.tfrecord')
  cfg = _tiny(cfg)
  cfg = config.merge(cfg, {'training_file_pattern': records,
                           'model_dir': str(tmp_path / 'run')})
  config.validate(cfg)
  _write_records(cfg, records)

  batch = next(iter(pipeline.build_dataset(cfg, 'train')))
  images, labels = batch
  assert images.shape == [2] + list(cfg.input_image_size) + [
      cfg.num_channels]
  assert labels.shape == _expected_label_shape(cfg, 2)

  distribute.set_precision_policy(cfg)
  model = models.build_model(cfg)
  optimizer = optimizers.build_optimizer(cfg)
  loss_fn = losses.build_loss_fn(cfg)
  before = [v.numpy().copy() for v in model.trainable_variables]
  with tf.GradientTape() as tape:
    loss = tf.reduce_mean(loss_fn(labels, model(images, training=True)))
    scaled = optimizer.scale_loss(loss)
  grads = tape.gradient(scaled, model.trainable_variables)
  optimizer.apply_gradients(zip(grads, model.trainable_variables))
  assert np.isfinite(float(loss)), _id(path)
  changed = [not np.array_equal(b, v.numpy())
             for b, v in zip(before, model.trainable_variables)]
  assert sum(changed) > len(changed) // 2, _id(path)


def test_unet3plus_2d_recipe_has_the_papers_width():
  """64 base filters: the paper's 26.97 M trainable parameters for UNet 3+
  on 3-channel slices with 2 classes; the recipe's deep-supervision heads,
  CGM and 3 classes add 0.06 M."""
  cfg = config.build_config(os.path.join(REPO, 'configs', 'lits',
                                         'unet3plus_2d.yaml'))
  base = dataclasses.replace(cfg, num_classes=2, model=dataclasses.replace(
      cfg.model, name='unet3plus'))

  def trainable(c):
    return sum(int(np.prod(v.shape))
               for v in models.build_model(c).trainable_weights)

  assert trainable(base) == 26_974_658
  assert trainable(cfg) == 27_033_169

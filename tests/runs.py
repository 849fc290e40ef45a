"""Tiny records and configs shared by the trainer, evaluator and run-folder
tests: 24^3 synthetic cases, a depth-2 U-Net with 2 base filters on 16^3."""

import numpy as np

from unet3d import config
from unet3d.input import schema
from unet3d.preprocess import synthetic

SIZE = 16


def write_cases(path, num_cases, seed):
  rng = np.random.default_rng(seed)
  volumes = []
  for i in range(num_cases):
    image, label = synthetic.make_demo_volume(rng, (24, 24, 24))
    image = (image - image.mean()) / image.std()
    volumes.append(schema.Volume(
        image=image[..., None].astype(np.float32), label=label,
        spacing=np.array([1.0, 1.0, 1.5]),
        affine=synthetic.demo_affine((24, 24, 24)), case_id=f'case{seed}_{i}'))
  schema.write_records(path, (schema.encode_volume(v) for v in volumes))
  return volumes


def make_records(root):
  """train-0/1 and val-0 shards of 3 cases each in `root` (a pathlib.Path);
  returns the validation volumes."""
  write_cases(str(root / 'train-0.tfrecord'), 3, seed=1)
  write_cases(str(root / 'train-1.tfrecord'), 3, seed=2)
  return write_cases(str(root / 'val-0.tfrecord'), 3, seed=3)


def run_config(records_root, model_dir, **override):
  values = {
      'model_dir': str(model_dir),
      'training_file_pattern': str(records_root / 'train-*'),
      'eval_file_pattern': str(records_root / 'val-*'),
      'input_image_size': [SIZE] * 3,
      'num_classes': 4,
      'num_base_filters': 2,
      'depth': 2,
      'train_batch_size': 2,
      'eval_batch_size': 2,
      'train_steps': 4,
      'init_learning_rate': 1e-3,
      'loss': 'dice_ce',
      'use_index_label_in_train': True,
      'distribution_strategy': 'cpu',
      'train': {'steps_per_loop': 2, 'checkpoint_every_n_steps': 2},
      'data': {'eval_image_size': [SIZE] * 3},
  }
  cfg = config.merge(config.Config(), values)
  cfg = config.merge(cfg, override)
  config.validate(cfg)
  return cfg


def numpy_dice(pred, label, cls):
  p, t = pred == cls, label == cls
  if not p.any() and not t.any():
    return 1.0  # nnU-Net's convention, the config default
  return 2.0 * np.logical_and(p, t).sum() / (p.sum() + t.sum())

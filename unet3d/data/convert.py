"""Dataset folders -> sharded TFRecords of the unet3d schema + dataset.json."""

from __future__ import annotations

import json
import os
import shutil
from typing import Any, Optional

import numpy as np

from unet3d.data import io
from unet3d.data import schema


def _normalise(image: np.ndarray, modality: str) -> tuple[np.ndarray, float,
                                                          float]:
  """CT: clip to [0.5, 99.5] percentiles, then z-score; MRI: z-score."""
  image = image.astype(np.float32)
  if modality.upper() == 'CT':
    lo, hi = np.percentile(image, [0.5, 99.5])
    image = np.clip(image, lo, hi)
  mean, std = float(image.mean()), float(image.std())
  return (image - mean) / max(std, 1e-8), mean, std


def convert_decathlon(task_dir: str, output_dir: str, *, num_shards: int = 4,
                      compressed: bool = True, overwrite: bool = False,
                      validation_fraction: float = 0.2, seed: int = 0,
                      **unused) -> dict[str, Any]:
  """Converts an MSD task folder to train-*/val-* TFRecord shards."""
  meta_path = os.path.join(task_dir, 'dataset.json')
  if not os.path.isfile(meta_path):
    raise ValueError(f'{meta_path}: not found (expected an MSD task folder)')
  with open(meta_path) as f:
    meta = json.load(f)
  if os.path.exists(output_dir) and os.listdir(output_dir):
    if not overwrite:
      raise ValueError(f'{output_dir}: output folder is not empty; pass '
                       'overwrite to replace it')
    shutil.rmtree(output_dir)
  os.makedirs(output_dir)
  modality = meta.get('modality', {}).get('0', 'MRI')
  cases = meta['training']
  rng = np.random.default_rng(seed)
  order = rng.permutation(len(cases))
  num_val = int(round(validation_fraction * len(cases)))
  splits = {'val': [cases[i] for i in order[:num_val]],
            'train': [cases[i] for i in order[num_val:]]}
  for split, split_cases in splits.items():
    volumes = []
    for case in split_cases:
      image_path = os.path.join(task_dir, case['image'])
      label_path = os.path.join(task_dir, case['label'])
      image, affine, spacing = io.load_nifti(image_path)
      label, _, _ = io.load_nifti(label_path)
      image, mean, std = _normalise(image, modality)
      case_id = os.path.basename(image_path).split('.')[0]
      volumes.append(schema.Volume(
          image=image[..., None], label=label.astype(np.uint8),
          spacing=spacing, affine=affine, case_id=case_id,
          channel_mean=np.array([mean]), channel_std=np.array([std])))
    shards = max(1, min(num_shards, len(volumes)))
    for s in range(shards):
      path = os.path.join(output_dir, f'{split}-{s:05d}-of-{shards:05d}.tfrecord')
      schema.write_records(path, (schema.encode_volume(v)
                                  for v in volumes[s::shards]), compressed)
  summary = {'labels': meta.get('labels', {}), 'modality': meta.get('modality'),
             'num_train': len(splits['train']), 'num_val': len(splits['val'])}
  with open(os.path.join(output_dir, 'dataset.json'), 'w') as f:
    json.dump(summary, f, indent=2)
  return summary

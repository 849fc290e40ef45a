"""Synthetic demo volumes: MRI-like images with three foreground classes.

This data is synthetic. It exists so that a fresh install can run the whole
NIfTI -> TFRecord -> train -> eval path in minutes, with no download.

Classes: 0 background, 1 "organ" (ellipsoids, bright), 2 "lesion" (boxes,
dark), 3 "vessel" (tubes, very bright). Shapes, sizes, intensities, noise and
a multiplicative bias field vary per volume.
"""

from __future__ import annotations

import json
import os
from typing import Sequence

import numpy as np

CLASS_NAMES = ('background', 'organ', 'lesion', 'vessel')
DEMO_SPACING = (1.0, 1.0, 1.5)


def _grid(shape: Sequence[int]) -> list[np.ndarray]:
  return np.meshgrid(*[np.arange(s, dtype=np.float32) for s in shape],
                     indexing='ij')


def _ellipsoid(grid, rng, shape):
  radii = rng.uniform(0.12, 0.22, size=3) * min(shape)
  centre = [rng.uniform(r + 1, s - r - 1) for r, s in zip(radii, shape)]
  # A random rotation about axis 0 makes the ellipsoids less axis-aligned.
  theta = rng.uniform(0, np.pi)
  y, x = grid[1] - centre[1], grid[2] - centre[2]
  yr = np.cos(theta) * y - np.sin(theta) * x
  xr = np.sin(theta) * y + np.cos(theta) * x
  z = grid[0] - centre[0]
  return (z / radii[0])**2 + (yr / radii[1])**2 + (xr / radii[2])**2 <= 1.0


def _box(grid, rng, shape):
  half = rng.uniform(0.07, 0.13, size=3) * min(shape)
  centre = [rng.uniform(h + 1, s - h - 1) for h, s in zip(half, shape)]
  mask = np.ones(shape, bool)
  for g, c, h in zip(grid, centre, half):
    mask &= np.abs(g - c) <= h
  return mask


def _tube(grid, rng, shape):
  axis = rng.integers(0, 3)
  others = [a for a in range(3) if a != axis]
  radius = rng.uniform(0.045, 0.07, size=1)[0] * min(shape)
  start = [rng.uniform(radius + 0.2 * shape[a], 0.8 * shape[a] - radius)
           for a in others]
  # A gently curving tube: its centre drifts linearly along the axis.
  drift = rng.uniform(-0.3, 0.3, size=2)
  t = grid[axis]
  d0 = grid[others[0]] - (start[0] + drift[0] * (t - shape[axis] / 2))
  d1 = grid[others[1]] - (start[1] + drift[1] * (t - shape[axis] / 2))
  length = rng.uniform(0.5, 0.9) * shape[axis]
  t0 = rng.uniform(0, shape[axis] - length)
  return (d0**2 + d1**2 <= radius**2) & (t >= t0) & (t <= t0 + length)


def _bias_field(grid, rng, shape):
  field = np.ones(shape, np.float32)
  for g, s in zip(grid, shape):
    u = g / s - 0.5
    field += rng.uniform(-0.25, 0.25) * u + rng.uniform(-0.2, 0.2) * u * u
  return field


def make_demo_volume(rng: np.random.Generator,
                     shape: Sequence[int] = (64, 64, 64)
                    ) -> tuple[np.ndarray, np.ndarray]:
  """Returns one synthetic case.

  Returns:
    image: float32 [D, H, W], MRI-like arbitrary units.
    label: uint8 [D, H, W], classes 0..3 (see CLASS_NAMES).
  """
  shape = tuple(int(s) for s in shape)
  grid = _grid(shape)
  label = np.zeros(shape, np.uint8)
  painters = ((1, _ellipsoid, (1, 2)), (2, _box, (1, 2)), (3, _tube, (1, 2)))
  for cls, painter, (lo, hi) in painters:
    for _ in range(rng.integers(lo, hi + 1)):
      label[painter(grid, rng, shape)] = cls

  means = {0: rng.uniform(90, 110), 1: rng.uniform(165, 195),
           2: rng.uniform(35, 60), 3: rng.uniform(235, 265)}
  image = np.zeros(shape, np.float32)
  for cls, mean in means.items():
    image[label == cls] = mean
  # Low-frequency texture in the background, so it is not a flat value.
  texture = np.sin(grid[0] / rng.uniform(5, 9) + rng.uniform(0, 6)) * np.cos(
      grid[1] / rng.uniform(5, 9)) * rng.uniform(5, 12)
  image += np.where(label == 0, texture, 0).astype(np.float32)
  image *= _bias_field(grid, rng, shape)
  image += rng.normal(0, rng.uniform(8, 16), size=shape).astype(np.float32)
  return image.astype(np.float32), label


def demo_affine(shape: Sequence[int],
                spacing: Sequence[float] = DEMO_SPACING) -> np.ndarray:
  """A non-trivial RAS affine: the given spacing, centred on the origin."""
  affine = np.diag(list(spacing) + [1.0]).astype(np.float64)
  affine[:3, 3] = -0.5 * np.asarray(spacing) * (np.asarray(shape) - 1)
  return affine


def write_demo_decathlon_task(task_dir: str, num_cases: int = 24,
                              shape: Sequence[int] = (64, 64, 64),
                              seed: int = 0) -> str:
  """Writes synthetic cases as a Medical Segmentation Decathlon task folder.

  Layout: task_dir/dataset.json, imagesTr/demo_XXX.nii.gz,
  labelsTr/demo_XXX.nii.gz. Returns task_dir.
  """
  from unet3d.preprocess import io  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(seed)
  os.makedirs(os.path.join(task_dir, 'imagesTr'), exist_ok=True)
  os.makedirs(os.path.join(task_dir, 'labelsTr'), exist_ok=True)
  affine = demo_affine(shape)
  training = []
  for i in range(num_cases):
    name = f'demo_{i:03d}.nii.gz'
    image, label = make_demo_volume(rng, shape)
    io.save_nifti(os.path.join(task_dir, 'imagesTr', name), image, affine)
    io.save_nifti(os.path.join(task_dir, 'labelsTr', name), label, affine)
    training.append({'image': f'./imagesTr/{name}',
                     'label': f'./labelsTr/{name}'})
  dataset = {
      'name': 'unet3d synthetic demo',
      'description': 'Synthetic MRI-like volumes made by unet3d; not real data.',
      'tensorImageSize': '3D',
      'modality': {'0': 'MRI'},
      'labels': {str(i): n for i, n in enumerate(CLASS_NAMES)},
      'numTraining': num_cases,
      'numTest': 0,
      'training': training,
      'test': [],
  }
  tmp = os.path.join(task_dir, 'dataset.json.tmp')
  with open(tmp, 'w') as f:
    json.dump(dataset, f, indent=2)
  os.replace(tmp, os.path.join(task_dir, 'dataset.json'))
  return task_dir

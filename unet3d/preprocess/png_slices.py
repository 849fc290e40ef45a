"""The UNet 3+ repository's LiTS PNG slices (hamidriasat/UNet-3-Plus,
data_preparation/preprocess_data.py) as 2D records.

Layout: `<folder>/images/image_<volume>_<slice>.png` (uint8, 3 channels:
slices k-1, k, k+1 written by OpenCV, so an RGB reader sees k+1, k, k-1)
and `<folder>/mask/mask_<volume>_<slice>.png` (grey, 0 background, 1 liver
with tumour merged); `<folder>` may also hold `train/` and `val/` of them.
Each volume is one case; its slices become records `volume-<v>#z<kkkk>`,
so splits keep a volume's slices together. Numpy only.
"""

from __future__ import annotations

import functools
import os
import re
from typing import Sequence

import numpy as np
from PIL import Image

from unet3d.input import splits
from unet3d.preprocess import cases
from unet3d.preprocess import intensity
from unet3d.preprocess import io
from unet3d.preprocess import spatial

_IMAGE = re.compile(r'^image_(\d+)_(\d+)\.png$')
LABEL_NAMES = ('background', 'liver')


def _folders(input_path: str) -> list[str]:
  subsets = [os.path.join(input_path, s) for s in ('train', 'val')]
  found = [f for f in [input_path] + subsets
           if io.isdir(os.path.join(f, 'images'))]
  if not found:
    raise ValueError(f'{input_path}: no images/ folder (expected the UNet 3+ '
                     'layout images/image_<volume>_<slice>.png and '
                     'mask/mask_<volume>_<slice>.png, or train/ and val/ of '
                     'them)')
  return found


def mask_path(image_path: str) -> str:
  """mask/mask_<v>_<k>.png beside images/image_<v>_<k>.png."""
  folder = os.path.dirname(os.path.dirname(image_path))
  name = os.path.basename(image_path).replace('image_', 'mask_', 1)
  return os.path.join(folder, 'mask', name)


def find_cases(input_path: str) -> list[cases.Case]:
  """One case per volume number, its slice images in slice order."""
  volumes: dict[int, list[tuple[int, str]]] = {}
  for folder in _folders(input_path):
    images = os.path.join(folder, 'images')
    for name in io.listdir(images):
      match = _IMAGE.match(name)
      if match:
        volumes.setdefault(int(match[1]), []).append(
            (int(match[2]), os.path.join(images, name)))
  if not volumes:
    raise ValueError(f'{input_path}: no image_<volume>_<slice>.png files')
  out = []
  for number, items in sorted(volumes.items()):
    files = tuple(p for _, p in sorted(items))
    out.append(cases.Case(f'volume-{number}', files, mask_path(files[0])))
  return out


def _read(path: str, channels: int) -> np.ndarray:
  if not io.isfile(path):
    raise ValueError(f'{path}: file not found')
  with io.local_file(path, '.png') as local:
    array = np.asarray(Image.open(local))
  if channels == 3 and array.ndim == 3 and array.shape[-1] >= 3:
    return array[..., 2::-1]  # RGB -> OpenCV's channel order k-1, k, k+1
  if channels == 1 and array.ndim == 2:
    return array
  raise ValueError(f'{path}: expected a {"RGB" if channels == 3 else "grey"}'
                   f' PNG, got shape {array.shape}')


def load_case(case: cases.Case, num_classes: int) -> cases.RawCase:
  """image float32 [H, W, Z, 3] in 0..1 (the repo's /255), labels uint8
  [H, W, Z]; 0/255 masks read as 0/1."""
  images, labels = [], []
  for path in case.image_files:
    images.append(_read(path, 3))
    mask = _read(mask_path(path), 1)
    if mask.max(initial=0) == 255 and set(np.unique(mask)) <= {0, 255}:
      mask = mask // 255
    if mask.max(initial=0) >= num_classes:
      raise ValueError(f'{mask_path(path)}: label value {mask.max()} >= '
                       f'{num_classes} classes')
    labels.append(mask.astype(np.uint8))
  if len({a.shape for a in images}) != 1:
    raise ValueError(f'{case.image_files[0]}: slices of {case.case_id} '
                     'differ in size')
  image = np.stack(images, axis=2).astype(np.float32) / 255.0
  return cases.RawCase(image, np.stack(labels, axis=2), np.eye(4))


def geometry(case: cases.Case) -> tuple[tuple[int, ...], np.ndarray]:
  """(H, W, Z) from the first slice's header; identity affine (PNGs have
  no geometry)."""
  with io.local_file(case.image_files[0], '.png') as local:
    with Image.open(local) as first:
      width, height = first.size
  return (height, width, len(case.image_files)), np.eye(4)


def to_slices(record: cases.Processed, is_train: bool,
              rng: np.random.Generator) -> list[cases.Processed]:
  """One record per slice: image [H, W, 3] as stored, label [H, W]."""
  del is_train, rng
  return [cases.Processed(
      splits.part_id(record.case_id, f'z{k:04d}'),
      np.ascontiguousarray(record.image[:, :, k]),
      np.ascontiguousarray(record.label[:, :, k]),
      spatial.crop_affine(record.affine, [0, 0, k]),
      record.channel_mean, record.channel_std)
          for k in range(record.image.shape[2])]


def source(input_path: str, label_names: Sequence[str] = LABEL_NAMES
          ) -> cases.Source:
  """The PNG slices for `convert.convert` (values kept, /255)."""
  names = {str(i): n for i, n in enumerate(label_names)}
  return cases.Source(
      name=input_path, cases=tuple(find_cases(input_path)),
      load=functools.partial(load_case, num_classes=len(names)),
      geometry=geometry,
      modalities={'0': 'CT slice -1', '1': 'CT', '2': 'CT slice +1'},
      labels=names, norms=(intensity.ChannelNorm('none'),) * 3,
      parts=to_slices, has_orientation=False,
      description={'slices': {'axis': 2, 'in_plane_size': None,
                              'context_slices': 1,
                              'source': 'UNet 3+ PNG slices (0..255 / 255)'}})

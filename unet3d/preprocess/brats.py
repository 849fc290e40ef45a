"""BraTS: case folders of four MRI modalities and a segmentation.

A case folder `BraTS20_Training_001/` holds `<case>_t1.nii.gz`,
`<case>_t1ce.nii.gz`, `<case>_t2.nii.gz`, `<case>_flair.nii.gz` and
`<case>_seg.nii.gz` (or `.nii`). Labels {0, 1, 2, 4} become {0, 1, 2, 3};
with `regions` they become three binary masks (whole tumour, tumour core,
enhancing tumour) for sigmoid training. Numpy only: runs in workers.
"""

from __future__ import annotations

import functools
import glob
import os
from typing import Sequence

import numpy as np

from unet3d.preprocess import cases
from unet3d.preprocess import preprocessing as pp

MODALITIES = ('t1', 't1ce', 't2', 'flair')
LABEL_MAP = {0: 0, 1: 1, 2: 2, 4: 3}
LABELS = {'0': 'background', '1': 'necrotic_tumor_core',
          '2': 'peritumoral_edema', '3': 'enhancing_tumor'}
# Names as in unet3d.metrics.BRATS_REGIONS.
REGION_LABELS = {'0': 'whole_tumor', '1': 'tumor_core',
                 '2': 'enhancing_tumor'}


def _file(folder: str, suffix: str) -> str:
  """`<folder>/*_<suffix>.nii[.gz]`; the expected name when missing (the
  loader then reports it)."""
  matches = sorted(glob.glob(os.path.join(folder, f'*_{suffix}.nii.gz')) +
                   glob.glob(os.path.join(folder, f'*_{suffix}.nii')))
  if matches:
    return matches[0]
  name = os.path.basename(os.path.normpath(folder))
  return os.path.join(folder, f'{name}_{suffix}.nii.gz')


def find_cases(input_path: str, modalities: Sequence[str] = MODALITIES
              ) -> list[cases.Case]:
  """Every sub-folder of input_path that holds NIfTI files is a case."""
  if not os.path.isdir(input_path):
    raise ValueError(f'{input_path}: not a folder (expected BraTS case '
                     'folders)')
  unknown = [m for m in modalities if m not in MODALITIES]
  if unknown or not modalities:
    raise ValueError(f'--modalities: {list(modalities)} must be some of '
                     f'{MODALITIES}')
  found = []
  for name in sorted(os.listdir(input_path)):
    folder = os.path.join(input_path, name)
    if os.path.isdir(folder) and glob.glob(os.path.join(folder, '*.nii*')):
      found.append(cases.Case(
          case_id=name,
          image_files=tuple(_file(folder, m) for m in modalities),
          label_file=_file(folder, 'seg')))
  if not found:
    raise ValueError(f'{input_path}: no BraTS case folders found (expected '
                     'sub-folders with *_t1, *_t1ce, *_t2, *_flair, *_seg '
                     'NIfTI files)')
  return found


def regions_from_labels(label: np.ndarray) -> np.ndarray:
  """[X, Y, Z] labels {0, 1, 2, 3} -> [X, Y, Z, 3] uint8 masks: whole
  tumour (1, 2, 3), tumour core (1, 3), enhancing tumour (3)."""
  return np.stack([label > 0, (label == 1) | (label == 3), label == 3],
                  axis=-1).astype(np.uint8)


def load_case(case: cases.Case, regions: bool = False) -> cases.RawCase:
  """MRI [X, Y, Z, M] and remapped labels (or region masks)."""
  image, affine = cases.read_images(case.image_files)
  label = cases.read_label(case.label_file, image, affine,
                           case.image_files[0])
  label = pp.remap_labels(label, LABEL_MAP, case.label_file)
  if regions:
    label = regions_from_labels(label)
  return cases.RawCase(image, label, affine)


def source(input_path: str, *, modalities: Sequence[str] = MODALITIES,
           regions: bool = False) -> cases.Source:
  """The BraTS dataset for `convert.convert`: each channel z-scored within
  the brain (nonzero) mask, zero outside it."""
  modalities = tuple(modalities)
  return cases.Source(
      name=input_path, cases=tuple(find_cases(input_path, modalities)),
      load=functools.partial(load_case, regions=regions),
      geometry=cases.file_geometry,
      modalities={str(i): m for i, m in enumerate(modalities)},
      labels=dict(REGION_LABELS if regions else LABELS),
      norms=tuple(pp.ChannelNorm('zscore', nonzero_mask=True)
                  for _ in modalities),
      description={'label_map': {str(k): v for k, v in LABEL_MAP.items()},
                   'regions': list(REGION_LABELS.values()) if regions
                              else None})

"""BraTS: case folders of four MRI modalities and a segmentation.

Layouts found under the input folder:

  BraTS 2018/2019     HGG/ and LGG/ hold the case folders (NVIDIA's
                      UNet_3D_Medical layout), e.g. HGG/BraTS19_2013_10_1/
  BraTS 2020/2021     the case folders themselves, e.g. BraTS20_Training_001/
                      or BraTS2021_00000/
  BraTS 2023 (GLI)    the case folders, e.g. BraTS-GLI-00000-000/

Files are `<case>_t1`, `_t1ce`, `_t2`, `_flair`, `_seg` (.nii.gz or .nii),
or in the 2023 naming `<case>-t1n`, `-t1c`, `-t2w`, `-t2f`, `-seg`. A case
folder whose segmentation has another name (BraTS 2020's case 355 ships
`W39_1998.09.19_Segm.nii`) uses its one NIfTI file that is no modality.
Labels {0, 1, 2, 4} (2023 naming: {0, 1, 2, 3}) become {0, 1, 2, 3}; with
`regions` they become three binary masks (whole tumour, tumour core,
enhancing tumour) for sigmoid training. Numpy only: runs in workers.
"""

from __future__ import annotations

import functools
import os
from typing import Optional, Sequence

import numpy as np

from unet3d.preprocess import cases
from unet3d.preprocess import intensity
from unet3d.preprocess import io
from unet3d.preprocess import label_maps

MODALITIES = ('t1', 't1ce', 't2', 'flair')
# Our modality name -> its file suffix in the 2023 naming.
NAMES_2023 = {'t1': 't1n', 't1ce': 't1c', 't2': 't2w', 'flair': 't2f',
              'seg': 'seg'}
# Grade folders of BraTS 2018/2019.
GRADE_FOLDERS = ('HGG', 'LGG')
LABEL_MAP = {0: 0, 1: 1, 2: 2, 4: 3}
LABEL_MAP_2023 = {0: 0, 1: 1, 2: 2, 3: 3}
LABELS = {'0': 'background', '1': 'necrotic_tumor_core',
          '2': 'peritumoral_edema', '3': 'enhancing_tumor'}
# Names as in unet3d.metrics.BRATS_REGIONS.
REGION_LABELS = {'0': 'whole_tumor', '1': 'tumor_core',
                 '2': 'enhancing_tumor'}


def _matches(folder: str, suffix: str) -> list[str]:
  return sorted(io.glob(os.path.join(folder, f'*{suffix}.nii.gz')) +
                io.glob(os.path.join(folder, f'*{suffix}.nii')))


def uses_2023_naming(folder: str) -> bool:
  """True when the folder's files are named `<case>-t1n.nii.gz` etc."""
  return bool(_matches(folder, '-t1n') or _matches(folder, '-seg'))


def _file(folder: str, name: str, naming_2023: bool) -> Optional[str]:
  """The folder's file for a modality (or 'seg'), or None."""
  suffix = f'-{NAMES_2023[name]}' if naming_2023 else f'_{name}'
  matches = _matches(folder, suffix)
  return matches[0] if matches else None


def _modality_files(folder: str) -> set[str]:
  return {f for m in MODALITIES
          for f in _matches(folder, f'_{m}') + _matches(folder,
                                                        f'-{NAMES_2023[m]}')}


def _label_file(folder: str, naming_2023: bool) -> str:
  """`*_seg` (`*-seg`); else the folder's one NIfTI that is no modality
  file; else the expected name (the loader then reports it missing)."""
  found = _file(folder, 'seg', naming_2023)
  if found:
    return found
  modality_files = _modality_files(folder)
  others = [f for f in _matches(folder, '') if f not in modality_files]
  if len(others) == 1:
    return others[0]
  name = os.path.basename(os.path.normpath(folder))
  return os.path.join(folder, f'{name}{"-" if naming_2023 else "_"}seg.nii.gz')


def case_folders(input_path: str, single_data_dir: bool = False
                ) -> list[str]:
  """Case folders: those in HGG/ and LGG/ when the input has them (unless
  single_data_dir), else every sub-folder holding NIfTI files."""
  roots = [input_path]
  grades = [os.path.join(input_path, g) for g in GRADE_FOLDERS
            if io.isdir(os.path.join(input_path, g))]
  if grades and not single_data_dir:
    roots = grades
  found = []
  for root in roots:
    for name in io.listdir(root):
      folder = os.path.join(root, name)
      if io.isdir(folder) and io.glob(os.path.join(folder, '*.nii*')):
        found.append(folder)
  return found


def find_cases(input_path: str, modalities: Sequence[str] = MODALITIES,
               single_data_dir: bool = False) -> list[cases.Case]:
  """One case per case folder (see the module docstring for layouts)."""
  if not io.isdir(input_path):
    raise ValueError(f'{input_path}: not a folder (expected BraTS case '
                     'folders)')
  unknown = [m for m in modalities if m not in MODALITIES]
  if unknown or not modalities:
    raise ValueError(f'--modalities: {list(modalities)} must be some of '
                     f'{MODALITIES}')
  found = []
  for folder in case_folders(input_path, single_data_dir):
    naming_2023 = uses_2023_naming(folder)
    name = os.path.basename(folder)
    images = []
    for m in modalities:
      path = _file(folder, m, naming_2023)
      if path is None:  # the expected name; the loader reports it missing
        sep, suffix = ('-', NAMES_2023[m]) if naming_2023 else ('_', m)
        path = os.path.join(folder, f'{name}{sep}{suffix}.nii.gz')
      images.append(path)
    found.append(cases.Case(
        case_id=name, image_files=tuple(images),
        label_file=_label_file(folder, naming_2023)))
  if not found:
    raise ValueError(f'{input_path}: no BraTS case folders found (expected '
                     'sub-folders, or HGG/ and LGG/ with sub-folders, holding '
                     '*_t1, *_t1ce, *_t2, *_flair, *_seg NIfTI files)')
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
  naming_2023 = uses_2023_naming(os.path.dirname(case.label_file))
  label = label_maps.remap_labels(label, LABEL_MAP_2023 if naming_2023 else
                                  LABEL_MAP, case.label_file)
  if regions:
    label = regions_from_labels(label)
  return cases.RawCase(image, label, affine)


def source(input_path: str, *, modalities: Sequence[str] = MODALITIES,
           regions: bool = False, single_data_dir: bool = False
          ) -> cases.Source:
  """The BraTS dataset for `convert.convert`: each channel z-scored within
  the brain (nonzero) mask, zero outside it."""
  modalities = tuple(modalities)
  return cases.Source(
      name=input_path,
      cases=tuple(find_cases(input_path, modalities, single_data_dir)),
      load=functools.partial(load_case, regions=regions),
      geometry=cases.file_geometry,
      modalities={str(i): m for i, m in enumerate(modalities)},
      labels=dict(REGION_LABELS if regions else LABELS),
      norms=tuple(intensity.ChannelNorm('zscore', nonzero_mask=True)
                  for _ in modalities),
      description={'label_map': {str(k): v for k, v in LABEL_MAP.items()},
                   'label_map_2023_naming': {str(k): v for k, v in
                                             LABEL_MAP_2023.items()},
                   'regions': list(REGION_LABELS.values()) if regions
                              else None})

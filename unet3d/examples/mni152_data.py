"""The MNI152 2009a template and its tissue labels, for the real-MRI scripts.

Fetched at run time from nilearn's wheel on the package index (never
committed; MNI's permissive ICBM 2009a notice). `walkthrough_mni152.py`
writes the two hemispheres as cases; benchmarks/plan_generalisation.py scans
the template with simulated scanners.
"""

import glob
import json
import os
import shutil
import subprocess
import sys
import zipfile

import numpy as np

PREFIX = 'nilearn/datasets/data/'
FILES = {'t1': 'mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz',
         'gm': 'mni_icbm152_gm_tal_nlin_sym_09a_converted.nii.gz',
         'wm': 'mni_icbm152_wm_tal_nlin_sym_09a_converted.nii.gz'}
LABELS = {'0': 'background', '1': 'CSF', '2': 'grey_matter',
          '3': 'white_matter'}


def step(message: str) -> None:
  print(f'\n== {message}', flush=True)


def run(args: list[str]) -> None:
  """Runs a command, echoing it; stops the walkthrough when it fails."""
  print('$ ' + ' '.join(args), flush=True)
  result = subprocess.run(args, check=False)
  if result.returncode:
    sys.exit(f'error: command failed with exit code {result.returncode}: '
             f'{args[1] if len(args) > 1 else args[0]}')


def fetch(work_dir: str) -> dict[str, str]:
  """The three NIfTI files, from the nilearn wheel (downloaded once)."""
  data_dir = os.path.join(work_dir, 'mni152')
  paths = {k: os.path.join(data_dir, f) for k, f in FILES.items()}
  if all(os.path.exists(p) for p in paths.values()):
    return paths
  wheel_dir = os.path.join(work_dir, 'wheel')
  run([sys.executable, '-m', 'pip', 'download', '--no-deps', '--quiet',
       'nilearn', '-d', wheel_dir])
  wheels = sorted(glob.glob(os.path.join(wheel_dir, 'nilearn-*.whl')))
  if not wheels:
    sys.exit(f'error: {wheel_dir}: pip download left no nilearn wheel')
  os.makedirs(data_dir, exist_ok=True)
  with zipfile.ZipFile(wheels[-1]) as wheel:
    for key, name in FILES.items():
      try:
        data = wheel.read(PREFIX + name)
      except KeyError:
        sys.exit(f'error: {wheels[-1]}: no {PREFIX + name} in the wheel')
      tmp = paths[key] + '.tmp'
      with open(tmp, 'wb') as f:
        f.write(data)
      os.replace(tmp, paths[key])
  return paths


def tissue_labels(t1: np.ndarray, gm: np.ndarray, wm: np.ndarray
                 ) -> np.ndarray:
  """uint8 labels: 0 where T1 == 0, else 1 + argmax(CSF, GM, WM) with the
  probabilities on their 0..255 scale and CSF = 255 - GM - WM."""
  gm, wm = gm.astype(np.float32), wm.astype(np.float32)
  csf = 255.0 - gm - wm
  label = 1 + np.argmax(np.stack([csf, gm, wm], axis=-1), axis=-1)
  return np.where(t1 > 0, label, 0).astype(np.uint8)


def load(paths: dict[str, str]):
  """(T1 as float32, tissue labels, affine, the voxel index of x = 0 mm
  along axis 0, whether axis 0 runs left to right)."""
  import nibabel as nib  # pylint: disable=g-import-not-at-top
  from unet3d.preprocess import preprocessing as pp  # pylint: disable=g-import-not-at-top
  volumes = {k: nib.load(p) for k, p in paths.items()}
  affine = volumes['t1'].affine
  t1, gm, wm = (np.asarray(volumes[k].dataobj) for k in ('t1', 'gm', 'wm'))
  if pp.axcodes(affine)[0] not in 'LR':
    sys.exit(f'error: {paths["t1"]}: array axis 0 is not left-right')
  midline = int(round(np.linalg.solve(affine[:3, :3], -affine[:3, 3])[0]))
  return (t1.astype(np.float32), tissue_labels(t1, gm, wm), affine, midline,
          affine[0, 0] > 0)


def write_task(task_dir: str, title: str, labels: dict[str, str],
               cases: dict[str, tuple]) -> dict[str, list[int]]:
  """A Decathlon task folder of {name: (image, label, affine)} cases;
  returns their voxel counts per class."""
  from unet3d.preprocess import io  # pylint: disable=g-import-not-at-top
  shutil.rmtree(task_dir, ignore_errors=True)
  os.makedirs(os.path.join(task_dir, 'imagesTr'))
  os.makedirs(os.path.join(task_dir, 'labelsTr'))
  training, counts = [], {}
  for name, (image, label, affine) in cases.items():
    io.save_nifti(os.path.join(task_dir, 'imagesTr', name + '.nii.gz'),
                  image, affine)
    io.save_nifti(os.path.join(task_dir, 'labelsTr', name + '.nii.gz'),
                  label, affine)
    training.append({'image': f'./imagesTr/{name}.nii.gz',
                     'label': f'./labelsTr/{name}.nii.gz'})
    counts[name] = np.bincount(label.ravel(),
                               minlength=len(labels)).tolist()
  with open(os.path.join(task_dir, 'dataset.json'), 'w') as f:
    json.dump({'name': title, 'licence': 'MNI ICBM 2009a notice',
               'tensorImageSize': '3D', 'modality': {'0': 'T1'},
               'labels': labels, 'numTraining': len(cases),
               'training': training, 'test': []}, f, indent=1)
  return counts


def hemisphere_cases(paths: dict[str, str]) -> dict[str, tuple]:
  """The left and right hemispheres (split at x = 0 mm) as two cases of
  the 4 tissue classes."""
  from unet3d.preprocess import preprocessing as pp  # pylint: disable=g-import-not-at-top
  t1, label, affine, midline, left_to_right = load(paths)
  halves = {'left': slice(0, midline), 'right': slice(midline, None)}
  if not left_to_right:
    halves = {'left': slice(midline, None), 'right': slice(0, midline)}
  return {f'mni152_{side}': (t1[cut], label[cut],
                             pp.crop_affine(affine, [cut.start or 0, 0, 0]))
          for side, cut in halves.items()}

r"""Real MRI end to end: the MNI152 2009a T1 template and its tissue classes.

  python scripts/walkthrough_mni152.py [--work_dir=/tmp/mni152]

1. fetches nilearn's wheel from the package index (`pip download --no-deps
   nilearn`) and takes the MNI152 2009a T1 and its grey/white-matter maps
   from it; nothing of it is committed;
2. labels each brain voxel CSF (1), grey matter (2) or white matter (3) by
   the argmax of (1 - GM - WM, GM, WM); background where T1 == 0;
3. writes the left and right hemispheres of the one subject as two cases of
   a Medical Segmentation Decathlon task folder;
4. converts it (`data_preprocess/convert_decathlon.py`, 1 mm, z-score in the
   brain mask) and writes a split file: left hemisphere = train, right =
   val;
5. trains configs/mni152_walkthrough.yaml on the left hemisphere
   (`unet_main.py --mode=train`) and evaluates the whole right hemisphere
   (`unet_main.py --mode=eval`, sliding windows);
6. prints per-class dice and lists any PNG overlays the evaluation wrote.

A smooth template is easier than a real scan: held-out dice here says the
pipeline works end to end, not how a model does on patients. Licence of
the template: MNI's permissive notice (ICBM 2009a).
"""

import glob
import json
import os
import shutil
import subprocess
import sys
import time
import zipfile

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from absl import app  # pylint: disable=g-import-not-at-top
from absl import flags

from unet3d import errors

flags.DEFINE_string('work_dir', '/tmp/mni152_walkthrough',
                    'Where the wheel, task folder, records and model go.')
flags.DEFINE_string('config_file',
                    os.path.join(REPO, 'configs', 'mni152_walkthrough.yaml'),
                    'The training recipe.')
flags.DEFINE_string('params_override', None, 'Overrides of the recipe.')
flags.DEFINE_bool('fresh', True, 'Delete an earlier model in work_dir.')
FLAGS = flags.FLAGS

PREFIX = 'nilearn/datasets/data/'
FILES = {'t1': 'mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz',
         'gm': 'mni_icbm152_gm_tal_nlin_sym_09a_converted.nii.gz',
         'wm': 'mni_icbm152_wm_tal_nlin_sym_09a_converted.nii.gz'}
LABELS = {'0': 'background', '1': 'CSF', '2': 'grey_matter',
          '3': 'white_matter'}
TASK = 'Task00_MNI152'


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


def write_task(paths: dict[str, str], task_dir: str) -> dict[str, int]:
  """Left and right hemispheres (split at x = 0 mm) as two Decathlon
  cases; returns their voxel counts per class."""
  import nibabel as nib  # pylint: disable=g-import-not-at-top
  from unet3d.preprocess import io  # pylint: disable=g-import-not-at-top
  from unet3d.preprocess import preprocessing as pp  # pylint: disable=g-import-not-at-top
  volumes = {k: nib.load(p) for k, p in paths.items()}
  affine = volumes['t1'].affine
  t1, gm, wm = (np.asarray(volumes[k].dataobj) for k in ('t1', 'gm', 'wm'))
  label = tissue_labels(t1, gm, wm)
  if pp.axcodes(affine)[0] not in 'LR':
    sys.exit(f'error: {paths["t1"]}: array axis 0 is not left-right')
  # Voxel index of x = 0 mm along axis 0; x < 0 is the left hemisphere.
  midline = int(round(np.linalg.solve(affine[:3, :3],
                                      -affine[:3, 3])[0]))
  halves = {'left': slice(0, midline), 'right': slice(midline, None)}
  if affine[0, 0] < 0:  # axis 0 runs right to left
    halves = {'left': slice(midline, None), 'right': slice(0, midline)}
  shutil.rmtree(task_dir, ignore_errors=True)
  os.makedirs(os.path.join(task_dir, 'imagesTr'))
  os.makedirs(os.path.join(task_dir, 'labelsTr'))
  training, counts = [], {}
  for side, cut in halves.items():
    name = f'mni152_{side}'
    start = [cut.start or 0, 0, 0]
    half_affine = pp.crop_affine(affine, start)
    io.save_nifti(os.path.join(task_dir, 'imagesTr', name + '.nii.gz'),
                  t1[cut].astype(np.float32), half_affine)
    io.save_nifti(os.path.join(task_dir, 'labelsTr', name + '.nii.gz'),
                  label[cut], half_affine)
    training.append({'image': f'./imagesTr/{name}.nii.gz',
                     'label': f'./labelsTr/{name}.nii.gz'})
    counts[name] = np.bincount(label[cut].ravel(), minlength=4).tolist()
  with open(os.path.join(task_dir, 'dataset.json'), 'w') as f:
    json.dump({'name': 'MNI152 2009a tissue classes (walkthrough)',
               'licence': 'MNI ICBM 2009a notice', 'tensorImageSize': '3D',
               'modality': {'0': 'T1'}, 'labels': LABELS,
               'numTraining': 2, 'training': training, 'test': []}, f,
              indent=1)
  return counts


def main(argv):
  del argv
  start = time.perf_counter()
  timings = {}
  work = os.path.abspath(FLAGS.work_dir)
  task_dir = os.path.join(work, TASK)
  records = os.path.join(work, 'records')
  model_dir = os.path.join(work, 'model')
  split_file = os.path.join(work, 'hemispheres.json')

  step('1/5 fetch the MNI152 template from the nilearn wheel')
  paths = fetch(work)
  timings['fetch_s'] = round(time.perf_counter() - start, 1)

  step('2/5 tissue labels; left and right hemispheres as a Decathlon task')
  counts = write_task(paths, task_dir)
  print(json.dumps({'task': task_dir, 'class_voxel_counts': counts}))

  step('3/5 convert (1 mm, z-score within the brain mask)')
  t = time.perf_counter()
  run([sys.executable, os.path.join(REPO, 'data_preprocess',
                                    'convert_decathlon.py'),
       f'--input_path={task_dir}', f'--output_path={records}',
       '--overwrite', '--target_spacing=original', '--nonzero_mask',
       '--num_shards=1', '--validation_fraction=0'])
  with open(split_file, 'w') as f:
    json.dump({'num_folds': 1, 'folds': [{'train': ['mni152_left'],
                                          'val': ['mni152_right']}]}, f)
  timings['convert_s'] = round(time.perf_counter() - t, 1)

  common = [f'--model_dir={model_dir}',
            f'--training_file_pattern={records}/*.tfrecord',
            f'--eval_file_pattern={records}/*.tfrecord']
  override = f'data.split_file={split_file},data.fold=0'
  if FLAGS.params_override:
    override += ',' + FLAGS.params_override
  if FLAGS.fresh:
    shutil.rmtree(model_dir, ignore_errors=True)

  step('4/5 train on the left hemisphere')
  t = time.perf_counter()
  run([sys.executable, os.path.join(REPO, 'unet_main.py'), '--mode=train',
       f'--config_file={FLAGS.config_file}', f'--params_override={override}']
      + common)
  timings['train_s'] = round(time.perf_counter() - t, 1)

  step('5/5 evaluate the right hemisphere')
  t = time.perf_counter()
  run([sys.executable, os.path.join(REPO, 'unet_main.py'), '--mode=eval']
      + common)
  timings['eval_s'] = round(time.perf_counter() - t, 1)

  with open(os.path.join(model_dir, 'eval_results.json')) as f:
    report = json.load(f)
  overlays = sorted(glob.glob(os.path.join(model_dir, '**', '*.png'),
                              recursive=True))
  print('\noverlays: ' + (', '.join(overlays) if overlays else
                          'none written by this version of --mode=eval'))
  timings['total_s'] = round(time.perf_counter() - start, 1)
  print(json.dumps({
      'per_class_dice': {k: v.get('dice') for k, v in
                         report['per_class'].items()},
      'mean_foreground_dice': report.get('mean_foreground_dice'),
      'step': report.get('step'), 'num_eval_cases': report.get('num_cases'),
      **timings, 'report': os.path.join(model_dir, 'eval_results.json')}))


if __name__ == '__main__':
  app.run(errors.one_line_errors(main))

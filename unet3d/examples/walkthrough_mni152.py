r"""Real MRI end to end: the MNI152 2009a T1 template and its tissue classes.

  python -m unet3d.examples.walkthrough_mni152 [--work_dir=/tmp/mni152]

1. fetches nilearn's wheel from the package index (`pip download --no-deps
   nilearn`) and takes the MNI152 2009a T1 and its grey/white-matter maps
   from it; nothing of it is committed;
2. labels each brain voxel CSF (1), grey matter (2) or white matter (3) by
   the argmax of (1 - GM - WM, GM, WM); background where T1 == 0;
3. writes the left and right hemispheres of the one subject as two cases of
   a Medical Segmentation Decathlon task folder;
4. converts it (`unet3d-convert decathlon`, 1 mm, z-score in the
   brain mask) and writes a split file: left hemisphere = train, right =
   val;
5. trains configs/mni152_walkthrough.yaml on the left hemisphere
   (`unet3d --mode=train`) and evaluates the whole right hemisphere
   (`unet3d --mode=eval`, sliding windows);
6. prints per-class dice and lists any PNG overlays the evaluation wrote.

A smooth template is easier than a real scan: held-out dice here says the
pipeline works end to end, not how a model does on patients. Licence of
the template: MNI's permissive notice (ICBM 2009a).
"""

import glob
import json
import os
import shutil
import sys
import time

from absl import app
from absl import flags

from unet3d import cli
from unet3d import errors
from unet3d import recipes
from unet3d.examples.mni152_data import (fetch, hemisphere_cases,
                                         run, step, write_task, LABELS)

flags.DEFINE_string('work_dir', '/tmp/mni152_walkthrough',
                    'Where the wheel, task folder, records and model go.')
flags.DEFINE_string('config_file',
                    recipes.recipe('mni152_walkthrough.yaml'),
                    'The training recipe.')
flags.DEFINE_string('params_override', None, 'Overrides of the recipe.')
flags.DEFINE_bool('fresh', True, 'Delete an earlier model in work_dir.')
FLAGS = flags.FLAGS

TASK = 'Task00_MNI152'


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
  counts = write_task(task_dir, 'MNI152 2009a tissue classes (walkthrough)',
                      LABELS, hemisphere_cases(paths))
  print(json.dumps({'task': task_dir, 'class_voxel_counts': counts}))

  step('3/5 convert (1 mm, z-score within the brain mask)')
  t = time.perf_counter()
  run([sys.executable, '-m', 'unet3d.cli.convert', 'decathlon',
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
  run([sys.executable, '-m', 'unet3d.cli.main', '--mode=train',
       f'--config_file={FLAGS.config_file}', f'--params_override={override}']
      + common)
  timings['train_s'] = round(time.perf_counter() - t, 1)

  step('5/5 evaluate the right hemisphere')
  t = time.perf_counter()
  run([sys.executable, '-m', 'unet3d.cli.main', '--mode=eval']
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


def run_main() -> None:
  cli.describe_in_help(__name__)
  app.run(errors.one_line_errors(main))


if __name__ == '__main__':
  run_main()

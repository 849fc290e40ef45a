r"""Does a planned recipe beat the demo recipe on real MRI? Prints JSON.

  python -m unet3d.examples.plan_mni152 [--work_dir=/tmp/mni152_plan] \
      [--budget=cpu2] [--train_steps=400]

1. fetches the MNI152 2009a T1 template and its grey/white-matter maps from
   nilearn's wheel (see mni152_data.py);
2. labels six lateralised tissue classes (CSF, grey and white matter, each
   _L and _R: left of x = 0 mm or right of it) and cuts the brain into four
   coronal slabs, each holding both hemispheres, as a Decathlon task;
3. converts it (1 mm, z-score within the brain mask; half the slabs held out
   as val-*);
4. plans a recipe from the converted fingerprint
   (`unet3d --mode=plan --budget=...`);
5. trains and evaluates the planned recipe and configs/demo.yaml (with
   num_classes 7 and whole-volume evaluation), both for --train_steps steps,
   on the same records;
6. prints both recipes' held-out dice per class and their means (with
   --ablation also the planned recipe without its laterality rule).

The demo recipe flips every axis without knowing left from right, so a flip
over the left-right axis teaches that left and right are one class; the
plan reads the _L/_R names and swaps the pairs when it flips.
"""

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
from unet3d.examples.mni152_data import (LATERAL_LABELS, fetch,
                                         lateral_slab_cases, run, step,
                                         write_task)

flags.DEFINE_string('work_dir', '/tmp/mni152_plan',
                    'Where the wheel, task, records and models go.')
flags.DEFINE_string('budget', 'cpu2', 'The plan\'s budget.')
flags.DEFINE_integer('train_steps', 400, 'Steps of both recipes (the demo '
                     'recipe\'s own count by default).')
flags.DEFINE_integer('slabs', 4, 'Coronal slabs (cases); half are held out.')
flags.DEFINE_bool('ablation', False, 'Also train the planned recipe without '
                  'its laterality rule (flips that do not swap the pairs).')
FLAGS = flags.FLAGS


def _dice(model_dir: str) -> dict:
  with open(os.path.join(model_dir, 'eval_results.json')) as f:
    report = json.load(f)
  return {'mean_foreground_dice': report.get('mean_foreground_dice'),
          'per_class_dice': {k: v.get('dice') for k, v in
                             report['per_class'].items()},
          'step': report.get('step')}


def main(argv):
  del argv
  work = os.path.abspath(FLAGS.work_dir)
  task_dir = os.path.join(work, 'Task00_MNI152_lateral')
  records = os.path.join(work, 'records')
  plan_file = os.path.join(work, f'plan_{FLAGS.budget}.yaml')
  main_py = ['-m', 'unet3d.cli.main']  # the `unet3d` command
  timings = {}

  step('1/5 fetch the MNI152 template from the nilearn wheel')
  paths = fetch(work)

  step(f'2/5 {FLAGS.slabs} coronal slabs with left/right tissue classes')
  counts = write_task(task_dir, 'MNI152 2009a lateralised tissue classes',
                      LATERAL_LABELS, lateral_slab_cases(paths, FLAGS.slabs))
  print(json.dumps({'task': task_dir, 'class_voxel_counts': counts}))

  step('3/5 convert (1 mm, z-score within the brain mask)')
  run([sys.executable, '-m', 'unet3d.cli.convert', 'decathlon',
       f'--input_path={task_dir}', f'--output_path={records}', '--overwrite',
       '--target_spacing=original', '--nonzero_mask', '--num_shards=1',
       '--validation_fraction=0.5'])

  step(f'4/5 plan for {FLAGS.budget}')
  t = time.perf_counter()
  run([sys.executable, *main_py, '--mode=plan', f'--data_dir={records}',
       f'--budget={FLAGS.budget}', f'--plan_file={plan_file}'])
  timings['plan_s'] = round(time.perf_counter() - t, 1)

  step(f'5/5 train and evaluate both recipes for {FLAGS.train_steps} steps')
  runs = {
      'planned': ['--config_file=' + plan_file,
                  f'--params_override=train_steps={FLAGS.train_steps}'],
      'demo': ['--config_file=' + recipes.recipe('demo.yaml'),
               f'--training_file_pattern={records}/train-*.tfrecord',
               f'--eval_file_pattern={records}/val-*.tfrecord',
               f'--params_override=num_classes={len(LATERAL_LABELS)},'
               f'train_steps={FLAGS.train_steps},'
               'data.eval_mode=whole_volume'],
  }
  if FLAGS.ablation:
    runs['planned_without_swaps'] = [
        '--config_file=' + plan_file,
        f'--params_override=train_steps={FLAGS.train_steps},'
        'data.augmentation.left_right_label_pairs=,'
        'data.augmentation.left_right_axis=']
  results = {}
  for name, args in runs.items():
    model_dir = os.path.join(work, name)
    shutil.rmtree(model_dir, ignore_errors=True)
    t = time.perf_counter()
    run([sys.executable, *main_py, '--mode=train_and_eval',
         f'--model_dir={model_dir}'] + args)
    timings[f'{name}_s'] = round(time.perf_counter() - t, 1)
    results[name] = _dice(model_dir)
  print(json.dumps({'train_steps': FLAGS.train_steps, 'budget': FLAGS.budget,
                    'plan_file': plan_file, **results, **timings}, indent=1))


def run_main() -> None:
  cli.describe_in_help(__name__)
  app.run(errors.one_line_errors(main))


if __name__ == '__main__':
  run_main()

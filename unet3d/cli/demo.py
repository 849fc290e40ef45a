"""The demo, end to end, on synthetic data the project makes itself.

  unet3d-demo [--work_dir=demo_output]

1. writes synthetic MRI-like NIfTI volumes as a Decathlon task folder;
2. converts them to TFRecords with the same converter real MSD data uses;
3. trains and evaluates a small 3D U-Net (configs/demo.yaml, installed with
   the package) on the CPU;
4. prints per-class dice on held-out volumes; the JSON report is
   `<work_dir>/model/eval_results.json`, per-case tables (CSV, JSON) and PNG
   overlays are in `<work_dir>/model/eval/`.

The data is synthetic, not medical data.
"""

import json
import os
import shutil
import time

from unet3d import errors
from unet3d import recipes
from unet3d import startup

startup.prepare_environment()  # before TensorFlow is imported

from absl import app  # pylint: disable=g-import-not-at-top
from absl import flags

from unet3d import cli  # pylint: disable=g-import-not-at-top

flags.DEFINE_string('work_dir', 'demo_output',
                    'Where the NIfTI task, TFRecords and model go.')
flags.DEFINE_string('config_file', recipes.recipe('demo.yaml'),
                    'The demo recipe.')
flags.DEFINE_string('params_override', None, 'Overrides of the recipe.')
flags.DEFINE_integer('num_cases', 30, 'Synthetic cases to make.')
flags.DEFINE_float('validation_fraction', 0.2,
                   'Share of cases held out for evaluation.')
flags.DEFINE_bool('fresh', True, 'Delete an earlier model in work_dir first.')
FLAGS = flags.FLAGS


def main(argv):
  del argv
  startup.import_tensorflow()
  # pylint: disable=g-import-not-at-top
  from unet3d import config
  from unet3d.evaluation import report as report_lib
  from unet3d.preprocess import datasets
  from unet3d.preprocess import synthetic
  from unet3d.training import trainer
  # pylint: enable=g-import-not-at-top

  start = time.perf_counter()
  task_dir = os.path.join(FLAGS.work_dir, 'Task00_SyntheticDemo')
  records_dir = os.path.join(FLAGS.work_dir, 'tfrecords')
  model_dir = os.path.join(FLAGS.work_dir, 'model')

  print(f'[1/3] writing {FLAGS.num_cases} synthetic NIfTI cases to {task_dir}')
  if os.path.isdir(task_dir):
    shutil.rmtree(task_dir)
  synthetic.write_demo_decathlon_task(task_dir, num_cases=FLAGS.num_cases,
                                      seed=0)

  print(f'[2/3] converting to TFRecords in {records_dir}')
  summary = datasets.convert_decathlon(
      task_dir, records_dir, overwrite=True, num_shards=4,
      validation_fraction=FLAGS.validation_fraction, seed=0)
  del summary

  if FLAGS.fresh and os.path.isdir(model_dir):
    shutil.rmtree(model_dir)
  cfg = config.build_config(
      FLAGS.config_file, FLAGS.params_override,
      {'model_dir': model_dir,
       'training_file_pattern': os.path.join(records_dir, 'train-*'),
       'eval_file_pattern': os.path.join(records_dir, 'val-*')})
  print(f'[3/3] training {cfg.model.name} for {cfg.train_steps} steps on the '
        f'CPU, then evaluating held-out cases')
  report = trainer.train_and_evaluate(cfg)
  elapsed = time.perf_counter() - start

  print('\nheld-out synthetic volumes:')
  print(report_lib.format_report(report))
  print(json.dumps({'mean_foreground_dice': report['mean_foreground_dice'],
                    'num_eval_cases': report['num_cases'],
                    'seconds': round(elapsed, 1),
                    'report': os.path.join(model_dir,
                                          report_lib.EVAL_RESULTS_FILE),
                    'report_dir': report.get('report_dir')}))


def run_main() -> None:
  """The console command `unet3d-demo`."""
  cli.describe_in_help(__name__)
  app.run(errors.one_line_errors(main))


if __name__ == '__main__':
  run_main()

"""unet3d entry point: flags -> config -> the mode's function.

  python unet_main.py --mode=train_and_eval --config_file=configs/demo.yaml \
      --model_dir=/tmp/run --training_file_pattern='data/train-*.tfrecord'
  python unet_main.py --mode=predict --model_dir=/tmp/run \
      --input='scans/*.nii.gz' --output_dir=/tmp/seg
  python unet_main.py --mode=eval --model_dir=/tmp/fold0,/tmp/fold1  # ensemble
"""

import os
import sys

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

from absl import app  # pylint: disable=g-import-not-at-top
from absl import flags
from absl import logging

MODES = ('train', 'eval', 'train_and_eval', 'export', 'predict', 'summary')

flags.DEFINE_enum('mode', 'train_and_eval', MODES, 'What to run.')
flags.DEFINE_string('config_file', None, 'A YAML config file.')
flags.DEFINE_string('params_override', None,
                    "YAML/JSON string or 'a.b=c,d=e' applied after the file.")
flags.DEFINE_string('model_dir', None,
                    'Checkpoints, summaries, params.yaml. Several, comma-'
                    'separated: an ensemble for eval, predict and export '
                    '(inference.ensemble; reports go to the first).')
flags.DEFINE_string('training_file_pattern', None, 'Training TFRecord glob.')
flags.DEFINE_string('eval_file_pattern', None, 'Evaluation TFRecord glob.')
flags.DEFINE_enum('distribution_strategy', None,
                  ['tpu', 'mirrored', 'multi_worker', 'cpu'],
                  'How to distribute training.')
flags.DEFINE_integer('num_gpus', None, 'GPUs for the mirrored strategy.')
flags.DEFINE_string('tpu', None, 'TPU name or address.')
flags.DEFINE_integer('steps_per_loop', None,
                     'Training steps inside one tf.function call.')
flags.DEFINE_string('input', None,
                    'predict: a NIfTI file, a folder or a glob (comma-'
                    'separated for several); predict.input_pattern.')
flags.DEFINE_string('output_dir', None,
                    'predict: where segmentations go; predict.output_dir.')
FLAGS = flags.FLAGS

# Flags that set a config key of the same (dotted) name.
_FLAG_TO_KEY = {
    'model_dir': 'model_dir',
    'training_file_pattern': 'training_file_pattern',
    'eval_file_pattern': 'eval_file_pattern',
    'distribution_strategy': 'distribution_strategy',
    'num_gpus': 'num_gpus',
    'tpu': 'tpu',
}


def resolve_config(argv_flags):
  """Builds the run's config; eval, export and predict start from
  model_dir/params.yaml."""
  from unet3d import config  # pylint: disable=g-import-not-at-top
  from unet3d import run_dir  # pylint: disable=g-import-not-at-top
  flag_values = {key: getattr(argv_flags, name)
                 for name, key in _FLAG_TO_KEY.items()}
  overrides = {k: v for k, v in flag_values.items() if v is not None}
  if argv_flags.steps_per_loop is not None:
    overrides['train'] = {'steps_per_loop': argv_flags.steps_per_loop}
  predict = {k: v for k, v in (('input_pattern', argv_flags.input),
                               ('output_dir', argv_flags.output_dir))
             if v is not None}
  if predict:
    overrides['predict'] = predict
  members = [d.strip() for d in (argv_flags.model_dir or '').split(',')
             if d.strip()]
  if len(members) > 1:  # an ensemble; the first folder holds the reports
    overrides['model_dir'] = members[0]
    overrides['inference'] = {'ensemble': members}
  base = None
  if argv_flags.mode in ('eval', 'export', 'predict') and members:
    base = run_dir.load_params(members[0])
  return config.build_config(argv_flags.config_file,
                             argv_flags.params_override,
                             overrides, base=base)


def run(mode: str, cfg) -> dict:
  """Runs one mode; returns its report."""
  # pylint: disable=g-import-not-at-top
  if mode == 'train':
    from unet3d.training import trainer
    return trainer.train(cfg)
  if mode == 'eval':
    from unet3d.evaluation import evaluator
    return evaluator.evaluate(cfg)
  if mode == 'train_and_eval':
    from unet3d.training import trainer
    return trainer.train_and_evaluate(cfg)
  if mode == 'export':
    from unet3d.inference import export
    path = export.export_model(cfg)
    print(f'exported SavedModel to {path}')
    return {'export_dir': path}
  if mode == 'predict':
    from unet3d.inference import predict
    report = predict.predict_files(cfg)
    print(predict.format_summary(report))
    predict.raise_for_failures(report)
    return report
  if mode == 'summary':
    from unet3d import distribute
    from unet3d import models
    from unet3d.models import complexity
    distribute.set_precision_policy(cfg)
    model = models.build_model(cfg)
    info = complexity.model_summary(
        model, list(cfg.input_image_size) + [cfg.num_channels])
    print(complexity.format_summary(info))
    return info
  raise ValueError(f'--mode: unknown mode {mode!r}')


def print_report(report: dict) -> None:
  from unet3d.evaluation import report as report_lib  # pylint: disable=g-import-not-at-top
  print(f"evaluation at step {report.get('step')}:")
  print(report_lib.format_report(report))


def main(argv):
  del argv
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from unet3d.config import ConfigError  # pylint: disable=g-import-not-at-top
  cfg = None
  try:
    cfg = resolve_config(FLAGS)
    report = run(FLAGS.mode, cfg)
  except (ConfigError, ValueError, FileNotFoundError) as e:
    logging.debug('failed', exc_info=True)
    print(f'error: {e}', file=sys.stderr)
    sys.exit(1)
  except tf.errors.OpError as e:  # a corrupt or mismatched input shard
    logging.debug('failed', exc_info=True)
    from unet3d.input import pipeline  # pylint: disable=g-import-not-at-top
    message = (pipeline.describe_read_error(cfg, e) if cfg else
               e.message.strip().splitlines()[0])
    print(f'error: {message}', file=sys.stderr)
    sys.exit(1)
  if FLAGS.mode in ('eval', 'train_and_eval'):
    print_report(report)


if __name__ == '__main__':
  app.run(main)

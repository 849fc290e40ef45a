r"""The `unet3d` command: flags -> config -> the mode's function.

  unet3d --mode=train_and_eval --config_file=configs/demo.yaml \
      --model_dir=/tmp/run --training_file_pattern='data/train-*.tfrecord'
  unet3d --mode=predict --model_dir=/tmp/run \
      --input='scans/*.nii.gz' --output_dir=/tmp/seg
  unet3d --mode=eval --model_dir=/tmp/fold0,/tmp/fold1  # ensemble
  unet3d --mode=plan --data_dir=/tmp/records --budget=gpu16g
  unet3d --mode=evaluate_folder --label_dir=labelsTs \
      --prediction_dir=/tmp/seg --output_dir=/tmp/scores
  unet3d --version

`python unet_main.py` and `python -m unet3d.cli.main` take the same flags,
and the TF Model Garden UNet3D's (MODEL_GARDEN_FLAGS: --epochs,
--lr_init_value, ... with their meaning there, or one line naming ours).
"""

import signal
import sys

from absl import app
from absl import flags
from absl import logging

import unet3d
from unet3d import cli
from unet3d import startup

MODES = ('train', 'eval', 'train_and_eval', 'export', 'predict', 'summary',
         'plan', 'evaluate_folder')

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
flags.DEFINE_string('num_gpus', None, 'GPUs for the mirrored strategy: a '
                    'count (4) or GPU ids (0,2,3).')
flags.DEFINE_string('tpu', None, 'TPU name or address.')
flags.DEFINE_integer('steps_per_loop', None,
                     'Training steps inside one tf.function call.')
flags.DEFINE_string('checkpoint', 'latest',
                    'eval, predict, export: latest, best, or a checkpoint '
                    'path.')
flags.DEFINE_bool('overwrite', False,
                  'Use this config even where model_dir/params.yaml '
                  'describes another model.')
flags.DEFINE_bool('benchmark', False,
                  'train: time steps with the input pipeline and print JSON '
                  '(train.benchmark_steps after train.benchmark_warmup_steps'
                  '); writes nothing.')
flags.DEFINE_string('input', None,
                    'predict: a NIfTI file, a folder or a glob (comma-'
                    'separated for several); predict.input_pattern.')
flags.DEFINE_string('output_dir', None,
                    'predict: where segmentations go; predict.output_dir. '
                    'evaluate_folder: where the report goes.')
flags.DEFINE_string('label_dir', None, 'evaluate_folder: the label NIfTIs.')
flags.DEFINE_string('prediction_dir', None,
                    'evaluate_folder: the segmentations to score (NIfTI).')
flags.DEFINE_string('image_dir', None, 'evaluate_folder: images for the '
                    'overlays (default: overlays on the label).')
flags.DEFINE_string('dataset_json', None, 'evaluate_folder: class names '
                    '(default <label_dir>/../dataset.json when present).')
flags.DEFINE_bool('allow_missing_predictions', False, 'evaluate_folder: '
                  'score a label without prediction as an empty prediction.')
flags.DEFINE_enum('export_format', None, ['saved_model', 'onnx', 'openvino'],
                  'export: also convert the patches model to ONNX or '
                  'OpenVINO IR (the export extra); export.format.')
flags.DEFINE_string('data_dir', None,
                    'plan: the converter\'s output folder (its dataset.json).')
flags.DEFINE_string('budget', 'cpu2',
                    'plan: what training may spend: cpu2, cpu8, gpu8g, '
                    'gpu11g, gpu16g, gpu24g, gpu40g or gpu80g.')
flags.DEFINE_string('plan_file', None,
                    'plan: where the recipe goes (default '
                    '<data_dir>/plan_<budget>.yaml).')
flags.DEFINE_float('train_hours', None,
                   'plan: hours of training a CPU budget sizes train_steps '
                   'for (default: the budget\'s).')
flags.DEFINE_bool('calibrate', False,
                  'plan: CPU budgets choose their spacing by training each '
                  'candidate briefly (a quarter of the hours) and scoring '
                  'held-out dice, instead of by the coverage rule alone.')
flags.DEFINE_bool('version', False, 'Print "unet3d <version>" and exit.')
FLAGS = flags.FLAGS

# The flags of the TF Model Garden UNet3D entry points (TF2
# official/vision/segmentation/unet_main.py; TF1 tpu models/official/unet3d
# unet_main.py and tpu_executor.py), in ONE table: flag -> (type, what it
# sets here, help). A dotted key takes the value; `train_steps` from
# `epochs` multiplies by the steps per epoch (train_item_count //
# train_batch_size, as there); `checkpoint` picks eval's checkpoint; None
# refuses the flag with its help, which names our equivalent.
MODEL_GARDEN_FLAGS = {
    'epochs': ('integer', 'train_steps',
               'Model Garden: training epochs; train_steps = epochs * '
               '(train_item_count // train_batch_size).'),
    'checkpoint_interval': ('integer', 'train.checkpoint_every_n_steps',
                            'Model Garden: steps between two checkpoints.'),
    'eval_checkpoint_dir': ('string', 'checkpoint',
                            'Model Garden: eval restores the latest '
                            'checkpoint of this folder (--checkpoint).'),
    'lr_init_value': ('float', 'init_learning_rate',
                      'Model Garden: the initial learning rate.'),
    'lr_decay_rate': ('float', 'lr_decay_rate',
                      'Model Garden: the learning-rate decay rate.'),
    'iterations_per_loop': ('integer', 'train.steps_per_loop',
                            'TF1 Model Garden: training steps per TPU loop '
                            '(--steps_per_loop).'),
    'num_cores': ('integer', None,
                  'not a flag here; the cores come from --tpu=NAME '
                  '(replicas = cores / prod(input_partition_dims))'),
    'use_tpu': ('bool', None,
                'not a flag here; set --distribution_strategy=tpu (and '
                '--tpu=NAME)'),
    'min_eval_interval': ('integer', None,
                          'not a flag here; train_and_eval evaluates every '
                          'train.eval_every_n_steps steps (--params_override='
                          'train.eval_every_n_steps=N)'),
    'eval_timeout': ('integer', None,
                     'not a flag here; --mode=eval evaluates the latest (or '
                     '--checkpoint) checkpoint once, without waiting'),
}
for _name, (_kind, _key, _help) in MODEL_GARDEN_FLAGS.items():
  getattr(flags, f'DEFINE_{_kind}')(_name, None, _help)

# Flags that set a config key of the same (dotted) name.
_FLAG_TO_KEY = {
    'model_dir': 'model_dir',
    'training_file_pattern': 'training_file_pattern',
    'eval_file_pattern': 'eval_file_pattern',
    'distribution_strategy': 'distribution_strategy',
    'tpu': 'tpu',
}
# Modes that use a trained run: they start from its params.yaml.
_FROM_RUN = ('eval', 'export', 'predict')


def resolve_config(argv_flags):
  """Builds the run's config.

  eval, export and predict start from model_dir/params.yaml; a config file
  or override that changes the architecture it records is refused unless
  --overwrite. Training refuses a model_dir whose params.yaml describes
  another model, unless --overwrite.
  """
  # pylint: disable=g-import-not-at-top
  from unet3d import config
  from unet3d import run_dir
  # pylint: enable=g-import-not-at-top
  model_garden = model_garden_flags(argv_flags)
  # (dotted key, value) of every flag given, later ones winning: the Model
  # Garden's names after ours. --epochs needs the resolved config (below);
  # --eval_checkpoint_dir picks the checkpoint, not a key.
  items = [(key, getattr(argv_flags, name))
           for name, key in _FLAG_TO_KEY.items()]
  items += [('num_gpus', None if argv_flags.num_gpus is None else
             config.parse_num_gpus(argv_flags.num_gpus)),
            ('train.steps_per_loop', argv_flags.steps_per_loop),
            ('predict.input_pattern', argv_flags.input),
            ('predict.output_dir', argv_flags.output_dir),
            ('export.format', argv_flags.export_format)]
  items += [(key, value) for key, value in model_garden.items()
            if key not in ('train_steps', 'checkpoint')]
  members = [d.strip() for d in (argv_flags.model_dir or '').split(',')
             if d.strip()]
  if len(members) > 1:  # an ensemble; the first folder holds the reports
    items += [('model_dir', members[0]), ('inference.ensemble', members)]
  overrides = config.nest_dotted(
      [(key, value) for key, value in items if value is not None], 'flags')
  saved = run_dir.load_params(members[0]) if members else None
  from_run = argv_flags.mode in _FROM_RUN
  cfg = config.build_config(argv_flags.config_file,
                            argv_flags.params_override, overrides,
                            base=saved if from_run else None)
  if not argv_flags.overwrite:
    what = ('--config_file/--params_override' if from_run else
            'the config of this run')
    run_dir.check_same_model(cfg, saved, what)
  if 'train_steps' in model_garden:
    cfg = config.merge(cfg, {'train_steps': epochs_to_steps(
        model_garden['train_steps'], cfg)})
  return cfg


def model_garden_flags(argv_flags) -> dict:
  """{what it sets (MODEL_GARDEN_FLAGS): value} of the Model Garden flags
  given; a refused one raises ConfigError with its one line."""
  # pylint: disable=g-import-not-at-top
  from unet3d.config import ConfigError
  given = {}
  for name, (_, key, help_text) in MODEL_GARDEN_FLAGS.items():
    value = getattr(argv_flags, name)
    if value is None:
      continue
    if key is None:
      raise ConfigError(f'--{name}: {help_text}')
    given[key] = value
  return given


def epochs_to_steps(epochs: int, cfg) -> int:
  """--epochs as the Model Garden counts them: epochs * (train_item_count
  // train_batch_size)."""
  from unet3d.config import ConfigError  # pylint: disable=g-import-not-at-top
  per_epoch = cfg.train_item_count // cfg.train_batch_size
  if epochs < 1 or per_epoch < 1:
    raise ConfigError(
        f'--epochs: needs epochs >= 1 and train_item_count (cases per epoch, '
        f'now {cfg.train_item_count}) >= train_batch_size '
        f'({cfg.train_batch_size}); or set train_steps')
  return epochs * per_epoch


def checkpoint_flag(argv_flags) -> str:
  """eval, predict, export's checkpoint: --checkpoint, or the latest of
  --eval_checkpoint_dir (the Model Garden's flag)."""
  if argv_flags.eval_checkpoint_dir is None:
    return argv_flags.checkpoint
  from unet3d import run_dir  # pylint: disable=g-import-not-at-top
  return run_dir.find_checkpoint(argv_flags.eval_checkpoint_dir, 'latest')


def run(mode: str, cfg, checkpoint: str = 'latest',
        benchmark: bool = False, asked_for_strategy: bool = False) -> dict:
  """Runs one mode; returns its report."""
  # pylint: disable=g-import-not-at-top
  if mode == 'train' and benchmark:
    from unet3d.training import benchmark as benchmark_lib
    return benchmark_lib.run_benchmark(cfg)
  if mode == 'train':
    from unet3d.training import trainer
    return trainer.train(cfg)
  if mode == 'eval':
    from unet3d.evaluation import evaluator
    return evaluator.evaluate(cfg, checkpoint=checkpoint)
  if mode == 'train_and_eval':
    from unet3d.training import trainer
    return trainer.train_and_evaluate(cfg)
  if mode == 'export':
    from unet3d.inference import export
    path = export.export_model(cfg, checkpoint)
    print(f'exported SavedModel to {path}')
    if cfg.export.format != 'saved_model':
      print(f'with the patches model as {cfg.export.format} beside it '
            '(export_info.json: formats)')
    return {'export_dir': path}
  if mode == 'predict':
    from unet3d.inference import predict
    from unet3d.inference import predict_report
    # The training strategy of params.yaml (a TPU, say) only when asked for.
    strategy = None
    if asked_for_strategy:
      from unet3d import distribute
      strategy = distribute.build_strategy(cfg, training=False)
    report = predict.predict_files(cfg, checkpoint, strategy)
    print(predict_report.format_summary(report))
    predict_report.raise_for_failures(report)
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


def plan(argv_flags) -> dict:
  """--mode=plan: writes the recipe and says how to train it."""
  from unet3d.planning import run as plan_run  # pylint: disable=g-import-not-at-top
  if not argv_flags.data_dir:
    raise ValueError('--data_dir: required with --mode=plan (the converter\'s '
                     'output folder)')
  result = plan_run.plan_dataset(argv_flags.data_dir, argv_flags.budget,
                                 argv_flags.plan_file, argv_flags.train_hours,
                                 calibrate=argv_flags.calibrate)
  for warning in result['warnings']:
    logging.warning('plan: %s', warning)
  print(f"wrote {result['plan_file']}\ntrain it with:\n  unet3d "
        f"--mode=train_and_eval --config_file={result['plan_file']} "
        '--model_dir=<run folder>')
  return result


def report_header(report: dict) -> str:
  """`evaluation at step N:`; an ensemble (no step of its own) names its
  members' steps."""
  members = report.get('ensemble')
  if members:
    steps = ', '.join(str(m.get('step')) for m in members)
    return f'evaluation of an ensemble of {len(members)} at steps {steps}:'
  return f"evaluation at step {report.get('step')}:"


def print_report(report: dict) -> None:
  # pylint: disable=g-import-not-at-top
  from unet3d.evaluation import report as report_lib
  from unet3d.evaluation import volumes_2d
  # pylint: enable=g-import-not-at-top
  print(report_header(report))
  print(report_lib.format_report(report))
  per_volume = volumes_2d.format_per_volume(report)
  if per_volume:
    print(per_volume)


def _fail(message: str, code: int = 1) -> None:
  print(f'error: {message}', file=sys.stderr)
  sys.exit(code)


def main(argv):
  del argv
  if FLAGS.version:
    print(f'unet3d {unet3d.__version__}')
    return
  tf = startup.import_tensorflow()
  # pylint: disable=g-import-not-at-top
  from unet3d import errors
  from unet3d.errors import ConfigError, Interrupted, RunError, StartupError
  from unet3d.input import pipeline
  # pylint: enable=g-import-not-at-top
  cfg = None
  try:
    if FLAGS.mode == 'plan':
      plan(FLAGS)
      return
    cfg = resolve_config(FLAGS)
    if FLAGS.mode == 'evaluate_folder':
      from unet3d.evaluation import folder  # pylint: disable=g-import-not-at-top
      print(folder.format_summary(folder.evaluate_folder(
          cfg, folder.options_from_flags(FLAGS, cfg))))
      return
    report = run(FLAGS.mode, cfg, checkpoint_flag(FLAGS), FLAGS.benchmark,
                 asked_for_strategy=bool(FLAGS.distribution_strategy or
                                         FLAGS.tpu))
  except Interrupted as e:
    logging.debug('interrupted', exc_info=True)
    _fail(str(e), 128 + e.signal_number)
  except (ConfigError, RunError, StartupError, ValueError,
          FileNotFoundError) as e:
    logging.debug('failed', exc_info=True)
    _fail(str(e))
  except tf.errors.OpError as e:  # raised while reading the input
    logging.debug('failed', exc_info=True)
    _fail(pipeline.describe_read_error(cfg, e) if cfg else
          errors.first_line(e))
  if FLAGS.mode == 'train' and FLAGS.benchmark:
    import json  # pylint: disable=g-import-not-at-top
    print(json.dumps(report))
  if FLAGS.mode in ('eval', 'train_and_eval'):
    print_report(report)


def run_main() -> None:
  """The console command: absl parses the flags, then main runs."""
  signal.signal(signal.SIGPIPE, signal.SIG_DFL)
  cli.describe_in_help(__name__)
  app.run(main)


if __name__ == '__main__':
  run_main()

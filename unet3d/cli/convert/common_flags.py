"""Flags and the error-handling runner shared by the converter commands
(`unet3d-convert <dataset>` and the data_preprocess/convert_*.py shims).

Importing this module must stay cheap and TensorFlow-free: worker processes
(spawned) re-import the CLI script and with it this module.
"""

import functools
import os
import signal
import sys
import threading

from absl import app
from absl import flags
from absl import logging

from unet3d import cli
from unet3d import startup
from unet3d.preprocess import intensity

startup.prepare_environment()  # before any TensorFlow import

FLAGS = flags.FLAGS


def define_output_flags() -> None:
  flags.DEFINE_string('output_path', None, 'Output folder (created; must not '
                      'exist or be empty unless --overwrite).')
  flags.DEFINE_bool('overwrite', False, 'Replace an existing output folder.')
  flags.DEFINE_integer('num_processes', 1, 'Worker processes.')
  flags.DEFINE_enum('on_error', 'stop', ['stop', 'skip'],
                    'Bad input: stop with an error (exit 1), or skip the case '
                    'and record it in the summary.')
  flags.mark_flag_as_required('output_path')


def define_task_folder_flags() -> None:
  """Flags of the converters that read a dataset folder described by its
  dataset.json (Decathlon, nnU-Net): normalisation, masks, path safety."""
  flags.DEFINE_bool(
      'nonzero_mask', None, 'Z-score MRI (non-CT) channels within the '
      'nonzero mask, zero outside (--nononzero_mask: over the whole image). '
      "Unset: nnU-Net's rule decides, as the planner checks: within the mask "
      'when the median case\'s nonzero bounding box holds less than '
      f'{intensity.NONZERO_FRACTION_FOR_MASK:.0%} of its voxels (a zero '
      'background, e.g. skull-stripped brains).')
  flags.DEFINE_string('ct_window', None, 'low,high: clip CT channels to this '
                      'window instead of the foreground percentiles.')
  flags.DEFINE_bool('multi_label', False, 'Store labels 1..K-1 as K-1 binary '
                    'masks, for model.output_activation: sigmoid (nnU-Net '
                    'region datasets always store one mask per region).')
  flags.DEFINE_bool('allow_outside_paths', False, 'Accept image and label '
                    'files outside the dataset folder (absolute paths, ../, '
                    'symlinks leading out); by default they are refused. '
                    'dataset.json is data: enable only for a folder you '
                    'trust.')


def define_convert_flags() -> None:
  """Flags of every TFRecord converter (plus define_output_flags)."""
  define_output_flags()
  flags.DEFINE_integer('num_shards', 4, 'Shards per split (at most one per '
                       'case).')
  flags.DEFINE_integer('cases_per_shard', 0, '> 0: shards of this many cases '
                       'each, instead of --num_shards.')
  flags.DEFINE_bool('compressed', True, 'GZIP-compress the TFRecords.')
  flags.DEFINE_float('validation_fraction', 0.2, 'Share of cases in val-* '
                     'when --num_folds=1.')
  flags.DEFINE_integer('num_folds', 1, 'k of a k-fold split (splits.json); '
                       '--fold picks the one written as train-*/val-*.')
  flags.DEFINE_integer('fold', 0, 'The fold written as train-*/val-*.')
  flags.DEFINE_integer('seed', 0, 'Seed of the split and of sampling.')
  flags.DEFINE_bool('reorient', True, 'Reorient to RAS (no effect for files '
                    'without orientation, e.g. HDF5).')
  flags.DEFINE_bool('crop_nonzero', True, 'Crop to the nonzero bounding box.')
  flags.DEFINE_string('target_spacing', 'median', '"median" (of the dataset), '
                      '"original" (no resampling) or x,y,z in mm (RAS axes).')
  flags.DEFINE_integer('image_order', 3, 'Spline order for image resampling.')
  flags.DEFINE_enum('label_interpolation', 'linear', ['linear', 'nearest'],
                    'Label resampling: one-hot linear or nearest.')
  flags.DEFINE_bool('nan_to_num', False, 'Replace NaN and -inf image voxels '
                    "by the channel's smallest finite value and +inf by its "
                    'largest, instead of stopping at the file.')


def define_lits_flags() -> None:
  """The LiTS file patterns, HU window and case sharding (3D and 2D)."""
  flags.DEFINE_string('image_file_pattern', None,
                      'Image path with {} for the case number, e.g. '
                      '/data/volume-{}.nii (.nii, .nii.gz or .npy).')
  flags.DEFINE_string('label_file_pattern', None,
                      'Label path with {}, e.g. /data/segmentation-{}.nii.')
  flags.DEFINE_string('hu_window', '-200,250', 'low,high HU window; "none": '
                      'clip to the foreground [0.5, 99.5] percentiles.')
  flags.DEFINE_integer('shard_start', 0, 'Convert case numbers shard_start + '
                       'n * shard_stride only (splitting work between runs).')
  flags.DEFINE_integer('shard_stride', 1, 'See --shard_start.')
  flags.DEFINE_enum('label_map', 'liver_tumour', ['liver_tumour', 'liver'],
                    'liver_tumour: 0 background, 1 liver, 2 tumour; liver: '
                    'tumour merged into liver (the UNet 3+ repository\'s '
                    'LiTS setup).')
  flags.mark_flags_as_required(['image_file_pattern', 'label_file_pattern'])


def hu_window():
  """--hu_window as (low, high), or None for "none"."""
  if FLAGS.hu_window.lower() == 'none':
    return None
  return parse_floats(FLAGS.hu_window, 'hu_window', 2)


def parse_floats(text, flag: str, count=None):
  """'a,b,c' -> [a, b, c]; errors name the flag."""
  if text is None:
    return None
  try:
    values = [float(v) for v in str(text).split(',') if v.strip()]
  except ValueError:
    raise ValueError(f'--{flag}: expected comma-separated numbers, got '
                     f'{text!r}') from None
  if count is not None and len(values) != count:
    raise ValueError(f'--{flag}: expected {count} numbers, got {text!r}')
  return values


def parse_label_map(text, flag: str = 'label_map'):
  """'1:1,2:1,3:1' -> {1: 1, 2: 1, 3: 1}; errors name the flag."""
  if not text:
    return None
  mapping = {}
  for item in str(text).split(','):
    parts = item.split(':')
    try:
      old, new = (int(p) for p in parts)
    except ValueError:
      raise ValueError(f'--{flag}: expected old:new integer pairs like '
                       f'1:1,2:1, got {item!r}') from None
    if old in mapping:
      raise ValueError(f'--{flag}: label {old} is mapped twice')
    mapping[old] = new
  return mapping


def convert_options() -> dict:
  """Keyword arguments for unet3d.preprocess.convert.Options from the flags."""
  spacing = FLAGS.target_spacing
  if spacing == 'original':
    spacing = None
  elif spacing != 'median':
    spacing = parse_floats(spacing, 'target_spacing', 3)
  return dict(num_shards=FLAGS.num_shards,
              cases_per_shard=FLAGS.cases_per_shard,
              compressed=FLAGS.compressed,
              overwrite=FLAGS.overwrite,
              validation_fraction=FLAGS.validation_fraction,
              num_folds=FLAGS.num_folds, fold=FLAGS.fold, seed=FLAGS.seed,
              num_processes=FLAGS.num_processes, on_error=FLAGS.on_error,
              reorient=FLAGS.reorient, crop_nonzero=FLAGS.crop_nonzero,
              target_spacing=spacing, image_order=FLAGS.image_order,
              label_interpolation=FLAGS.label_interpolation,
              nan_to_num=FLAGS.nan_to_num)


def progress_bar():
  """A tqdm factory for the converters' progress(total=, desc=)."""
  import tqdm  # pylint: disable=g-import-not-at-top
  return functools.partial(tqdm.tqdm, unit='case', file=sys.stderr,
                           dynamic_ncols=True)


def report(summary: dict, output_path: str) -> None:
  skipped = summary.get('skipped') or []
  counts = (f"train {summary['num_train']}, val {summary['num_val']}"
            if 'num_train' in summary else '')
  print(f"wrote {output_path}: {summary['num_cases']} cases"
        f"{' (' + counts + ')' if counts else ''}, {len(skipped)} skipped"
        f" in {summary.get('seconds', 0):.1f} s")
  for entry in skipped:
    print(f"skipped {entry['case_id']}: {entry['error']}")


def list_cases(summary: dict) -> None:
  """One line per stored case: split, shard, stored shape (--verbose)."""
  for case in summary.get('cases', []):
    shape = case.get('stored', {}).get('shape')
    print(f"{case['case_id']}: {case.get('split')} {case.get('shard')} "
          f"{shape}")


def bare_flag_to(argv: list[str], short: str, long: str) -> list[str]:
  """Rewrites a bare `-<short>` (no value after it) to `--<long>`.

  NVIDIA's preprocess_data.py takes `-v` for verbose output, while absl
  reserves `-v <level>` for its log verbosity: `-v` followed by a number
  keeps that meaning, a bare `-v` becomes `--<long>`.
  """
  out = []
  for i, arg in enumerate(argv):
    following = argv[i + 1] if i + 1 < len(argv) else None
    bare = following is None or not following.isdigit()
    if i > 0 and arg in (f'-{short}', f'--{short}') and bare:
      out.append(f'--{long}')
    else:
      out.append(arg)
  return out


class _Terminated(BaseException):
  """SIGTERM arrived (a BaseException, like KeyboardInterrupt, so no
  `except Exception` of a reader swallows it)."""


def _raise_terminated(number, frame):
  # Python ignores an exception raised inside a destructor (`__del__`, e.g.
  # a reader's object collected mid-survey), so a signal landing there would
  # be lost: it is sent again shortly, once the destructor has returned.
  while frame is not None:
    if frame.f_code.co_name == '__del__':
      threading.Timer(0.01, os.kill, (os.getpid(), number)).start()
      return
    frame = frame.f_back
  raise _Terminated()


def run(convert_fn, argv=None, verbose_flag: str = None) -> None:
  """app.run(main) where main calls convert_fn() -> summary and prints it.

  Bad flags or input (ValueError, OSError) print `error: <message>` on one
  line and exit 1; the message names the file or flag. With
  `verbose_flag` naming a set boolean flag, every stored case is listed.
  """

  def main(argv):
    if len(argv) > 1:
      raise app.UsageError(f'unexpected arguments: {argv[1:]}')
    startup.import_tensorflow()  # the records writer needs it
    # SIGTERM unwinds like Ctrl-C, so the staged output folder and the
    # worker processes are cleaned up instead of left behind.
    signal.signal(signal.SIGTERM, _raise_terminated)
    try:
      summary = convert_fn()
    except (_Terminated, KeyboardInterrupt) as e:
      name = 'SIGINT' if isinstance(e, KeyboardInterrupt) else 'SIGTERM'
      print(f'error: {name}: conversion stopped; nothing was written to '
            f'{FLAGS.output_path}', file=sys.stderr)
      sys.exit(128 + (signal.SIGINT if name == 'SIGINT' else signal.SIGTERM))
    except (ValueError, OSError) as e:
      logging.debug('failed', exc_info=True)
      message = str(e).strip().splitlines()[0] if str(e).strip() else repr(e)
      print(f'error: {message}', file=sys.stderr)
      sys.exit(1)
    if verbose_flag and getattr(FLAGS, verbose_flag):
      list_cases(summary)
    report(summary, FLAGS.output_path)

  cli.describe_in_help(convert_fn.__module__)
  app.run(main, argv=argv)

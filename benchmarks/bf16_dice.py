"""Dice of a trained model in float32 and with bfloat16 inference, as JSON.

  PYTHONPATH=. python benchmarks/bf16_dice.py --model_dir=demo_output/model
      [--images=<folder> --labels=<folder>] [--split_file=<splits.json>]
      [--fold=0] [--config_file=<yaml>] [--params_override=<overrides>]
      [--rounds=2]

Runs `unet3d --mode=predict` on the same NIfTI cases once as trained
(float32) and once with `inference.onednn_bfloat16=true`, each in its own
process (the option is process-wide), alternating for --rounds rounds
(A B B A ...), and scores both against the labels with the per-case
scoring of eval and evaluate_folder (`scoring.score_case`, the run's
metrics conventions, surface metrics off: only dice is reported).

The cases: by default the validation side of the run's split (the
`splits.json` beside its training records, fold `data.fold`), images from
`imagesTr` and labels from `labelsTr` of the converter's input folder (the
`name` of the dataset.json beside the records: the Decathlon task folder
for `unet3d-demo` and the MSD converter). --images/--labels give other
folders (a case is a label's file name; its image is `<case>.nii.gz` or
nnU-Net's `<case>_0000.nii.gz`, ...); --split_file=none takes every label.

One JSON object: the CPU and its SIMD flags, oneDNN, the commands; per
class and mean foreground dice (the mean over cases of each class, then
over classes) of each precision, the difference bf16 - fp32, the fraction
of voxels whose label differs between the two, and the wall time of each
predict process (start-up, restore and tracing included; medians over the
rounds) with their ratio. On a CPU without AVX512_BF16 or AMX (or with
oneDNN capped below them by ONEDNN_MAX_CPU_ISA) bfloat16 is emulated: the
JSON says so and only float32 runs, exit 0.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from typing import Optional, Sequence

from unet3d import startup  # pylint: disable=g-import-not-at-top

startup.prepare_environment()  # before TensorFlow is imported

import numpy as np  # pylint: disable=g-import-not-at-top

tf = startup.import_tensorflow()  # quietly, before the scoring imports it
from unet3d import errors  # pylint: disable=g-import-not-at-top
from unet3d import fileio
from unet3d import run_dir
from unet3d.evaluation import folder
from unet3d.evaluation import scoring
from unet3d.input import dataset_info
from unet3d.input import splits
from unet3d.preprocess import io

PRECISIONS = ('fp32', 'bf16')
OVERRIDE = {'fp32': 'inference.onednn_bfloat16=false',
            'bf16': 'inference.onednn_bfloat16=true'}
# oneDNN ISA caps (ONEDNN_MAX_CPU_ISA) that still include bf16 instructions.
_BF16_ISAS = ('BF16', 'AMX', 'AVX10', 'ALL')


# ----------------------------------------------------------------------------
# The comparison: pure functions of arrays.


def bf16_hardware(cpu_flags: Sequence[str]) -> tuple[bool, str]:
  """(whether oneDNN can run bfloat16 natively, why) from
  `startup.cpu_simd_flags()` (which lists an ONEDNN_MAX_CPU_ISA cap)."""
  native = [f for f in cpu_flags if f in ('avx512_bf16', 'amx_bf16')]
  if not native:
    return False, 'no avx512_bf16 or amx_bf16 in the CPU flags'
  caps = [f.split('=', 1)[1] for f in cpu_flags
          if f.startswith('ONEDNN_MAX_CPU_ISA=')]
  if caps and not any(k in caps[0].upper() for k in _BF16_ISAS):
    return False, f'ONEDNN_MAX_CPU_ISA={caps[0]} leaves out bf16'
  return True, ', '.join(native)


def mean_dice(cases, options: scoring.ScoringOptions) -> dict[str, float]:
  """{class name: mean dice over the cases} of the foreground classes.

  cases: [(case id, label, prediction, spacing)], class indices [*spatial]
  on one grid, spacing in mm. A case whose dice is not a number (a class
  empty in both under empty='nan') is left out of that class's mean.
  """
  per_class: dict[str, list[float]] = {}
  for case_id, label, prediction, spacing in cases:
    rows = scoring.score_case(case_id, label, prediction, spacing,
                              options).rows
    for row in rows:
      values = per_class.setdefault(row['class'], [])
      if row['dice'] is not None and np.isfinite(row['dice']):
        values.append(float(row['dice']))
  return {name: float(np.mean(v)) if v else float('nan')
          for name, v in per_class.items()}


def changed_fraction(pairs) -> float:
  """The fraction of voxels whose label differs, over all (a, b) pairs of
  label maps of one shape each."""
  changed = total = 0
  for a, b in pairs:
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape:
      raise ValueError(f'label maps of shapes {a.shape} and {b.shape}')
    changed += int(np.count_nonzero(a != b))
    total += a.size
  return changed / total if total else float('nan')


def compare(cases, options: scoring.ScoringOptions) -> dict:
  """Dice of both precisions against the labels, and their difference.

  cases: [(case id, label, fp32 prediction, bf16 prediction, spacing)].
  Returns per_class {name: {fp32, bf16, difference}}, mean_dice_fp32,
  mean_dice_bf16 (the mean over foreground classes), dice_difference
  (bf16 - fp32) and voxels_changed_fraction (bf16 label != fp32 label).
  """
  cases = list(cases)
  dice = {p: mean_dice([(c, label, preds[i], spacing)
                        for c, label, *preds, spacing in cases], options)
          for i, p in enumerate(PRECISIONS)}
  per_class = {name: {'fp32': dice['fp32'][name], 'bf16': dice['bf16'][name],
                      'difference': dice['bf16'][name] - dice['fp32'][name]}
               for name in dice['fp32']}
  means = {p: float(np.nanmean(list(dice[p].values()))) for p in PRECISIONS}
  return {'per_class': per_class,
          'mean_dice_fp32': means['fp32'], 'mean_dice_bf16': means['bf16'],
          'dice_difference': means['bf16'] - means['fp32'],
          'voxels_changed_fraction': changed_fraction(
              (fp32, bf16) for _, _, fp32, bf16, _ in cases)}


# ----------------------------------------------------------------------------
# The cases and the predict processes.


def _default_folders(cfg) -> tuple[Optional[str], Optional[str]]:
  """(imagesTr, labelsTr) of the converter's input folder, or Nones."""
  path = dataset_info.path_beside(cfg.training_file_pattern)
  task = dataset_info.read(path).get('name') if path else None
  if not task:
    return None, None
  found = [os.path.join(task, d) for d in ('imagesTr', 'labelsTr')]
  return tuple(d if os.path.isdir(d) else None for d in found)


def _selected(labels: dict[str, str], split_file: Optional[str], fold: int
             ) -> dict[str, str]:
  if not split_file:
    return labels
  val = splits.check_fold(fileio.read_json(split_file), fold)['val']
  missing = [c for c in val if c not in labels]
  if missing:
    raise ValueError(f'--labels: no label for {len(missing)} validation '
                     f'cases of {split_file}: {", ".join(missing[:3])}')
  return {c: labels[c] for c in val}


def stage_cases(images: str, labels: str, split_file: Optional[str],
                fold: int, into: str) -> dict[str, str]:
  """Links the cases' image files into `into`/images; {case: label path}."""
  label_files = {io.strip_suffix(n): os.path.join(labels, n)
                 for n in sorted(os.listdir(labels))
                 if n.endswith(io.NIFTI_SUFFIXES)}
  if not label_files:
    raise FileNotFoundError(f'--labels: no NIfTI files in {labels}')
  cases = _selected(label_files, split_file, fold)
  staged = os.path.join(into, 'images')
  os.makedirs(staged, exist_ok=True)
  found = set()
  for name in sorted(os.listdir(images)):
    if not name.endswith(io.NIFTI_SUFFIXES):
      continue
    ids = folder.candidate_ids(io.strip_suffix(name), 'image')
    case = next((c for c in ids if c in cases), None)
    if case:
      os.symlink(os.path.abspath(os.path.join(images, name)),
                 os.path.join(staged, name))
      found.add(case)
  missing = sorted(set(cases) - found)
  if missing:
    raise FileNotFoundError(f'--images: no image in {images} for '
                            f'{len(missing)} cases: {", ".join(missing[:3])}')
  return cases


def predict_command(args, precision: str, images: str, out: str) -> list:
  overrides = ','.join(o for o in (OVERRIDE[precision], args.params_override)
                       if o)
  command = [sys.executable, '-m', 'unet3d.cli.main', '--mode=predict',
             f'--model_dir={args.model_dir}', f'--input={images}',
             f'--output_dir={out}', f'--params_override={overrides}']
  if args.config_file:
    command.append(f'--config_file={args.config_file}')
  return command


def run_predict(command: list) -> float:
  """Runs one predict process; its wall seconds."""
  start = time.perf_counter()
  proc = subprocess.run(command, capture_output=True, text=True, check=False)
  seconds = time.perf_counter() - start
  if proc.returncode:
    last = (proc.stderr.strip().splitlines() or ['no output'])[-1]
    raise errors.RunError(f'{shlex.join(command[1:4])} failed (exit '
                          f'{proc.returncode}): {last}')
  return seconds


def load_predictions(out: str, cases: dict[str, str]) -> dict:
  """{case: label map} of predict's outputs in `out`."""
  files, _ = folder.match_cases(cases, {
      io.strip_suffix(n): os.path.join(out, n) for n in os.listdir(out)
      if n.endswith(io.NIFTI_SUFFIXES)}, 'prediction')
  missing = sorted(set(cases) - set(files))
  if missing:
    raise errors.RunError(f'{out}: no prediction for {", ".join(missing)}')
  return {c: io.load_nifti(files[c])[0] for c in cases}


def _digest(predictions: dict) -> str:
  h = hashlib.sha256()
  for case in sorted(predictions):
    h.update(np.ascontiguousarray(predictions[case]).tobytes())
  return h.hexdigest()[:16]


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--model_dir', required=True)
  parser.add_argument('--images', default=None)
  parser.add_argument('--labels', default=None)
  parser.add_argument('--split_file', default=None,
                      help="default: the splits.json beside the run's "
                      "records; 'none' for every label")
  parser.add_argument('--fold', type=int, default=None)
  parser.add_argument('--config_file', default=None)
  parser.add_argument('--params_override', default=None)
  parser.add_argument('--rounds', type=int, default=2)
  parser.add_argument('--work_dir', default=None,
                      help='keeps the predictions (default: a temporary '
                      'folder)')
  args = parser.parse_args()
  if args.rounds < 1:
    raise ValueError(f'--rounds: must be >= 1, got {args.rounds}')
  cfg = run_dir.load_params(args.model_dir)
  if cfg is None:
    raise FileNotFoundError(f'--model_dir: no params.yaml in '
                            f'{args.model_dir}')
  images, labels = _default_folders(cfg)
  images, labels = args.images or images, args.labels or labels
  if not images or not labels:
    raise ValueError('--images/--labels: give both folders (no task folder '
                     "found through the run's dataset.json)")
  split_file = args.split_file
  if split_file is None and cfg.training_file_pattern:
    beside = fileio.join(fileio.dirname(cfg.training_file_pattern),
                         splits.SPLITS_JSON)
    split_file = beside if fileio.exists(beside) else None
  if split_file == 'none':
    split_file = None
  fold = cfg.data.fold if args.fold is None else args.fold

  machine = {**startup.machine_info(), 'tensorflow': tf.__version__}
  native, why = bf16_hardware(machine['cpu_flags'])
  precisions = PRECISIONS if native else ('fp32',)
  order = [p for r in range(args.rounds)
           for p in (precisions if r % 2 == 0 else precisions[::-1])]

  with tempfile.TemporaryDirectory() as tmp:
    work = args.work_dir or tmp
    os.makedirs(work, exist_ok=True)
    cases = stage_cases(images, labels, split_file, fold, work)
    staged = os.path.join(work, 'images')
    commands = {p: predict_command(args, p, staged,
                                   os.path.join(work, p)) for p in precisions}
    seconds = {p: [] for p in precisions}
    predictions, digests = {}, {p: set() for p in precisions}
    for precision in order:
      seconds[precision].append(run_predict(commands[precision]))
      predictions[precision] = load_predictions(
          os.path.join(work, precision), cases)
      digests[precision].add(_digest(predictions[precision]))

    ground_truth = {c: io.load_nifti(p) for c, p in cases.items()}
    names = (dataset_info.class_names(
        [cfg.training_file_pattern, cfg.eval_file_pattern], cfg.num_classes)
             or [f'class_{c}' for c in range(cfg.num_classes)])
    options = scoring.ScoringOptions.from_config(cfg, names, first_class=1)
    options = dataclasses.replace(options, surface_metrics=False,
                                          lesion_wise=False,
                                          brats_regions=False)
    if native:
      result = compare([(c, gt[0], predictions['fp32'][c],
                         predictions['bf16'][c], gt[2])
                        for c, gt in ground_truth.items()], options)
    else:
      fp32 = mean_dice([(c, gt[0], predictions['fp32'][c], gt[2])
                        for c, gt in ground_truth.items()], options)
      result = {'per_class': {n: {'fp32': d} for n, d in fp32.items()},
                'mean_dice_fp32': float(np.nanmean(list(fp32.values())))}

  medians = {p: float(np.median(s)) for p, s in seconds.items()}
  timing = {'order': order,
            **{f'seconds_{p}': [round(s, 2) for s in seconds[p]]
               for p in precisions},
            **{f'seconds_{p}_median': round(medians[p], 2)
               for p in precisions}}
  if native:
    timing['time_ratio_bf16_over_fp32'] = round(medians['bf16'] /
                                                medians['fp32'], 3)
  print(json.dumps({
      'bench': 'bf16_dice',
      'command': shlex.join(['python', 'benchmarks/bf16_dice.py'] +
                            sys.argv[1:]),
      'predict_commands': {p: shlex.join(['unet3d'] + c[3:])
                           for p, c in commands.items()},
      **machine,
      'bf16_native': native, 'bf16_reason': why,
      'model_dir': args.model_dir, 'images': images, 'labels': labels,
      'split_file': split_file, 'fold': fold if split_file else None,
      'cases': sorted(cases), 'num_cases': len(cases),
      'classes': names, 'conventions': options.conventions.describe(),
      'repeatable': {p: len(d) == 1 for p, d in digests.items()},
      **result,
      **timing}, indent=1), flush=True)


if __name__ == '__main__':
  errors.one_line_errors(main)()

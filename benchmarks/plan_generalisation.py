"""Does the planned recipe generalise? The plan against a hand recipe and
configs/demo.yaml, at equal time, on a scan from another "scanner".

  python benchmarks/plan_generalisation.py --work_dir=/tmp/plan_gen \
      [--train_hours=0.2] [--recipes=plan,calibrated,hand,demo]

Data: the MNI152 2009a T1 (fetched from nilearn's wheel at run time, see
unet3d/examples/mni152_data.py) with six deep structures told apart by
position and side, as subcortical atlases are: the deep grey matter of each
hemisphere split into an anterior and a posterior part, and each lateral
ventricle. Two training scans and one test scan, each from its own
simulated scanner: another voxel grid and field of view, a small rotation
and scaling of the head, a smooth bias field, a gamma and contrast change
and noise. The test scan's scanner differs from both training ones.

Each recipe runs exactly as a user would run it, through the commands:
- plan: convert with defaults -> `--mode=plan --budget=cpu2
  --train_hours=H` -> `--mode=train_and_eval` on the plan unchanged;
- hand: convert at 1.5 mm -> configs/demo.yaml with five keys changed
  (48^3 patches, the classes, the laterality pairs, the steps, the records);
- demo: configs/demo.yaml on the default conversion (the classes, the
  records and the steps changed);
- calibrated (when asked for): the plan with `--calibrate`, which spends a
  quarter of the hours while planning.
The hand and demo recipes get the steps that fill the plan's measured wall
time (train_and_eval, evaluation and checkpoints included), from their own
step time measured with `--mode=train --benchmark`. Each model predicts the
raw test scan (`--mode=predict`), and dice is computed on the scan's own
grid. Prints one JSON object: dice per class and mean, wall times, the
plan's estimated wall time against its real one, CPU model and flags.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time

import numpy as np
import yaml
from scipy import ndimage

from unet3d import recipes as recipes_lib
from unet3d import startup
from unet3d.examples import mni152_data
from unet3d.preprocess import io

LABELS = {'0': 'background',
          '1': 'left_anterior_deep_grey', '2': 'right_anterior_deep_grey',
          '3': 'left_posterior_deep_grey', '4': 'right_posterior_deep_grey',
          '5': 'left_ventricle', '6': 'right_ventricle'}
PAIRS = [[1, 2], [3, 4], [5, 6]]
# plan: the cpu2 plan; calibrated: the same with --calibrate; hand, demo:
# the hand recipe and configs/demo.yaml at the plan's wall time.
RECIPES = ('plan', 'calibrated', 'hand', 'demo')

# Each scanner: voxel spacing (mm), rotation (degrees about x, y, z),
# isotropic scale, field of view trimmed (mm, low and high end per axis),
# bias field coefficients, gamma, contrast, offset, noise (share of max).
SCANNERS = {
    'scan_a': dict(spacing=(1.0, 1.0, 1.0), rotation=(0, 0, 0), scale=1.0,
                   trim=(0, 0, 0, 0, 0, 0), bias=(0, 0, 0), gamma=1.0,
                   contrast=1.0, offset=0.0, noise=0.0),
    'scan_b': dict(spacing=(1.2, 1.2, 1.2), rotation=(5, -3, 4), scale=1.04,
                   trim=(10, 10, 5, 15, 10, 5), bias=(0.25, -0.15, 0.2),
                   gamma=0.8, contrast=1.6, offset=40.0, noise=0.02),
    'test': dict(spacing=(0.9, 1.1, 1.3), rotation=(-6, 4, -5), scale=0.96,
                 trim=(5, 15, 10, 5, 0, 20), bias=(-0.2, 0.3, -0.25),
                 gamma=1.3, contrast=2.5, offset=100.0, noise=0.03),
}


def deep_structures(t1: np.ndarray, tissue: np.ndarray,
                    affine: np.ndarray) -> np.ndarray:
  """uint8 labels of LABELS: grey matter (tissue 2) and CSF (tissue 1)
  more than 15 mm inside the brain, within a central box of MNI space."""
  grid = np.indices(t1.shape).reshape(3, -1)
  world = (affine[:3, :3] @ grid + affine[:3, 3:]).reshape((3,) + t1.shape)
  x, y, z = world
  spacing = np.abs(np.diag(affine)[:3])
  depth = ndimage.distance_transform_edt(t1 > 0, sampling=spacing)
  deep = (depth > 15) & (np.abs(x) < 33) & (y > -45) & (y < 30) & (
      z > -30) & (z < 25)
  right = (x > 0).astype(np.uint8)
  label = np.zeros(t1.shape, np.uint8)
  grey = deep & (tissue == 2)
  label[grey & (y >= -12)] = 1
  label[grey & (y < -12)] = 3
  label[deep & (tissue == 1)] = 5
  return np.where(label > 0, label + right, 0).astype(np.uint8)


def _rotation(degrees) -> np.ndarray:
  out = np.eye(3)
  for axis, angle in enumerate(np.radians(degrees)):
    c, s = np.cos(angle), np.sin(angle)
    a, b = [i for i in range(3) if i != axis]
    r = np.eye(3)
    r[a, a], r[a, b], r[b, a], r[b, b] = c, -s, s, c
    out = r @ out
  return out


def scan(t1: np.ndarray, label: np.ndarray, affine: np.ndarray,
         scanner: dict, seed: int) -> tuple[np.ndarray, np.ndarray,
                                            np.ndarray]:
  """(image, label, affine) of the head as `scanner` would record it."""
  corners = np.array([[0, 0, 0], np.array(t1.shape) - 1])
  world = (affine[:3, :3] @ corners.T + affine[:3, 3:]).T
  low, high = world.min(axis=0), world.max(axis=0)
  trim = np.array(scanner['trim'], float).reshape(3, 2)
  low, high = low + trim[:, 0], high - trim[:, 1]
  spacing = np.array(scanner['spacing'], float)
  shape = np.floor((high - low) / spacing).astype(int) + 1
  out_affine = np.diag(list(spacing) + [1.0])
  out_affine[:3, 3] = low
  centre = (low + high) / 2
  # World point w of the new scan shows the head at
  # centre + (scale * R)^-1 (w - centre) in template space.
  move = np.eye(4)
  inverse = np.linalg.inv(scanner['scale'] * _rotation(scanner['rotation']))
  move[:3, :3] = inverse
  move[:3, 3] = centre - inverse @ centre
  to_input = np.linalg.inv(affine) @ move @ out_affine
  args = dict(matrix=to_input[:3, :3], offset=to_input[:3, 3],
              output_shape=tuple(shape))
  image = ndimage.affine_transform(t1, order=1, **args)
  labels = ndimage.affine_transform(label, order=0, **args)
  rng = np.random.default_rng(seed)
  coords = np.indices(shape).reshape(3, -1).T / (shape - 1) * 2 - 1
  bias = np.exp(coords @ np.array(scanner['bias'])).reshape(shape)
  image = image / max(float(image.max()), 1e-6)
  image = np.power(np.clip(image, 0, None), scanner['gamma'])
  image = (image * scanner['contrast'] * 300.0 + scanner['offset'] *
           (image > 0)) * bias
  image = image + rng.normal(0, scanner['noise'] * float(image.max()),
                             shape)
  return image.astype(np.float32), labels.astype(np.uint8), out_affine


def run(args: list[str], log: str) -> float:
  """Runs a command to a log file; returns its wall seconds."""
  start = time.perf_counter()
  with open(log, 'w') as f:
    f.write('$ ' + ' '.join(args) + '\n')
    f.flush()
    result = subprocess.run(args, stdout=f, stderr=subprocess.STDOUT,
                            check=False)
  if result.returncode:
    sys.exit(f'error: {args[0]} {args[1] if len(args) > 1 else ""} failed '
             f'(exit {result.returncode}); see {log}')
  return time.perf_counter() - start


def dice(prediction: np.ndarray, label: np.ndarray) -> dict[str, float]:
  out = {}
  for k, name in LABELS.items():
    if k == '0':
      continue
    p, t = prediction == int(k), label == int(k)
    total = p.sum() + t.sum()
    out[name] = float(2 * (p & t).sum() / total) if total else 1.0
  out['mean'] = float(np.mean(list(out.values())))
  return out


def step_seconds(config: str, overrides: str, log: str, model_dir: str
                ) -> float:
  """The recipe's training step, from `--mode=train --benchmark`."""
  run(['unet3d', '--mode=train', '--benchmark', f'--config_file={config}',
       f'--model_dir={model_dir}', f'--params_override={overrides},'
       'train.benchmark_steps=10,train.benchmark_warmup_steps=3'], log)
  text = open(log).read()
  report = json.loads(text[text.index('{'):text.rindex('}') + 1])
  return report['latency_ms_p50'] / 1000.0


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--work_dir', required=True)
  parser.add_argument('--train_hours', type=float, default=0.2)
  parser.add_argument('--recipes', default='plan,hand,demo',
                      help='any of ' + ', '.join(RECIPES))
  parser.add_argument('--equal_seconds', type=float, default=None,
                      help='the wall time the hand and demo recipes get '
                      '(default: the plan\'s, measured in this run)')
  args = parser.parse_args()
  work = os.path.abspath(args.work_dir)
  os.makedirs(work, exist_ok=True)
  paths = mni152_data.fetch(work)
  t1, tissue, affine, _, _ = mni152_data.load(paths)
  template_label = deep_structures(t1, tissue, affine)
  scans = {name: scan(t1, template_label, affine, s, seed)
           for seed, (name, s) in enumerate(SCANNERS.items())}
  task = os.path.join(work, 'Task_deep')
  mni152_data.write_task(task, 'MNI152 deep structures', LABELS,
                         {k: v for k, v in scans.items() if k != 'test'})
  test_dir = os.path.join(work, 'test')
  os.makedirs(test_dir, exist_ok=True)
  image, label, test_affine = scans['test']
  test_image = os.path.join(test_dir, 'test.nii.gz')
  io.save_nifti(test_image, image, test_affine)
  logs = os.path.join(work, 'logs')
  os.makedirs(logs, exist_ok=True)
  demo = recipes_lib.recipe('demo.yaml')
  wall, results, steps, plan_values = {}, {}, {}, {}

  records = os.path.join(work, 'records')
  records_15 = os.path.join(work, 'records_1p5')
  for out, extra in ((records, []), (records_15,
                                     ['--target_spacing=1.5,1.5,1.5'])):
    shutil.rmtree(out, ignore_errors=True)
    run(['unet3d-convert', 'decathlon', f'--input_path={task}',
         f'--output_path={out}'] + extra,
        os.path.join(logs, f'convert_{os.path.basename(out)}.log'))

  runs = os.path.join(work, 'runs')
  chosen = args.recipes.split(',')
  unknown = sorted(set(chosen) - set(RECIPES))
  if unknown:
    sys.exit(f'error: --recipes: unknown {unknown} (expected some of '
             f'{", ".join(RECIPES)})')
  configs, estimates = {}, {}
  for name in ('plan', 'calibrated'):
    if name not in chosen:
      continue
    plan_file = os.path.join(records, f'plan_cpu2_{name}.yaml')
    wall[f'plan_{name}'] = run(
        ['unet3d', '--mode=plan', f'--data_dir={records}', '--budget=cpu2',
         f'--train_hours={args.train_hours}', f'--plan_file={plan_file}',
         f'--{"" if name == "calibrated" else "no"}calibrate'],
        os.path.join(logs, f'plan_{name}.log'))
    plan_text = open(plan_file).read()
    estimate = re.search(r'estimated wall time of train_and_eval: ([0-9.]+) '
                         r'min', plan_text)
    estimates[name] = float(estimate.group(1)) if estimate else None
    shutil.rmtree(os.path.join(runs, name), ignore_errors=True)
    wall[f'train_{name}'] = run(
        ['unet3d', '--mode=train_and_eval', f'--config_file={plan_file}',
         f'--model_dir={runs}/{name}'], os.path.join(logs, f'train_{name}.log'))
    configs[name] = (plan_file, '')
    plan_values[name] = {k: v for k, v in yaml.safe_load(plan_text).items()
                         if k in ('input_image_size', 'train_steps',
                                  'training_file_pattern')}

  equal = args.equal_seconds or wall.get('train_plan')
  classes = f'num_classes={len(LABELS)}'
  pairs = ('data.augmentation.left_right_axis=0,'
           f'data.augmentation.left_right_label_pairs={json.dumps(PAIRS)}'
           .replace(' ', ''))
  hand_made = {
      'hand': (f'training_file_pattern={records_15}/*.tfrecord,{classes},'
               f'input_image_size=[48,48,48],{pairs}'),
      'demo': f'training_file_pattern={records}/*.tfrecord,{classes}',
  }
  for name, overrides in hand_made.items():
    if name not in chosen:
      continue
    if not equal:
      sys.exit('error: --equal_seconds: required without the plan recipe')
    step = step_seconds(demo, overrides,
                        os.path.join(logs, f'step_{name}.log'),
                        os.path.join(work, 'benchmark_runs', name))
    # The plan's wall time less a startup of about a minute.
    steps[name] = max(50, int((equal - 60) / step) // 50 * 50)
    shutil.rmtree(os.path.join(runs, name), ignore_errors=True)
    wall[f'train_{name}'] = run(
        ['unet3d', '--mode=train', f'--config_file={demo}',
         f'--model_dir={runs}/{name}',
         f'--params_override={overrides},train_steps={steps[name]}'],
        os.path.join(logs, f'train_{name}.log'))
    configs[name] = (demo, overrides)

  for name, (config, overrides) in configs.items():
    out = os.path.join(work, 'predictions', name)
    shutil.rmtree(out, ignore_errors=True)
    command = ['unet3d', '--mode=predict', f'--config_file={config}',
               f'--model_dir={runs}/{name}', f'--input={test_image}',
               f'--output_dir={out}']
    if overrides:
      command.append(f'--params_override={overrides}')
    wall[f'predict_{name}'] = run(command,
                                  os.path.join(logs, f'predict_{name}.log'))
    predicted = [f for f in os.listdir(out) if f.endswith('.nii.gz')]
    prediction, _, _ = io.load_volume(os.path.join(out, predicted[0]))
    results[name] = dice(np.asarray(prediction), label)

  report = {
      'benchmark': 'plan_generalisation',
      'train_hours': args.train_hours,
      'dice': results,
      'wall_seconds': {k: round(v, 1) for k, v in wall.items()},
      'estimated_train_minutes': estimates,
      'steps': steps,
      'plan_values': plan_values,
      **startup.machine_info(),
  }
  print(json.dumps(report, indent=1))


if __name__ == '__main__':
  main()

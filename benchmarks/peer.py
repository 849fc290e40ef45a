"""Our train step vs an identical PyTorch model, alternating, on one machine.

  python benchmarks/peer.py --peer_python=/path/to/torchenv/bin/python
      --peer_script=/path/to/torch_garden_unet_step.py
      [--rounds=4] [--loss=cross_entropy] [--isa=native|avx2]
      [--onednn=default|on|off] [--steps=6] [--size=48]

The peer script is a PyTorch replica of the demo recipe's Model Garden
U-Net (same topology and weight count, Adam + cross-entropy, batch 2, cubic
patches of --size, 48 by default) that prints one JSON line with `s_per_step` and `trainable_params`; it reads
S, F, DEPTH, NC and N (timed steps) from the environment. torch is not a
dependency of unet3d: install it in a separate virtualenv
(`python3 -m venv torchenv && torchenv/bin/pip install torch numpy`).

Each round runs benchmarks/train.py (demo recipe) and the peer as
separate processes, one after the other (the order flips every round), and
takes the ratio of their seconds per step. The two models must have the same
number of trainable weights, or the script stops. Prints one JSON line:
per-side median s/step, the median ratio ours/peer (< 1: we are faster;
speedup = 1 / ratio), and for each run the share of the machine other processes used meanwhile
(`others_cpu`), since a busy shared machine slows the two sides unequally.
`quiet_*` repeats the medians over rounds where both runs saw others_cpu <
0.1.

--isa=avx2 limits oneDNN (both sides) and ATen (PyTorch) to AVX2, to
emulate an AVX2-only CPU on an AVX-512 one. --onednn=default keeps unet3d's
default (oneDNN on); --onednn=off with --isa=avx2 is what TensorFlow alone
runs on an AVX2 CPU, where it leaves oneDNN off.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

from unet3d import errors  # pylint: disable=g-import-not-at-top

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _busy_seconds():
  with open('/proc/stat') as f:
    v = [int(x) for x in f.readline().split()[1:]]
  return (sum(v[:8]) - v[3] - v[4]) / os.sysconf('SC_CLK_TCK')


def _run(cmd, env):
  """Runs cmd; returns (its last JSON line, share of cores others used)."""
  before_busy, before_wall = _busy_seconds(), time.monotonic()
  before_children = os.times()
  out = subprocess.run(cmd, env=env, capture_output=True, text=True,
                       check=False)
  wall = time.monotonic() - before_wall
  after = os.times()
  own = ((after.children_user - before_children.children_user) +
         (after.children_system - before_children.children_system))
  others = max(0.0, _busy_seconds() - before_busy - own) / (
      wall * os.cpu_count())
  if out.returncode:
    last = (out.stderr.strip().splitlines() or ['no output'])[-1]
    raise errors.RunError(f'{" ".join(cmd[:2])} failed (exit '
                          f'{out.returncode}): {last}')
  lines = [l for l in out.stdout.splitlines() if l.startswith('{')]
  return json.loads(lines[-1]), round(others, 3)


def main():
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument('--peer_python', required=True,
                  help='python of a virtualenv with a CPU build of torch')
  ap.add_argument('--peer_script', required=True,
                  help='PyTorch replica of the recipe (see above)')
  ap.add_argument('--config_file',
                  default=os.path.join(REPO, 'configs', 'demo.yaml'))
  ap.add_argument('--loss', default='cross_entropy',
                  help='our loss; the peer uses cross-entropy')
  ap.add_argument('--rounds', type=int, default=4)
  ap.add_argument('--steps', type=int, default=6)
  ap.add_argument('--size', type=int, default=48,
                  help='cubic patch size of both sides')
  ap.add_argument('--isa', choices=('native', 'avx2'), default='native')
  ap.add_argument('--onednn', choices=('default', 'on', 'off'),
                  default='default')
  args = ap.parse_args()
  for flag in ('peer_python', 'peer_script', 'config_file'):
    if not os.path.isfile(getattr(args, flag)):
      raise errors.ConfigError(f'--{flag}: {getattr(args, flag)} is not a '
                               'file')

  env = dict(os.environ)
  if args.isa == 'avx2':
    env.update(ONEDNN_MAX_CPU_ISA='AVX2', ATEN_CPU_CAPABILITY='avx2',
               MKL_ENABLE_INSTRUCTIONS='AVX2')
  ours_env = dict(env)
  if args.onednn != 'default':
    ours_env['TF_ENABLE_ONEDNN_OPTS'] = '1' if args.onednn == 'on' else '0'
  peer_env = dict(env, S=str(args.size), F='8', DEPTH='4', NC='4',
                  N=str(args.steps))
  ours_cmd = [sys.executable, os.path.join(REPO, 'benchmarks', 'train.py'),
              f'--config_file={args.config_file}', f'--steps={args.steps}',
              f'--params_override=loss={args.loss},'
              f'input_image_size=[{args.size},{args.size},{args.size}]']
  peer_cmd = [args.peer_python, args.peer_script]

  rounds, weights, machine = [], {}, {}
  for r in range(args.rounds):
    sides = [('ours', ours_cmd, ours_env), ('peer', peer_cmd, peer_env)]
    if r % 2:
      sides.reverse()
    result = {}
    for name, cmd, side_env in sides:
      out, others = _run(cmd, side_env)
      weights[name] = out['trainable_params']
      if name == 'ours':
        machine.update(cpu=out['cpu'], onednn_on=out['onednn'])
      s = (1.0 / out['steps_per_second'] if name == 'ours'
           else out['s_per_step'])
      result[name] = {'s_per_step': round(s, 4), 'others_cpu': others}
    if weights['ours'] != weights['peer']:
      sys.exit(f'the peer has {weights["peer"]} trainable weights, ours '
               f'{weights["ours"]}: not the same model')
    result['ratio'] = round(result['ours']['s_per_step'] /
                            result['peer']['s_per_step'], 3)
    rounds.append(result)

  def medians(rs):
    if not rs:
      return None
    return {'ours_s_per_step': statistics.median(
                x['ours']['s_per_step'] for x in rs),
            'peer_s_per_step': statistics.median(
                x['peer']['s_per_step'] for x in rs),
            'ratio_ours_over_peer': statistics.median(x['ratio'] for x in rs),
            'speedup': round(1 / statistics.median(x['ratio'] for x in rs),
                             3),
            'rounds': len(rs)}

  quiet = [x for x in rounds if x['ours']['others_cpu'] < 0.1 and
           x['peer']['others_cpu'] < 0.1]
  print(json.dumps({
      'benchmark': 'train_step_vs_peer', 'loss': args.loss, 'isa': args.isa,
      'onednn': args.onednn, 'steps': args.steps, 'size': args.size,
      'trainable_params': weights['ours'], **medians(rounds),
      'quiet': medians(quiet), 'per_round': rounds,
      **machine, 'cpu_count': os.cpu_count()}))


if __name__ == '__main__':
  errors.one_line_errors(main)()

"""Fine-tuning: a new run's model starts from another run's weights.

`init_checkpoint` names the source: a checkpoint prefix (`.../ckpt-N`), a
run folder (its latest checkpoint) or an exported SavedModel folder
(`saved_model/<step>/`, whose weights are `variables/variables`). The
source's model is rebuilt from the params.yaml beside it (the run folder's
or the export's; this run's config when there is none), its weights read,
and every variable of this run's model whose layer path (`enc0_conv1/kernel`)
and shape match is copied. `init_checkpoint_modules: encoder` (or
`backbone`, the Model Garden's name) copies only the encoder's layers
(`enc*`, `pool*`; see unet3d/models/encoder.py). A head of another
num_classes differs in shape, so it starts fresh.

Only when model_dir has no checkpoint: resuming a run wins. A table of what
was restored and skipped is printed; a source that matches nothing is an
error.
"""

from __future__ import annotations

import dataclasses
from typing import Mapping, Optional, Sequence

import keras
import numpy as np
import tensorflow as tf

from unet3d import fileio
from unet3d import models
from unet3d import run_dir
from unet3d.config import Config, ConfigError

# Layer-name prefixes of the encoder (unet3d/models/encoder.py).
ENCODER_PREFIXES = ('enc', 'pool')
# init_checkpoint_modules values that mean the encoder only.
ENCODER_MODULES = ('encoder', 'backbone')
SAVED_MODEL_VARIABLES = fileio.join('variables', 'variables')


@dataclasses.dataclass(frozen=True)
class Source:
  """Where the weights come from: kind 'checkpoint' or 'saved_model', the
  prefix to read, and the folder whose params.yaml describes its model."""
  kind: str
  prefix: str
  params_dir: str


@dataclasses.dataclass
class Match:
  """restored: (name, shape) copied; skipped: (name, shape, why)."""
  restored: list = dataclasses.field(default_factory=list)
  skipped: list = dataclasses.field(default_factory=list)


def find_source(path: str) -> Source:
  """The Source of init_checkpoint `path` (module docstring)."""
  if fileio.exists(path + '.index'):
    folder = fileio.normpath(fileio.dirname(path))
    if folder.rsplit('/', 1)[-1] == run_dir.BEST_DIR:  # a run's best/
      folder = fileio.dirname(folder)
    return Source('checkpoint', path, folder)
  if fileio.exists(fileio.join(path, 'saved_model.pb')):
    return Source('saved_model', fileio.join(path, SAVED_MODEL_VARIABLES),
                  path)
  latest = run_dir.latest_checkpoint(path) if fileio.isdir(path) else None
  if not latest:
    raise ConfigError(f'init_checkpoint: {path} is not a checkpoint prefix, '
                      'a run folder with a checkpoint or a SavedModel folder')
  return Source('checkpoint', latest, path)


def in_modules(name: str, modules: str) -> bool:
  """Whether variable `name` (a layer path) is one `modules` restores."""
  if modules not in ENCODER_MODULES:
    return True
  return name.split('/', 1)[0].startswith(ENCODER_PREFIXES)


def match(target: Mapping[str, Sequence[int]],
          source: Mapping[str, Sequence[int]], modules: str) -> Match:
  """Pairs target variables with source ones by name and shape.

  target, source: {layer path: shape}. Every target variable is restored
  or skipped with its reason (outside modules, not in the source, or
  another shape), in the target's order.
  """
  result = Match()
  for name, shape in target.items():
    shape = list(shape)
    if not in_modules(name, modules):
      result.skipped.append((name, shape, f'not in {modules}'))
    elif name not in source:
      result.skipped.append((name, shape, 'not in the source'))
    elif list(source[name]) != shape:
      result.skipped.append(
          (name, shape, f'source shape {list(source[name])}'))
    else:
      result.restored.append((name, shape))
  return result


def format_table(result: Match, source: Source, modules: str) -> str:
  """The printed table: a title line, then one row per variable."""
  total = len(result.restored) + len(result.skipped)
  lines = [f'init_checkpoint {source.prefix} ({source.kind}, modules '
           f'{modules}): restored {len(result.restored)} of {total} '
           'variables']
  width = max([len(r[0]) for r in result.restored + result.skipped] + [8])
  for name, shape in result.restored:
    lines.append(f'  restored  {name:<{width}}  {shape}')
  for name, shape, why in result.skipped:
    lines.append(f'  skipped   {name:<{width}}  {shape}  ({why})')
  return '\n'.join(lines)


def read_source(cfg: Config, source: Source) -> dict[str, np.ndarray]:
  """{layer path: value} of the source's model, rebuilt from its
  params.yaml (cfg when there is none)."""
  source_cfg = run_dir.load_params(source.params_dir) or cfg
  with tf.device('/cpu:0'):
    model = models.build_model(source_cfg)
  root = (tf.train.Checkpoint(model=model) if source.kind == 'checkpoint'
          else tf.train.Checkpoint(models=[model]))
  try:
    root.read(source.prefix).expect_partial() \
        .assert_existing_objects_matched()
  except (AssertionError, ValueError, tf.errors.OpError) as e:
    raise ConfigError(
        f'init_checkpoint: {source.prefix} does not hold the model its '
        f'params.yaml describes ({str(e).splitlines()[0][:200]})') from None
  return {v.path: v.numpy() for v in model.variables}


def warm_start(cfg: Config, model: keras.Model) -> Optional[Match]:
  """Copies init_checkpoint's matching weights into `model` (built, under
  its strategy) and prints the table; None when there is nothing to do
  (no init_checkpoint, or model_dir already has a checkpoint)."""
  if not cfg.init_checkpoint or run_dir.latest_checkpoint(cfg.model_dir):
    return None
  source = find_source(cfg.init_checkpoint)
  values = read_source(cfg, source)
  target = {v.path: v for v in model.variables}
  result = match({k: v.shape for k, v in target.items()},
                 {k: v.shape for k, v in values.items()},
                 cfg.init_checkpoint_modules)
  if not result.restored:
    raise ConfigError(
        f'init_checkpoint: {source.prefix}: no variable of the model matches '
        f'one of it by layer name and shape (modules '
        f'{cfg.init_checkpoint_modules})')
  for name, _ in result.restored:
    target[name].assign(values[name].astype(target[name].dtype))
  print(format_table(result, source, cfg.init_checkpoint_modules))
  return result

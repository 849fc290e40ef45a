"""The models that eval, predict and export run: the one model of
`model_dir`, or an ensemble of several run folders (`inference.ensemble`,
or `--model_dir=a,b,c`) whose probabilities are averaged.

Each ensemble member is restored with the architecture of its own
params.yaml, so members may differ in anything but their interface: input
channels, classes, output activation and spatial rank must agree, and the
run's window (`input_image_size`) must suit every member's per-axis
strides.
"""

from __future__ import annotations

import dataclasses
from typing import Optional, Sequence

import keras
import tensorflow as tf

from unet3d import config as config_lib
from unet3d import models as models_lib
from unet3d import run_dir
from unet3d.config import Config, ConfigError

# Keys every member must share with the run's config.
_INTERFACE = ('num_channels', 'num_classes', 'model.output_activation',
              'model.spatial_dims')


def member_dirs(cfg: Config) -> list[str]:
  """The model folders to restore: inference.ensemble, else [model_dir]."""
  return list(cfg.inference.ensemble) or [cfg.model_dir]


def home_dir(cfg: Config) -> str:
  """Where reports go: model_dir, else the first ensemble member."""
  return cfg.model_dir or (cfg.inference.ensemble or [''])[0]


def is_ensemble(cfg: Config) -> bool:
  return len(cfg.inference.ensemble) > 1


def member_configs(cfg: Config) -> list[Config]:
  """Each member's config: its own params.yaml with model_dir pointing at
  the folder (it may have moved since training). A single model uses `cfg`
  itself. Checks the shared interface; raises a one-line ConfigError
  naming the member and the key."""
  if not cfg.inference.ensemble:
    return [cfg]
  configs = []
  for folder in cfg.inference.ensemble:
    member = run_dir.load_params(folder)
    if member is None:
      raise ConfigError(f'inference.ensemble: {folder} has no '
                        f'{run_dir.PARAMS_FILE} (expected a training run '
                        'folder)')
    member = dataclasses.replace(member, model_dir=folder)
    for key in _INTERFACE:
      if config_lib.value_at(member, key) != config_lib.value_at(cfg, key):
        raise ConfigError(f'inference.ensemble: {folder} has {key}='
                          f'{config_lib.value_at(member, key)!r}, the run has '
                          f'{config_lib.value_at(cfg, key)!r}')
    _check_window(cfg, folder, models_lib.axis_strides(member))
    configs.append(member)
  return configs


def _check_window(cfg: Config, folder: str, strides: list[int]) -> None:
  """input_image_size (the window) divides by a member's per-axis strides."""
  size = cfg.input_image_size
  for axis, (s, stride) in enumerate(zip(size, strides)):
    if s % stride:
      raise ConfigError(f'inference.ensemble: {folder} needs sizes divisible '
                        f'by the strides {strides} per axis; input_image_size '
                        f'is {size} (axis {axis}: {s} % {stride} != 0)')


@dataclasses.dataclass(frozen=True)
class Member:
  """One model to restore: its config, its checkpoint prefix, and the older
  intact ones to fall back on when that one fails its checksum at restore."""
  cfg: Config
  checkpoint: str
  fallbacks: tuple[str, ...] = ()


def members(cfg: Config, checkpoint: str = 'latest') -> list[Member]:
  """Each member's config and checkpoint, read and checked once, before any
  model is built (one-line ConfigErrors). An explicit checkpoint path names
  one model, not several."""
  configs = member_configs(cfg)
  if len(configs) > 1 and checkpoint not in ('latest', 'best'):
    raise ConfigError(f'--checkpoint: {checkpoint} is one checkpoint; an '
                      'ensemble takes latest or best of each member')
  planned = []
  for c in configs:
    found = run_dir.checkpoint_candidates(c.model_dir, checkpoint)
    planned.append(Member(c, found[0], tuple(found[1:])))
  return planned


def restore_models(planned: Sequence[Member],
                   strategy: Optional[tf.distribute.Strategy] = None
                  ) -> tuple[list[keras.Model], list[int]]:
  """Every member's model (built under `strategy`) and checkpoint step."""
  restored, steps = [], []
  for member in planned:
    model, step = run_dir.restore_model(member.cfg, member.checkpoint,
                                        strategy, member.fallbacks)
    restored.append(model)
    steps.append(step)
  return restored, steps


def describe(cfg: Config, steps: Sequence[int]) -> list[dict]:
  """[{'model_dir', 'step'}] of the members, for reports."""
  return [{'model_dir': d, 'step': int(s)}
          for d, s in zip(member_dirs(cfg), steps)]

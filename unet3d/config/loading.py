"""A config from its sources, and back to YAML text.

Values are resolved in this order, later winning:
defaults -> ``--config_file`` -> ``--params_override`` -> explicit flags;
the result is validated. Reading and writing params.yaml in a run folder
(which may be on gs://) is `unet3d.run_dir`'s job; this module turns
configs into YAML text and back.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Optional

import yaml

from unet3d.config.coerce import merge_into
from unet3d.config.overrides import parse_override
from unet3d.config.schema import Config
from unet3d.config.validation import validate
from unet3d import yaml_safe
from unet3d.errors import ConfigError


def parse_yaml(text: str, source: str) -> dict[str, Any]:
  """A YAML mapping of keys from text (`unet3d.yaml_safe`: no aliases, no
  duplicate keys); errors name `source`."""
  loaded = yaml_safe.load(text, source)
  if loaded is None:
    return {}
  if not isinstance(loaded, dict):
    raise ConfigError(f'{source}: expected a mapping of keys')
  return loaded


def load_yaml_file(path: str) -> dict[str, Any]:
  """Reads a YAML config file (local, or gs:// and any TensorFlow
  filesystem); errors name the file."""
  if '://' in path:  # TensorFlow is imported only for URL paths
    from unet3d import fileio  # pylint: disable=g-import-not-at-top
    if not fileio.isfile(path):
      raise ConfigError(f'config file {path}: not found')
    return parse_yaml(fileio.read_text(path), f'config file {path}')
  if not os.path.isfile(path):
    raise ConfigError(f'config file {path}: not found')
  with open(path) as f:
    return parse_yaml(f.read(), f'config file {path}')


def merge(cfg: Config, values: dict[str, Any]) -> Config:
  """Returns `cfg` with a nested mapping of values merged in."""
  return merge_into(cfg, values)


def build_config(config_file: Optional[str] = None,
                 params_override: Optional[str] = None,
                 flag_values: Optional[dict[str, Any]] = None,
                 base: Optional[Config] = None) -> Config:
  """Resolves defaults -> config file -> override -> flags, then validates.

  Args:
    config_file: a YAML file, or None.
    params_override: a YAML/JSON string or `a.b=c,d=e`, or None.
    flag_values: explicitly set flags by config key; None values are skipped.
    base: the starting config (defaults when None), e.g. a saved params.yaml.
  """
  cfg = base if base is not None else Config()
  if config_file:
    cfg = merge(cfg, load_yaml_file(config_file))
  cfg = merge(cfg, parse_override(params_override))
  if flag_values:
    cfg = merge(cfg, {k: v for k, v in flag_values.items() if v is not None})
  validate(cfg)
  return cfg


def to_dict(cfg: Config) -> dict[str, Any]:
  """The config as nested plain dicts, lists and scalars."""
  return dataclasses.asdict(cfg)


def to_yaml(cfg: Config) -> str:
  """The resolved config as YAML text (what params.yaml holds)."""
  return yaml.safe_dump(to_dict(cfg), sort_keys=False, default_flow_style=None)


def from_yaml(text: str, source: str) -> Config:
  """A validated config from YAML text; errors name `source`."""
  return build_config_from_mapping(parse_yaml(text, source))


def build_config_from_mapping(values: dict[str, Any]) -> Config:
  """Defaults with `values` merged in, validated."""
  cfg = merge(Config(), values)
  validate(cfg)
  return cfg

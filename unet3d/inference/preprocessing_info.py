"""The converter's dataset.json as inference replays it: which file, and
whether its preprocessing suits the model (predict and export share it).
"""

from __future__ import annotations

from typing import Any, Optional

from absl import logging

from unet3d import fileio
from unet3d.config import Config, ConfigError
from unet3d.inference import slices
from unet3d.input import dataset_info
from unet3d.preprocess import dataset_json


def load_dataset_info(cfg: Config) -> Optional[dict[str, Any]]:
  """The converter's dataset.json for `predict.preprocessing: dataset_json`
  (None for `none`), checked against the model's num_channels."""
  if cfg.predict.preprocessing == 'none':
    return None
  path = (cfg.predict.dataset_json or
          dataset_info.path_beside(cfg.training_file_pattern))
  if not path:
    raise ConfigError(
        'predict.dataset_json: required to replay the converter\'s '
        'preprocessing (no dataset.json beside training_file_pattern); set '
        'predict.preprocessing=none for inputs that are already preprocessed')
  if not fileio.exists(path):
    raise ConfigError(f'predict.dataset_json: {path} not found')
  info = dataset_info.read(path)
  plan = dataset_json.plan_from_dataset_info(info, source=path)
  channels = slices.volume_channels(cfg, info)
  if len(plan.norms) != channels:
    raise ValueError(f'{path}: preprocessing.normalization lists '
                     f'{len(plan.norms)} channel(s), but the model expects '
                     f'{slices.expected_channels(cfg, info)}')
  skipped = sorted(k for k, v in info['preprocessing'].items()
                   if k not in dataset_json.REPLAYED_PREPROCESSING and v and
                   not (k == 'slices' and cfg.model.spatial_dims == 2))
  if skipped:
    logging.warning('%s: dataset-specific preprocessing %s is not replayed; '
                    'predicting on the whole volume', path, skipped)
  return info

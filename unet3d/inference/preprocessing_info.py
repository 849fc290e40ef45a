"""The converter's dataset.json as inference replays it: which file, and
whether its preprocessing suits the model (predict and export share it);
and the training fingerprint predict's quality control compares with.
"""

from __future__ import annotations

from typing import Any, Optional

from absl import logging

from unet3d import fileio
from unet3d.config import Config, ConfigError
from unet3d.inference import quality_control
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


def quality_reference(cfg: Config, info: Optional[dict[str, Any]]
                     ) -> Optional[quality_control.Reference]:
  """The training ranges `predict.quality_control` compares with, or None
  (with a log line saying why) when it is off or there is nothing to
  compare with: no dataset.json, or one without a fingerprint.

  info: `load_dataset_info`'s dataset.json; None with `predict.preprocessing:
  none`, when an explicit `predict.dataset_json` still gives the reference
  (the inputs are then on its stored grid already).
  """
  if not cfg.predict.quality_control:
    return None
  path = (cfg.predict.dataset_json or
          dataset_info.path_beside(cfg.training_file_pattern))
  try:
    if info is None:
      if not cfg.predict.dataset_json:
        logging.info('predict.quality_control: skipped (no dataset.json with '
                     'predict.preprocessing=none; set predict.dataset_json)')
        return None
      info = dataset_info.read(path)
    return quality_control.reference_from_dataset_info(info, path)
  except (ValueError, OSError) as e:
    logging.warning('predict.quality_control: skipped (%s)',
                    ' '.join(str(e).split()))
    return None

"""The one config schema of unet3d: defaults, YAML + overrides, validation.

One job per module: `schema` (the dataclasses: every key, its type, default
and meaning), `coerce` (plain YAML values into typed dataclasses),
`overrides` (`--params_override`), `validation` (every key's checks; the
model zoo, losses and optimizers own theirs) and `loading` (defaults ->
config file -> override -> flags, and back to YAML). Callers import the
names below from `unet3d.config`. Importing it does not import TensorFlow.
"""

# pylint: disable=unused-import (the package's public names)
from unet3d.config.loading import build_config, build_config_from_mapping
from unet3d.config.loading import from_yaml, load_yaml_file, merge
from unet3d.config.loading import parse_yaml, to_dict, to_yaml
from unet3d.config.overrides import nest_dotted, parse_override
from unet3d.config.schema import CHOICES, LEGACY_IGNORED_KEYS, value_at
from unet3d.config.schema import AugmentationConfig, Config, DataConfig
from unet3d.config.schema import InferenceConfig, LossConfig, MetricsConfig
from unet3d.config.schema import ModelConfig, PlanConfig, PredictConfig
from unet3d.config.schema import TrainConfig
from unet3d.config.validation import check_divisible_by_replicas
from unet3d.config.validation import eval_partition_dims, parse_num_gpus
from unet3d.config.validation import validate
from unet3d.errors import ConfigError

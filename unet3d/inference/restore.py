"""The models that eval, predict and export run, restored once the same
way: the members of `ensemble.members` (configs and checkpoints checked
before any model is built), their checkpoint steps, the report's
description of them, and the probabilities function they give.
"""

from __future__ import annotations

import dataclasses
from typing import Optional, Sequence

import keras
import tensorflow as tf

from unet3d import distribute
from unet3d.config import Config
from unet3d.inference import ensemble
from unet3d.inference import whole_volume


@dataclasses.dataclass(frozen=True)
class Restored:
  """The restored models of a run or an ensemble.

  models: one Keras model per member; steps: their checkpoint steps;
  step: the one model's step (None for an ensemble); members:
  [{'model_dir', 'step'}] for reports (None for one model); probabilities:
  window batch [b, *patch, C] -> float32 [b, *patch, K], the members' mean
  (`whole_volume.probabilities_fn`, batch norm folded into the convs).
  """
  models: list[keras.Model]
  steps: list[int]
  step: Optional[int]
  members: Optional[list[dict]]
  probabilities: tf.types.experimental.PolymorphicFunction


def restore_for_inference(
    cfg: Config, checkpoint: str = 'latest',
    strategy: Optional[tf.distribute.Strategy] = None, *,
    planned: Optional[Sequence[ensemble.Member]] = None) -> Restored:
  """Restores `checkpoint` ('latest', 'best' or a path) of model_dir, or of
  every `inference.ensemble` member, with each member's own architecture.

  Args:
    cfg: the run's config (the members' interface, the output activation).
    checkpoint: which checkpoint of each member.
    strategy: the variables are built under its scope (the default
      strategy when None).
    planned: `ensemble.members(cfg, checkpoint)` when the caller checked
      the configs and checkpoints earlier (before its own checks or the
      strategy); read here otherwise. Either way before any model is built.
  """
  if planned is None:
    planned = ensemble.members(cfg, checkpoint)
  models, steps = ensemble.restore_models(planned, strategy)
  distribute.set_inference_precision(cfg)
  # Inference only: batch norm folded into the convolutions (the folded
  # variables under the same strategy as the models).
  with (strategy or tf.distribute.get_strategy()).scope():
    probabilities = whole_volume.probabilities_fn(cfg, models,
                                                  fold_batch_norm=True)
  return Restored(
      models=models, steps=steps,
      step=steps[0] if len(steps) == 1 else None,
      members=(ensemble.describe(cfg, steps) if ensemble.is_ensemble(cfg)
               else None),
      probabilities=probabilities)

"""The training policy after each evaluation: best checkpoint, reduce-on-
plateau and early stopping, decided from the mean foreground dice.

Pure Python (no TensorFlow), so that a dice sequence can be checked by hand:
an evaluation improves when its dice exceeds the best so far by more than
`min_delta`; every `reduce_lr_patience`-th evaluation in a row without
improvement multiplies the learning rate by `reduce_lr_factor`; training
stops once `early_stopping_patience` evaluations in a row have not improved.
The Trainer keeps the plateau state in checkpointed variables and applies
each `Decision`.
"""

from __future__ import annotations

import dataclasses
from typing import Optional

from unet3d.config import Config

NO_BEST = -1.0  # best_dice before the first improvement (dice is >= 0).


@dataclasses.dataclass(frozen=True)
class Plateau:
  """What the policy remembers between evaluations: the best mean
  foreground dice (NO_BEST before any) and the evaluations since it."""
  best_dice: float = NO_BEST
  evals_since_best: int = 0


@dataclasses.dataclass(frozen=True)
class Decision:
  """The outcome of one evaluation.

  `improved`: the dice beat the best by more than min_delta; `save_best`:
  keep this checkpoint as the best; `lr_factor`: multiply the learning-rate
  scale by it (1.0: unchanged); `stop`: stop training early; `plateau`: the
  state after this evaluation.
  """
  improved: bool
  save_best: bool
  lr_factor: float
  stop: bool
  plateau: Plateau


@dataclasses.dataclass(frozen=True)
class Policy:
  """The train.* settings of the policy; 0 patience turns a rule off."""
  min_delta: float = 0.0
  early_stopping_patience: int = 0
  reduce_lr_patience: int = 0
  reduce_lr_factor: float = 0.5
  keep_best_checkpoint: bool = True

  @classmethod
  def from_config(cls, cfg: Config) -> 'Policy':
    train = cfg.train
    return cls(min_delta=train.early_stopping_min_delta,
               early_stopping_patience=train.early_stopping_patience,
               reduce_lr_patience=train.reduce_lr_patience,
               reduce_lr_factor=train.reduce_lr_factor,
               keep_best_checkpoint=train.keep_best_checkpoint)

  def improves(self, dice: Optional[float], best_dice: float) -> bool:
    """True when `dice` (None: no foreground dice) beats `best_dice` by more
    than min_delta."""
    return dice is not None and dice > best_dice + self.min_delta

  def lr_factor(self, evals_since_best: int) -> float:
    """The learning-rate factor after `evals_since_best` evaluations in a
    row without improvement: reduce_lr_factor at each multiple of
    reduce_lr_patience, else 1.0."""
    patience = self.reduce_lr_patience
    if patience and evals_since_best and evals_since_best % patience == 0:
      return self.reduce_lr_factor
    return 1.0

  def should_stop(self, evals_since_best: int) -> bool:
    """True once early_stopping_patience evaluations have not improved."""
    patience = self.early_stopping_patience
    return bool(patience) and evals_since_best >= patience

  def decide(self, plateau: Plateau, dice: Optional[float]) -> Decision:
    """The decision for an evaluation with mean foreground dice `dice`
    (None when no foreground class was scored), given the state before."""
    if self.improves(dice, plateau.best_dice):
      after = Plateau(best_dice=dice, evals_since_best=0)
      return Decision(improved=True, save_best=self.keep_best_checkpoint,
                      lr_factor=1.0, stop=self.should_stop(0), plateau=after)
    waited = plateau.evals_since_best + 1
    after = Plateau(best_dice=plateau.best_dice, evals_since_best=waited)
    return Decision(improved=False, save_best=False,
                    lr_factor=self.lr_factor(waited),
                    stop=self.should_stop(waited), plateau=after)

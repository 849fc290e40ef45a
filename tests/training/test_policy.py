"""Tests for unet3d/training/policy.py: hand-computed dice sequences.

Dice values and min_delta are multiples of 1/16, so every sum is exact and
"equal to best + min_delta" is really equal (not an improvement).
"""

import dataclasses

from unet3d.config import Config
from unet3d.training import policy as policy_lib


def _run(policy, dices):
  """The decisions for a sequence of evaluations, from a fresh state."""
  plateau, decisions = policy_lib.Plateau(), []
  for dice in dices:
    decision = policy.decide(plateau, dice)
    decisions.append(decision)
    plateau = decision.plateau
  return decisions


def test_improvement_lr_reduction_and_stop_on_a_sequence():
  policy = policy_lib.Policy(min_delta=0.0625, early_stopping_patience=3,
                             reduce_lr_patience=2, reduce_lr_factor=0.5)
  dices = [0.5, 0.5625, 0.625, 0.6875, 0.625, 0.75, 0.75, 0.6875, 0.8125]
  decisions = _run(policy, dices)
  # 0.5625 and 0.6875 equal best + min_delta: not improvements.
  assert [d.improved for d in decisions] == [
      True, False, True, False, False, True, False, False, False]
  assert [d.plateau.best_dice for d in decisions] == [
      0.5, 0.5, 0.625, 0.625, 0.625, 0.75, 0.75, 0.75, 0.75]
  assert [d.plateau.evals_since_best for d in decisions] == [
      0, 1, 0, 1, 2, 0, 1, 2, 3]
  # The second evaluation in a row without improvement halves the LR.
  assert [d.lr_factor for d in decisions] == [
      1.0, 1.0, 1.0, 1.0, 0.5, 1.0, 1.0, 0.5, 1.0]
  assert [d.stop for d in decisions] == [False] * 8 + [True]
  assert [d.save_best for d in decisions] == [d.improved for d in decisions]


def test_the_lr_is_reduced_at_every_multiple_of_the_patience():
  policy = policy_lib.Policy(reduce_lr_patience=2, reduce_lr_factor=0.25)
  decisions = _run(policy, [0.5] + [0.25] * 6)
  assert [d.lr_factor for d in decisions] == [
      1.0, 1.0, 0.25, 1.0, 0.25, 1.0, 0.25]
  scale = 1.0
  for d in decisions:
    scale *= d.lr_factor
  assert scale == 0.25 ** 3
  assert not any(d.stop for d in decisions)  # early stopping is off


def test_the_first_evaluation_improves_unless_min_delta_exceeds_one():
  assert _run(policy_lib.Policy(), [0.0])[0].improved
  # No dice beats -1 + 2: every evaluation counts as no improvement, so
  # patience 2 stops at the second and patience 1 reduces the LR each time.
  policy = policy_lib.Policy(min_delta=2.0, early_stopping_patience=2,
                             reduce_lr_patience=1, reduce_lr_factor=0.5)
  decisions = _run(policy, [1.0, 1.0])
  assert [d.improved for d in decisions] == [False, False]
  assert [d.lr_factor for d in decisions] == [0.5, 0.5]
  assert [d.stop for d in decisions] == [False, True]
  assert decisions[-1].plateau == policy_lib.Plateau(
      best_dice=policy_lib.NO_BEST, evals_since_best=2)


def test_no_foreground_dice_counts_as_no_improvement():
  policy = policy_lib.Policy(early_stopping_patience=2)
  decisions = _run(policy, [0.5, None, None])
  assert [d.improved for d in decisions] == [True, False, False]
  assert [d.plateau.best_dice for d in decisions] == [0.5, 0.5, 0.5]
  assert [d.stop for d in decisions] == [False, False, True]


def test_zero_patience_turns_the_rules_off():
  policy = policy_lib.Policy(early_stopping_patience=0, reduce_lr_patience=0)
  decisions = _run(policy, [0.5] + [0.0] * 10)
  assert all(d.lr_factor == 1.0 for d in decisions)
  assert not any(d.stop for d in decisions)
  assert decisions[-1].plateau.evals_since_best == 10
  assert not policy.should_stop(10**6)


def test_an_improvement_resets_the_count_and_the_stop():
  policy = policy_lib.Policy(early_stopping_patience=2)
  plateau = policy_lib.Plateau(best_dice=0.5, evals_since_best=5)
  assert policy.should_stop(plateau.evals_since_best)
  decision = policy.decide(plateau, 0.625)
  assert decision.improved and not decision.stop
  assert decision.plateau == policy_lib.Plateau(0.625, 0)


def test_keep_best_checkpoint_off_never_saves():
  policy = policy_lib.Policy(keep_best_checkpoint=False)
  decisions = _run(policy, [0.25, 0.5, 0.75])
  assert all(d.improved for d in decisions)
  assert not any(d.save_best for d in decisions)


def test_from_config_reads_the_train_settings():
  cfg = Config()
  cfg = dataclasses.replace(cfg, train=dataclasses.replace(
      cfg.train, early_stopping_min_delta=0.125, early_stopping_patience=4,
      reduce_lr_patience=3, reduce_lr_factor=0.1,
      keep_best_checkpoint=False))
  assert policy_lib.Policy.from_config(cfg) == policy_lib.Policy(
      min_delta=0.125, early_stopping_patience=4, reduce_lr_patience=3,
      reduce_lr_factor=0.1, keep_best_checkpoint=False)

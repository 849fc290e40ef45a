"""Deterministic train/validation splits and k folds of case ids.

The split file (`splits.json`, read by `data.split_file` + `data.fold`):

  {"seed": 0, "num_folds": 5,
   "folds": [{"train": ["case_a", ...], "val": ["case_b", ...]}, ...]}

With `num_folds` > 1 the validation sides of the folds partition the cases
(every case is validated exactly once). With `num_folds` == 1 there is one
fold whose validation side is `validation_fraction` of the cases.

TensorFlow-free at import (converter workers use it).

A record cut from a case (a LiTS augmented crop, a 2D slice) is named
`<case id>#<part>`; folds list case ids, and a record belongs to the fold
side of its case (the input pipeline's split filter).
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

# The sides of every fold; shards are named after them.
SPLIT_NAMES = ('train', 'val')
SPLITS_JSON = 'splits.json'
# Separates a case id from the part of the case a record holds.
PART_SEPARATOR = '#'


def part_id(case_id: str, part: str) -> str:
  """The record id of one part of a case: `volume-3#z0042`."""
  return f'{case_id}{PART_SEPARATOR}{part}'


def make_splits(case_ids: Sequence[str], num_folds: int = 1, seed: int = 0,
                validation_fraction: float = 0.2) -> dict[str, Any]:
  """Splits case ids into folds; the same ids and seed give the same folds.

  The ids are sorted before a seeded permutation, so the order in which
  cases were found does not matter.
  """
  ids = sorted(set(case_ids))
  if len(ids) != len(case_ids):
    raise ValueError('make_splits: case ids must be unique')
  if num_folds < 1:
    raise ValueError(f'--num_folds: must be >= 1, got {num_folds}')
  if num_folds > 1 and num_folds > len(ids):
    raise ValueError(f'--num_folds: {num_folds} folds need at least '
                     f'{num_folds} cases, found {len(ids)}')
  if not 0.0 <= validation_fraction < 1.0:
    raise ValueError('--validation_fraction: must be in [0, 1), got '
                     f'{validation_fraction}')
  order = [ids[i] for i in np.random.default_rng(seed).permutation(len(ids))]
  if num_folds == 1:
    num_val = int(round(validation_fraction * len(ids)))
    if validation_fraction > 0 and len(ids) > 1:
      num_val = min(max(num_val, 1), len(ids) - 1)
    val_sets = [order[:num_val]]
  else:
    val_sets = [order[k::num_folds] for k in range(num_folds)]
  folds = []
  for val in val_sets:
    held_out = set(val)
    folds.append({'train': sorted(i for i in ids if i not in held_out),
                  'val': sorted(val)})
  return {'seed': int(seed), 'num_folds': int(num_folds), 'folds': folds}


def check_fold(splits: dict[str, Any], fold: int) -> dict[str, list[str]]:
  """The fold's {'train': [...], 'val': [...]}; names --fold when missing."""
  if not 0 <= fold < len(splits['folds']):
    raise ValueError(f'--fold: {fold} is not one of the '
                     f'{len(splits["folds"])} folds (0..'
                     f'{len(splits["folds"]) - 1})')
  return splits['folds'][fold]


def without(splits: dict[str, Any], case_ids) -> dict[str, Any]:
  """The same folds with `case_ids` removed (e.g. cases that failed)."""
  drop = set(case_ids)
  return {**splits, 'folds': [
      {side: [i for i in ids if i not in drop] for side, ids in fold.items()}
      for fold in splits['folds']]}


def write_splits(path: str, splits: dict[str, Any]) -> None:
  """Writes the split file atomically."""
  # Imported here: converter worker processes import this module (case ids
  # of record parts) and must not import TensorFlow, which fileio does.
  from unet3d import fileio  # pylint: disable=g-import-not-at-top
  fileio.write_json(path, splits)


def fold_case_ids(splits: Any, fold: int, side: str) -> list[str]:
  """The case ids of one side ('train' or 'val') of a fold of a split file's
  content; a one-line ValueError when it has no such fold."""
  try:
    return list(splits['folds'][fold][side])
  except (KeyError, IndexError, TypeError):
    raise ValueError(f'has no fold {fold} with train/val case lists '
                     '(expected {"folds": [{"train": [...], "val": [...]}]})'
                    ) from None

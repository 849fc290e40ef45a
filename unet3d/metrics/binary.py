"""Host-side overlap of two boolean masks of one case (numpy, any rank).

The in-graph counts of `overlap` score whole label maps on device; these
score one structure on the host, for lesion-wise and per-folder reports,
with the empty-mask rule of a `Conventions`.
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from unet3d.metrics.conventions import Conventions, empty_score


def _sizes(pred, label):
  pred, label = np.asarray(pred, bool), np.asarray(label, bool)
  if pred.shape != label.shape:
    raise ValueError(f'pred shape {pred.shape} does not match label shape '
                     f'{label.shape}')
  return (int(np.count_nonzero(pred & label)), int(np.count_nonzero(pred)),
          int(np.count_nonzero(label)))


def dice(pred, label, conventions: Optional[Conventions] = None) -> float:
  """2|P∩L| / (|P| + |L|) of two boolean masks [*spatial]."""
  conventions = conventions or Conventions()
  both, p, t = _sizes(pred, label)
  empty = empty_score('dice', p == 0, t == 0, conventions)
  return empty if empty is not None else 2.0 * both / (p + t)


def iou(pred, label, conventions: Optional[Conventions] = None) -> float:
  """|P∩L| / |P∪L| of two boolean masks [*spatial]."""
  conventions = conventions or Conventions()
  both, p, t = _sizes(pred, label)
  empty = empty_score('iou', p == 0, t == 0, conventions)
  return empty if empty is not None else both / (p + t - both)

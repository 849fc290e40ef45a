"""Per-volume scores of a 2D model: its slices' confusion counts summed by
case, which is the dice of the volume reassembled from the slices (the
UNet 3+ paper's per-volume dice), beside the per-slice means.

2D records are named `<case id>#z<slice index>` (`splits.part_id`, the
LiTS 2D and PNG-slice converters); the evaluator's file-safe names turn
`#` into `_`, and both spellings are read.
"""

from __future__ import annotations

import re
from typing import Any, Mapping, Optional, Sequence

import numpy as np

from unet3d.metrics import overlap

_SLICE_NAME = re.compile(r'^(?P<case>.+)[#_]z(?P<index>\d+)(?:-\d+)?$')


def volume_of(record_id: str) -> Optional[tuple[str, int]]:
  """(case id, slice index) of a slice record's id, or None."""
  match = _SLICE_NAME.match(record_id)
  return (match['case'], int(match['index'])) if match else None


def volume_counts(record_ids: Sequence[str], counts: np.ndarray
                 ) -> tuple[list[str], np.ndarray]:
  """(case ids, counts [V, K, 4]): each case's slice counts [N, K, 4]
  summed; records that are not slices count as their own volume."""
  order, totals = [], {}
  for record_id, count in zip(record_ids, np.asarray(counts, np.float64)):
    found = volume_of(record_id)
    case = found[0] if found else record_id
    if case not in totals:
      order.append(case)
      totals[case] = np.zeros_like(count)
    totals[case] += count
  return order, np.stack([totals[c] for c in order])


def reassemble(slices: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
  """{case id: [X, Y, Z]} from {record id: slice [X, Y]}, slices in index
  order along the last axis (the axis the converter cut)."""
  by_case: dict[str, list[tuple[int, np.ndarray]]] = {}
  for record_id, array in slices.items():
    case, index = volume_of(record_id)
    by_case.setdefault(case, []).append((index, array))
  return {case: np.stack([a for _, a in sorted(items, key=lambda t: t[0])],
                         axis=-1)
          for case, items in by_case.items()}


def per_volume_report(record_ids: Sequence[str], counts: np.ndarray,
                      class_names: Sequence[str], empty_class: str,
                      first_scored_class: int) -> dict[str, Any]:
  """eval_results.json's `per_volume`: per-class means over volumes,
  the mean foreground dice from `first_scored_class`, the volume count
  and each volume's dice."""
  cases, totals = volume_counts(record_ids, counts)
  report = overlap.summarize(totals, class_names=class_names,
                             empty_class=empty_class,
                             include_background=first_scored_class == 0)
  dice = overlap.scores_from_counts(totals, empty_class)['dice']
  return {
      'per_class': report['per_class'],
      'mean_foreground_dice': report['mean_foreground_dice'],
      'num_volumes': len(cases),
      'dice_per_volume': {
          case: {name: (None if np.isnan(d) else float(d))
                 for name, d in zip(class_names, row)}
          for case, row in zip(cases, np.asarray(dice, np.float64))},
  }


def format_per_volume(report: Mapping[str, Any]) -> str:
  """The printed lines: per-class dice per volume beside the per-slice
  figure."""
  volume = report.get('per_volume')
  if not volume:
    return ''
  def fmt(value):
    return 'n/a' if value is None else f'{value:.4f}'
  lines = [f"{'class':>16s}  {'slice':>7s}  {'volume':>7s}  (dice, "
           f"{report['num_cases']} slices, {volume['num_volumes']} volumes)"]
  for name, scores in volume['per_class'].items():
    per_slice = report['per_class'].get(name, {}).get('dice')
    lines.append(f"{name:>16s}  {fmt(per_slice):>7s}  "
                 f"{fmt(scores['dice']):>7s}")
  lines.append(f"{'mean foreground':>16s}  "
               f"{fmt(report['mean_foreground_dice']):>7s}  "
               f"{fmt(volume['mean_foreground_dice']):>7s}")
  return '\n'.join(lines)

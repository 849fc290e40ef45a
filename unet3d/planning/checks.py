"""Checks of a fingerprint that become plan warnings (not plan choices).

Each returns warning lines; label names in them are quoted with `repr`
(the recipe writer escapes comment lines as well).
"""

from __future__ import annotations

from unet3d.planning import fingerprint as fingerprint_lib


def absent_labels(fp: fingerprint_lib.Fingerprint) -> list[str]:
  """The declared foreground classes (mask channels when multi-label) with
  no voxel in any stored case, by index."""
  first = 0 if fp.multi_label else 1
  return [k for k in sorted(fp.labels, key=int) if int(k) >= first and
          not any(c.class_voxel_counts.get(k, 0) for c in fp.cases)]


def label_warnings(fp: fingerprint_lib.Fingerprint) -> list[str]:
  """A warning naming the declared labels absent from every case."""
  absent = absent_labels(fp)
  if not absent:
    return []
  names = ', '.join(f'{k} {fp.labels[k]!r}' for k in absent)
  return [f'labels absent from every case ({names}): dataset.json declares '
          'them but no stored label holds a voxel of them; the model cannot '
          'learn them (check the labels or the label files)']

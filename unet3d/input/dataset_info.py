"""The converter's dataset.json beside the TFRecord shards, as the online
side reads it: where it is, its content, and the class names it gives.

The converter (`unet3d.preprocess.dataset_json`) writes it; this module and
that one share the file name.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import os
from typing import Any, Mapping, Optional

from unet3d import fileio

DATASET_JSON = 'dataset.json'
# Raised when the per-case fingerprint keys change, so that the planner
# refuses a dataset.json written before them.
FINGERPRINT_VERSION = 1
# The keys a plan depends on (unet3d/planning); its hash covers exactly these.
FINGERPRINT_KEYS = ('fingerprint_version', 'labels', 'label_type',
                    'modalities', 'intensity', 'preprocessing', 'cases')


def path_beside(file_pattern: Optional[str]) -> Optional[str]:
  """The dataset.json in the folder of the (first, when comma-separated)
  shard pattern, when it exists there."""
  if not file_pattern:
    return None
  path = fileio.join(fileio.dirname(file_pattern.split(',')[0]), DATASET_JSON)
  return path if fileio.exists(path) else None


def read(path: str) -> dict[str, Any]:
  """The parsed dataset.json; a one-line ValueError naming the file."""
  try:
    info = fileio.read_json(path)
  except ValueError as e:
    raise ValueError(f'{path}: cannot read dataset.json ({e})') from None
  if not isinstance(info, dict):
    raise ValueError(f'{path}: expected a JSON object (the converter\'s '
                     'dataset.json)')
  return info


def class_names(patterns: list[Optional[str]],
                num_classes: int) -> Optional[list[str]]:
  """Class names from the first dataset.json beside one of the patterns
  whose `labels` has num_classes entries; None when there is none."""
  for pattern in patterns:
    path = path_beside(pattern)
    if not path:
      continue
    names = names_from(read(path), num_classes)
    if names:
      return names
  return None


def names_from(info: Optional[dict], num_classes: int
              ) -> Optional[list[str]]:
  """The class names of a parsed dataset.json when its `labels` has
  num_classes entries; None otherwise."""
  labels = (info or {}).get('labels')
  if isinstance(labels, dict) and len(labels) == num_classes:
    return [labels[k] for k in sorted(labels, key=int)]
  return None


def cases_read_by(file_pattern: Optional[str]) -> Optional[int]:
  """How many cases of the dataset.json beside the records lie in shards
  the pattern matches; None when there is no dataset.json (or it does not
  say which shard holds each case)."""
  path = path_beside(file_pattern)
  if not path:
    return None
  cases = read(path).get('cases')
  if not isinstance(cases, list) or not all(
      isinstance(c, dict) and isinstance(c.get('shard'), str) for c in cases):
    return None
  names = [os.path.basename(p) for p in file_pattern.split(',')]
  return sum(any(fnmatch.fnmatch(c['shard'], n) for n in names)
             for c in cases)


def fingerprint_sha256(info: Mapping[str, Any]) -> str:
  """The hash of a parsed dataset.json's fingerprint (FINGERPRINT_KEYS); a
  planned recipe records it as plan.fingerprint_sha256."""
  content = {k: info.get(k) for k in FINGERPRINT_KEYS}
  text = json.dumps(content, sort_keys=True, separators=(',', ':'))
  return hashlib.sha256(text.encode()).hexdigest()

"""Quality control of a prediction against the training data's fingerprint.

The converter records, per case of its dataset.json (see
`unet3d.preprocess.dataset_json`), the stored grid {shape, spacing}, the
voxels of each class, the face-connected components of each foreground
class and its centroid on the stored grid. `reference_from_dataset_info`
turns the training cases (split 'train'; every case when none is marked)
into per-class ranges, and `check_prediction` compares one segmentation
with them. Four checks per foreground class (mask channel for multi-label
data):

  volume      the predicted volume (mm^3) below 0.5 x the smallest or
              above 2 x the largest training volume (of the training cases
              that hold the class)
  components  more face-connected components than max(2 x the training
              maximum, the training maximum + 3)
  absent      no voxel of a class that every training case holds
  centroid    the centroid, as a fraction of the grid's extent per axis,
              more than 0.15 beyond the training range on some axis (a
              left/right swap, a structure on the wrong side)

The thresholds are the module's constants below. A flag never changes the
prediction.

The frame. Every check runs on the stored grid: the input after the
converter's own steps (as it ran them: reorientation to RAS, crop to the
nonzero box, resampling), which predict replays before the sliding window
and undoes afterwards. The training fingerprint was measured on that grid,
so axis order, orientation, spacing and the body's extent agree without
any conversion: a relative centroid is centroid_voxel / (stored shape - 1) on
both sides, the position within the body's nonzero bounding box when the
converter cropped to it (within the whole reoriented volume otherwise,
again on both sides). Volumes are stored-grid voxels x the stored voxel
volume, which differs from the output grid's count only by the resampling.
`predict.largest_component` is applied to the checked copy, so the checks
see what the output holds.

Numpy and scipy over the parsed dataset.json: nothing here reads files or
changes a prediction.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Optional, Sequence

import numpy as np
from scipy import ndimage

from unet3d.preprocess import label_maps

# Volume: flag below VOLUME_LOW x the smallest or above VOLUME_HIGH x the
# largest training volume. A handful of training cases seldom spans the
# range of new patients, hence a wide band.
VOLUME_LOW = 0.5
VOLUME_HIGH = 2.0
# Components: flag above max(COMPONENTS_FACTOR x the training maximum, the
# training maximum + COMPONENTS_EXTRA). The additive term lets a class of
# one component in training have a few specks before it is flagged.
COMPONENTS_FACTOR = 2.0
COMPONENTS_EXTRA = 3
# Centroid: flag farther than this fraction of the extent beyond the
# training range on any axis. Bodies differ in proportion and position in
# the field of view; a swap of sides moves a lateral structure at 0.3 of
# the extent to 0.7, far beyond the margin.
CENTROID_MARGIN = 0.15
# ndimage.label's face connectivity, as the converter counted `components`.
_FACE = ndimage.generate_binary_structure(3, 1)


@dataclass(frozen=True)
class ClassReference:
  """One foreground class (mask channel) over the training cases.

  volume_mm3: (smallest, largest) volume in mm^3 of the cases that hold it;
  max_components: the most face-connected components of any case;
  always_present: every training case holds it; centroid_range: per stored
  axis, (lowest, highest) centroid as a fraction of the extent, [3, 2].
  """
  name: str
  volume_mm3: tuple[float, float]
  max_components: int
  always_present: bool
  centroid_range: tuple[tuple[float, float], ...]


@dataclass(frozen=True)
class Reference:
  """The training fingerprint of a dataset.json: `source` names the file,
  `classes` maps a class index (mask channel) to its ranges; classes no
  training case holds are left out."""
  source: str
  num_cases: int
  classes: dict[int, ClassReference]


def training_cases(info: Mapping[str, Any]) -> list[Mapping[str, Any]]:
  """The dataset.json cases of the train split (every case when none is
  marked), as `unet3d.planning.fingerprint` picks them."""
  cases = list(info.get('cases') or [])
  train = [c for c in cases if c.get('split') == 'train']
  return train or cases


def _foreground(info: Mapping[str, Any]) -> list[int]:
  first = 0 if info.get('label_type') == 'multi_label' else 1
  return list(range(first, len(info.get('labels') or {})))


def _relative(centroid: Sequence[float], shape: Sequence[int]) -> np.ndarray:
  """Voxel centroid [3] as a fraction of the extent (index 0 -> 0, the last
  index -> 1) of a grid [3]."""
  return np.asarray(centroid, np.float64) / np.maximum(
      np.asarray(shape, np.float64) - 1.0, 1.0)


def _case_values(case: Mapping[str, Any], k: int, where: str
                ) -> tuple[float, int, Optional[np.ndarray]]:
  """(volume mm^3, components, relative centroid or None) of class k."""
  try:
    shape = [int(s) for s in case['stored']['shape']]
    spacing = [float(s) for s in case['stored']['spacing']]
    counts = case['class_voxel_counts']
    voxels = int(counts[k]) if k < len(counts) else 0
    if not voxels:
      return 0.0, 0, None
    components = int(case['components'][str(k)]['count'])
    centroid = case['centroid_voxel'][str(k)]
  except KeyError as e:
    raise ValueError(f'{where} has no {e}; re-convert the dataset with this '
                     'version of the converters to record its fingerprint'
                     ) from None
  except (TypeError, ValueError, IndexError):
    raise ValueError(f'{where}: malformed stored, class_voxel_counts, '
                     f'components or centroid_voxel of class {k}') from None
  if len(shape) != 3 or len(spacing) != 3 or len(centroid) != 3:
    raise ValueError(f'{where}: stored shape, spacing and centroid_voxel.{k} '
                     'need 3 values each')
  return voxels * float(np.prod(spacing)), components, _relative(centroid,
                                                                 shape)


def reference_from_dataset_info(info: Mapping[str, Any], source: str
                               ) -> Reference:
  """The per-class training ranges of a parsed dataset.json.

  Cases without a label (no class_voxel_counts) are left out. Raises a
  one-line ValueError naming `source` and the case when a training case
  lacks the fingerprint keys (a dataset.json of an older converter), or
  when no training case has a label.
  """
  cases = [c for c in training_cases(info) if c.get('class_voxel_counts')]
  if not cases:
    raise ValueError(f'{source}: no labelled training case to compare '
                     'predictions with')
  names = {str(k): str(v) for k, v in (info.get('labels') or {}).items()}
  classes = {}
  for k in _foreground(info):
    values = [_case_values(c, k, f"{source}: case {c.get('case_id')}")
              for c in cases]
    held = [v for v in values if v[2] is not None]
    if not held:
      continue
    volumes = [v[0] for v in held]
    centroids = np.array([v[2] for v in held])
    classes[k] = ClassReference(
        name=names.get(str(k), f'class_{k}'),
        volume_mm3=(min(volumes), max(volumes)),
        max_components=max(v[1] for v in values),
        always_present=len(held) == len(values),
        centroid_range=tuple(zip(centroids.min(0).tolist(),
                                 centroids.max(0).tolist())))
  return Reference(source, len(cases), classes)


def _flag(check: str, k: int, ref: ClassReference, value: Any,
          expected: Any, what: str) -> dict[str, Any]:
  return {'check': check, 'class': k, 'value': value, 'expected': expected,
          'message': f'class {k} ({ref.name}): {what}'}


def _largest(components: np.ndarray, count: int) -> np.ndarray:
  sizes = np.bincount(components.reshape(-1), minlength=count + 1)
  sizes[0] = 0
  return components == int(np.argmax(sizes))


def check_class(mask: np.ndarray, spacing: Sequence[float], k: int,
                ref: ClassReference, largest_component: bool = False
               ) -> list[dict[str, Any]]:
  """The flags of one class's predicted bool mask [X, Y, Z] on the stored
  grid with voxel size `spacing` [3] mm (module docstring); [] when
  plausible. largest_component: check only its largest component, as
  `predict.largest_component` writes it."""
  low, high = VOLUME_LOW * ref.volume_mm3[0], VOLUME_HIGH * ref.volume_mm3[1]
  voxel_mm3 = float(np.prod(spacing))
  if not mask.any():
    if not ref.always_present:
      return []
    return [_flag('absent', k, ref, 0.0, [low, high],
                  'absent, but every training case holds it')]
  components, count = ndimage.label(mask, _FACE)
  if largest_component and count > 1:
    mask, count = _largest(components, count), 1
  flags = []
  volume = float(mask.sum()) * voxel_mm3
  if not low <= volume <= high:
    flags.append(_flag('volume', k, ref, volume, [low, high],
                       f'volume {volume:.4g} mm^3 outside {low:.4g}-'
                       f'{high:.4g} mm^3 ({VOLUME_LOW:g}x the smallest to '
                       f'{VOLUME_HIGH:g}x the largest training volume)'))
  limit = max(int(COMPONENTS_FACTOR * ref.max_components),
              ref.max_components + COMPONENTS_EXTRA)
  if count > limit:
    flags.append(_flag('components', k, ref, int(count), [1, limit],
                       f'{count} components, more than {limit} (training '
                       f'at most {ref.max_components})'))
  relative = _relative(label_maps.centroid_voxel(mask), mask.shape)
  bounds = [(lo - CENTROID_MARGIN, hi + CENTROID_MARGIN)
            for lo, hi in ref.centroid_range]
  off = [a for a, (lo, hi) in enumerate(bounds)
         if not lo <= relative[a] <= hi]
  if off:
    where = ', '.join(f'{relative[a]:.2f} along axis {a} (training '
                      f'{ref.centroid_range[a][0]:.2f}-'
                      f'{ref.centroid_range[a][1]:.2f})' for a in off)
    flags.append(_flag('centroid', k, ref, relative.tolist(),
                       [list(b) for b in bounds],
                       f'centroid at {where} of the extent, beyond the '
                       f'+-{CENTROID_MARGIN:g} margin'))
  return flags


def check_prediction(labels: np.ndarray, spacing: Sequence[float],
                     reference: Reference,
                     largest_component: Sequence[int] = ()
                    ) -> list[dict[str, Any]]:
  """Every flag of one segmentation on the stored grid, by class.

  Args:
    labels: uint8 [X, Y, Z] class indices or [X, Y, Z, K] masks, on the
      stored grid (module docstring).
    spacing: its voxel size per axis [3] (mm).
    reference: `reference_from_dataset_info` of the training data.
    largest_component: the classes `predict.largest_component` reduces to
      their largest component in the output.

  Returns:
    [{'check': volume | components | absent | centroid, 'class': index,
    'value', 'expected': [low, high] (per axis for centroid: [3, 2]),
    'message': one line}]; [] for a plausible segmentation.
  """
  flags = []
  for k, ref in sorted(reference.classes.items()):
    if labels.ndim == 4 and k >= labels.shape[-1]:
      continue
    flags += check_class(label_maps.class_mask(labels, k), spacing, k, ref,
                         k in largest_component)
  return flags


def warning_line(input_path: str, flags: Sequence[Mapping[str, Any]]) -> str:
  """One line naming the file and every flag's message."""
  return (f'{input_path}: implausible segmentation (quality control): ' +
          '; '.join(f['message'] for f in flags))

"""PNG overlays of an evaluated case: three orthogonal slices through its
foreground centre, the image in grey with label contours (solid) and
prediction contours (dashed), one colour per class (matplotlib, Agg).
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

from unet3d import fileio

# Distinct colours for up to 10 classes, then repeated (matplotlib 'tab10').
_COLOURS = ('#1f77b4', '#ff7f0e', '#2ca02c', '#d62728', '#9467bd', '#8c564b',
            '#e377c2', '#7f7f7f', '#bcbd22', '#17becf')


def class_masks(array: np.ndarray, num_classes: int, multi_label: bool
               ) -> dict[int, np.ndarray]:
  """{class: bool mask [*spatial]} of the foreground classes (index
  labels: 1..C-1) or channels (multi-label masks [*spatial, C])."""
  if multi_label:
    return {c: array[..., c] > 0 for c in range(num_classes)}
  return {c: array == c for c in range(1, num_classes)}


def foreground_centre(label: np.ndarray, prediction: np.ndarray,
                      spatial_dims: int = 3) -> tuple[int, ...]:
  """The voxel at the centre of mass of the label's foreground; of the
  prediction's when the label has none; else the volume's centre."""
  for array in (label, prediction):
    mask = array > 0
    if mask.ndim > spatial_dims:
      mask = mask.any(axis=-1)
    if mask.any():
      return tuple(int(round(c)) for c in np.argwhere(mask).mean(axis=0))
  return tuple(s // 2 for s in label.shape[:spatial_dims])


def _display_range(image: np.ndarray) -> tuple[float, float]:
  low, high = np.percentile(image, [0.5, 99.5])
  return float(low), float(max(high, low + 1e-6))


def write_overlay(path: str, image: np.ndarray, label: np.ndarray,
                  prediction: np.ndarray, spacing: Sequence[float],
                  class_names: Sequence[str], multi_label: bool = False,
                  title: Optional[str] = None) -> str:
  """Writes one case's PNG (atomically) and returns its path.

  Args:
    path: the PNG to write (local or any TensorFlow filesystem).
    image: [X, Y, Z] intensities (one channel).
    label, prediction: class indices [X, Y, Z], or masks [X, Y, Z, C].
    spacing: mm per axis; slices are drawn with their true aspect.
    class_names: one per class (index labels include background).
    multi_label: masks instead of class indices.
    title: the figure's title (e.g. the case id and its dice).
  """
  # pylint: disable=g-import-not-at-top
  import matplotlib
  matplotlib.use('Agg')
  from matplotlib import pyplot as plt
  from matplotlib.lines import Line2D
  # pylint: enable=g-import-not-at-top
  num_classes = len(class_names)
  centre = foreground_centre(label, prediction)
  low, high = _display_range(image)
  label_masks = class_masks(label, num_classes, multi_label)
  predicted_masks = class_masks(prediction, num_classes, multi_label)
  figure, axes = plt.subplots(1, 3, figsize=(13, 4.8))
  for axis, ax in enumerate(axes):
    # Slice through `axis`; show the remaining first axis horizontally.
    index = [slice(None)] * 3
    index[axis] = centre[axis]
    index = tuple(index)
    rows, cols = [a for a in range(3) if a != axis]
    ax.imshow(image[index].T, cmap='gray', vmin=low, vmax=high,
              origin='lower', interpolation='nearest',
              aspect=float(spacing[cols]) / float(spacing[rows]))
    for c in label_masks:
      colour = _COLOURS[c % len(_COLOURS)]
      for masks, style in ((label_masks, 'solid'),
                           (predicted_masks, 'dashed')):
        plane = masks[c][index].T.astype(np.float32)
        if plane.any() and not plane.all():
          ax.contour(plane, levels=[0.5], colors=[colour], linewidths=1.2,
                     linestyles=style, origin='lower')
    ax.set_title(f'axis {axis} = {centre[axis]}', fontsize=10)
    ax.set_xlabel(f'axis {rows}')
    ax.set_ylabel(f'axis {cols}')
    ax.set_xticks([])
    ax.set_yticks([])
  handles = [Line2D([], [], color=_COLOURS[c % len(_COLOURS)],
                    label=class_names[c]) for c in label_masks]
  handles += [Line2D([], [], color='black', linestyle='solid', label='label'),
              Line2D([], [], color='black', linestyle='dashed',
                     label='prediction')]
  figure.legend(handles=handles, loc='lower center', ncol=len(handles),
                frameon=False, fontsize=9)
  if title:
    figure.suptitle(title, fontsize=11)
  figure.tight_layout(rect=(0, 0.07, 1, 0.95))
  try:
    with fileio.published(path, suffix='.png') as local:
      figure.savefig(local, dpi=80, format='png')
  finally:
    plt.close(figure)
  return path


def write_case_overlay(overlay_dir: str, case_id: str, image: np.ndarray,
                       label: np.ndarray, prediction: np.ndarray,
                       spacing: Sequence[float], class_names: Sequence[str],
                       multi_label: bool, class_rows: Sequence[dict]) -> str:
  """`write_overlay` into overlay_dir/<case_id>.png, titled with the mean
  foreground dice of the case's class rows (`scoring.score_case`)."""
  dice = [r['dice'] for r in class_rows if r.get('dice') is not None]
  title = (f'{case_id}: mean foreground dice {np.mean(dice):.3f}' if dice
           else case_id)
  return write_overlay(fileio.join(overlay_dir, f'{case_id}.png'), image,
                       label, prediction, spacing, class_names, multi_label,
                       title)

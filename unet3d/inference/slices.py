"""Slice-by-slice prediction: a 2D model (`model.spatial_dims: 2`) segments
a 3D volume the way the 2D converter (`unet3d.preprocess.lits.to_slices`)
cut it.

```
stored volume [X, Y, Z, Cv] ──in-plane resize to the slice size──▶
slice k with its neighbours k-c..k+c as channels (edge slices repeat) ──▶
predict_batch_size slices per call ──▶ probabilities [S, S, Z, K] ──linear
resize back──▶ [X, Y, Z, K] on the stored grid
```

Slices run along array axis 2 of the stored (RAS) grid: the axial axis,
as the converter slices. The result is a `whole_volume.VolumeFn`, so
predict's `segment` maps it back to the input grid as for 3D models.
"""

from __future__ import annotations

from typing import Any, Mapping, Optional, Sequence

import numpy as np
import tensorflow as tf

from unet3d.config import Config
from unet3d.inference import sliding_window
from unet3d.inference import whole_volume
from unet3d.inference.whole_volume import PredictFn, VolumeFn
from unet3d.preprocess import resample

# The array axis of the stored grid the 2D records were sliced along.
SLICE_AXIS = 2


def _slices_section(dataset_info: Optional[Mapping[str, Any]]
                   ) -> Mapping[str, Any]:
  section = ((dataset_info or {}).get('preprocessing') or {}).get('slices')
  return section if isinstance(section, Mapping) else {}


def context_slices(cfg: Config,
                   dataset_info: Optional[Mapping[str, Any]] = None) -> int:
  """Neighbours on each side stacked as channels: dataset.json's
  `preprocessing.slices.context_slices`, else (num_channels - 1) / 2 for
  an odd num_channels (a one-channel volume), else 0."""
  recorded = _slices_section(dataset_info).get('context_slices')
  if recorded is not None:
    return int(recorded)
  return cfg.num_channels // 2 if cfg.num_channels % 2 else 0


def volume_channels(cfg: Config,
                    dataset_info: Optional[Mapping[str, Any]] = None) -> int:
  """Channels of an input volume: num_channels for 3D models; for 2D
  models num_channels / (2 * context_slices + 1)."""
  if cfg.model.spatial_dims != 2:
    return cfg.num_channels
  return cfg.num_channels // (2 * context_slices(cfg, dataset_info) + 1)


def expected_channels(cfg: Config,
                      dataset_info: Optional[Mapping[str, Any]] = None) -> str:
  """`volume_channels` as error messages state it."""
  if cfg.model.spatial_dims != 2:
    return f'num_channels={cfg.num_channels}'
  return (f'{volume_channels(cfg, dataset_info)} (num_channels='
          f'{cfg.num_channels} holds '
          f'{2 * context_slices(cfg, dataset_info) + 1} slices)')


def slice_size(cfg: Config, dataset_info: Optional[Mapping[str, Any]] = None
              ) -> tuple[int, int]:
  """In-plane size the model sees: dataset.json's
  `preprocessing.slices.in_plane_size` (the converter's --slice_size),
  else the model's input_image_size."""
  recorded = _slices_section(dataset_info).get('in_plane_size')
  if recorded:
    return (int(recorded), int(recorded))
  return tuple(int(s) for s in cfg.input_image_size[:2])


def stack_neighbours(volume: np.ndarray, indices: Sequence[int],
                     context: int) -> np.ndarray:
  """[len(indices), X, Y, (2 * context + 1) * Cv] slices of volume
  [X, Y, Z, Cv] with their neighbours k-context..k+context as channels
  (neighbour-major), edge slices repeated as the converter does."""
  depth = volume.shape[SLICE_AXIS]
  out = []
  for k in indices:
    neighbours = np.clip(np.arange(k - context, k + context + 1), 0,
                         depth - 1)
    chosen = volume[:, :, neighbours, :]  # [X, Y, n, Cv]
    out.append(chosen.reshape(chosen.shape[:2] + (-1,)))
  return np.stack(out).astype(np.float32)


def _in_plane(volume: np.ndarray, size: Sequence[int], order: int
             ) -> np.ndarray:
  """volume [X, Y, Z, C] resized in-plane to [size0, size1, Z, C] (the
  grids share their centre, as the converter's resize)."""
  shape = volume.shape[:3]
  target = (int(size[0]), int(size[1]), shape[2])
  if tuple(shape) == target:
    return volume
  grid = resample.resample_grid(shape, (1.0, 1.0, 1.0), target_shape=target)
  return resample.resample_image(volume, grid, order)


def _batch_fn(predict_fn: PredictFn, cfg: Config):
  """batch [b, H, W, C] (numpy) -> numpy probabilities [b, H, W, K]; a TF
  predict_fn runs with the test-time mirroring of inference.mirror_axes."""
  if not sliding_window.runs_on_device(predict_fn):
    return lambda batch: np.asarray(predict_fn(batch), np.float32)
  run = tf.function(sliding_window.mirrored(
      predict_fn, cfg.inference.mirror_axes, 2), reduce_retracing=True)
  return lambda batch: run(tf.constant(batch)).numpy()


def slice_volume_fn(cfg: Config, predict_fn: PredictFn,
                    dataset_info: Optional[Mapping[str, Any]] = None,
                    image_order: int = 3) -> VolumeFn:
  """VolumeFn of a 2D model: volume [X, Y, Z, Cv] -> float32 probabilities
  [X, Y, Z, K], predict_batch_size slices per call (the last batch padded
  to that size, so a traced function keeps one shape)."""
  context = context_slices(cfg, dataset_info)
  size = slice_size(cfg, dataset_info)
  batch_size = cfg.predict_batch_size
  run = _batch_fn(predict_fn, cfg)

  def volume(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image, np.float32)
    resized = _in_plane(image, size, image_order)
    depth = resized.shape[SLICE_AXIS]
    outputs = []
    for start in range(0, depth, batch_size):
      indices = range(start, min(start + batch_size, depth))
      batch = stack_neighbours(resized, indices, context)
      count = len(batch)
      if count < batch_size:
        batch = np.concatenate([batch, np.zeros(
            (batch_size - count,) + batch.shape[1:], np.float32)])
      outputs.append(run(batch)[:count])
    probabilities = np.moveaxis(np.concatenate(outputs), 0, SLICE_AXIS)
    return _in_plane(probabilities, image.shape[:2], 1).astype(np.float32)

  return volume


def volume_fn(cfg: Config, predict_fn: PredictFn,
              dataset_info: Optional[Mapping[str, Any]] = None,
              strategy: Optional[tf.distribute.Strategy] = None):
  """predict's volume: slice by slice for 2D models (a VolumeFn), the
  sliding window aggregated slab by slab (`whole_volume.segmenter`) for 3D
  models; `whole_volume.segment_volume` takes either."""
  if cfg.model.spatial_dims != 2:
    return whole_volume.segmenter(cfg, predict_fn, strategy)
  order = 3
  if dataset_info is not None:
    text = str((dataset_info.get('preprocessing') or {}).get(
        'image_interpolation', 'spline order 3'))
    order = int(text[-1]) if text[-1:].isdigit() else 3
  return slice_volume_fn(cfg, predict_fn, dataset_info, order)

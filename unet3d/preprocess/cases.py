"""One case, from its files to preprocessed arrays. Numpy only.

These functions run in spawned worker processes, so this module (and the
dataset modules whose loaders it calls) must not import TensorFlow.

A dataset module supplies a list of `Case`s, a `load` function
(`Case -> RawCase`, remapping and checking labels) and a `geometry`
function (`Case -> (shape, affine)` from headers). `process_case` applies
the shared `Plan`: reorient -> crop to nonzero -> resample (`to_stored_grid`,
which inference shares) -> normalise, then an optional dataset-specific
`finish` step (e.g. LiTS's liver crop).
"""

from __future__ import annotations

import os
import zlib
import dataclasses
from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence

import numpy as np

from unet3d.preprocess import intensity
from unet3d.preprocess import io
from unet3d.preprocess import label_maps
from unet3d.preprocess import resample
from unet3d.preprocess import spatial


@dataclass(frozen=True)
class Case:
  """Where one case's files are. `image_files`: one file per channel, or
  one 3D/4D file. `files_root`: when given, dataset.json records the files
  relative to it (never the absolute paths a task's dataset.json names)."""
  case_id: str
  image_files: tuple[str, ...]
  label_file: Optional[str] = None
  files_root: Optional[str] = None

  def recorded(self, path: Optional[str]) -> Optional[str]:
    """`path` as dataset.json records it."""
    if path is None or self.files_root is None:
      return path
    return os.path.relpath(path, self.files_root)


@dataclass
class RawCase:
  """A loaded case. image: float32 [X, Y, Z, C]; label: uint8 [X, Y, Z]
  class indices, uint8 [X, Y, Z, K] binary masks, or None."""
  image: np.ndarray
  label: Optional[np.ndarray]
  affine: np.ndarray


@dataclass
class Processed:
  """One output record: arrays on the stored grid and its geometry."""
  case_id: str
  image: np.ndarray
  label: Optional[np.ndarray]
  affine: np.ndarray
  channel_mean: np.ndarray
  channel_std: np.ndarray


@dataclass(frozen=True)
class Plan:
  """The shared preprocessing of every case, fully resolved."""
  reorient: bool = True
  crop_nonzero: bool = True
  # Exactly one of these, or neither (keep the grid).
  target_spacing: Optional[tuple[float, float, float]] = None
  target_shape: Optional[tuple[int, int, int]] = None
  image_order: int = 3
  label_interpolation: str = 'linear'
  norms: tuple[intensity.ChannelNorm, ...] = ()
  # Foreground voxels sampled per case for the dataset statistics.
  num_samples: int = 10000
  seed: int = 0


Loader = Callable[[Case], RawCase]
GeometryFn = Callable[[Case], tuple[tuple[int, ...], np.ndarray]]
# (main record, is_train, rng) -> records; the first is the case's record.
Finisher = Callable[[Processed, bool, np.random.Generator], list[Processed]]
# (record, is_train, rng) -> the records written in its place (e.g. 2D
# slices), each named `<case id>#<part>` (`splits.part_id`).
PartsFn = Finisher


def case_rng(seed: int, case_id: str) -> np.random.Generator:
  """A generator that depends only on the seed and the case (not on the
  process or the order of work)."""
  return np.random.default_rng([seed, zlib.crc32(case_id.encode())])


# ----------------------------------------------------------------------------
# Reading files with checks
# ----------------------------------------------------------------------------


def _check_same_grid(path: str, shape, affine, ref_path: str, ref_shape,
                     ref_affine, what: str) -> None:
  """The file must cover the image's voxels: same shape, and its affine may
  move no corner voxel by more than a tenth of a voxel (headers written by
  different tools differ in the last float digits)."""
  if tuple(shape[:3]) != tuple(ref_shape[:3]):
    raise ValueError(f'{path}: {what} shape {tuple(shape[:3])} does not match '
                     f'image shape {tuple(ref_shape[:3])} of {ref_path}')
  corners = np.array(np.meshgrid(*[[0, n - 1] for n in ref_shape[:3]],
                                 indexing='ij')).reshape(3, -1)
  corners = np.vstack([corners, np.ones(corners.shape[1])])
  moved = np.linalg.norm((np.asarray(affine, np.float64) -
                          np.asarray(ref_affine, np.float64))[:3] @ corners,
                         axis=0).max()
  if moved > 0.1 * io.spacing_of(ref_affine).min():
    raise ValueError(f'{path}: {what} affine differs from the image affine '
                     f'of {ref_path} (voxels up to {moved:.3g} mm apart)')


def read_images(files: Sequence[str], load=io.load_volume
               ) -> tuple[np.ndarray, np.ndarray]:
  """Loads one 3D/4D file, or one 3D file per channel, as [X, Y, Z, C].

  Returns (float32 image, affine). Files of one case must share their grid.
  """
  arrays = []
  affine = None
  for path in files:
    data, file_affine, _ = load(path)
    if data.ndim not in (3, 4) or (len(files) > 1 and data.ndim != 3):
      raise ValueError(f'{path}: expected a 3D volume'
                       f'{" or 4D channels" if len(files) == 1 else ""}, got '
                       f'shape {data.shape}')
    if affine is None:
      affine = file_affine
    else:
      _check_same_grid(path, data.shape, file_affine, files[0],
                       arrays[0].shape, affine, 'channel')
    arrays.append(data.astype(np.float32).reshape(data.shape[:3] + (-1,)))
  return np.concatenate(arrays, axis=-1), affine


NONFINITE_RULE = ("NaN and -inf -> the channel's smallest finite value, +inf "
                  '-> its largest')


def replace_nonfinite(image: np.ndarray) -> tuple[np.ndarray, int]:
  """(image with every non-finite voxel replaced, how many were replaced).

  The one rule of converters (`--nan_to_num`), predict and the SavedModel
  (`NONFINITE_RULE`): per channel, NaN and -inf become the channel's
  smallest finite value (background-like: air in CT, 0 in MRI) and +inf its
  largest. Raises ValueError naming the channel when it has no finite voxel.

  image: float [X, Y, Z, C]; returned as is when all finite.
  """
  finite = np.isfinite(image)
  count = int(image.size - np.count_nonzero(finite))
  if not count:
    return image, 0
  image = image.copy()
  for c in range(image.shape[-1]):
    channel = image[..., c]
    values = channel[finite[..., c]]
    if not values.size:
      raise ValueError(f'channel {c} has no finite voxel (all NaN or inf)')
    if values.size < channel.size:
      low, high = float(values.min()), float(values.max())
      image[..., c] = np.nan_to_num(channel, nan=low, posinf=high,
                                    neginf=low)
  return image, count


def load_finite(case: Case, load: Loader, nan_to_num: bool = False
               ) -> RawCase:
  """`load(case)` with every image voxel checked finite.

  A NaN or inf voxel would spread through resampling and normalisation into
  the whole stored volume, so it stops the case with one line naming the
  file, or with `nan_to_num` is replaced (`replace_nonfinite`).
  """
  raw = load(case)
  finite = np.isfinite(raw.image)
  if finite.all():
    return raw
  bad_channels = np.flatnonzero(~finite.reshape(-1, finite.shape[-1]).all(0))
  files = case.image_files
  path = (files[bad_channels[0]] if len(files) == raw.image.shape[-1]
          else files[0])
  if not nan_to_num:
    raise ValueError(
        f'{path}: {int((~finite).sum())} non-finite voxel(s) (NaN or inf); fix '
        f'the file, or convert with --nan_to_num ({NONFINITE_RULE})')
  try:
    image, _ = replace_nonfinite(raw.image)
  except ValueError as e:
    raise ValueError(f'{path}: {e}') from None
  return dataclasses.replace(raw, image=image)


def read_label(path: str, image: np.ndarray, affine: np.ndarray,
               image_path: str, load=io.load_volume) -> np.ndarray:
  """The label file's array (values unchecked), on the image's grid."""
  if not io.isfile(path):
    raise ValueError(f'{path}: label file not found (for image {image_path})')
  data, label_affine, _ = load(path)
  _check_same_grid(path, data.shape, label_affine, image_path, image.shape,
                   affine, 'label')
  if data.ndim != 3:
    raise ValueError(f'{path}: expected a 3D label volume, got shape '
                     f'{data.shape}')
  return data


def file_geometry(case: Case) -> tuple[tuple[int, ...], np.ndarray]:
  """(shape, affine) of the case's first image file, from its header."""
  return io.volume_geometry(case.image_files[0])


# ----------------------------------------------------------------------------
# Work done per case (in a worker)
# ----------------------------------------------------------------------------


def labelled(label: np.ndarray) -> np.ndarray:
  """Voxels of any foreground class ([X, Y, Z]) or any mask ([X, Y, Z, K])."""
  return label.any(axis=-1) if label.ndim == 4 else label > 0


def foreground_mask(label: Optional[np.ndarray], image: np.ndarray
                   ) -> np.ndarray:
  """Labelled voxels; without a label (or an empty one), nonzero voxels."""
  if label is not None:
    mask = labelled(label)
    if mask.any():
      return mask
  return np.any(image != 0, axis=-1)


def _channel_statistics(values: np.ndarray) -> dict[str, list[float]]:
  """Per-channel statistics of voxel values [N, C]: count, mean, std, min,
  max and the 0.5 / 50 / 99.5 percentiles."""
  values = values.astype(np.float64)
  low, median, high = np.percentile(values, [0.5, 50, 99.5], axis=0)
  return {'count': [int(len(values))] * values.shape[-1],
          'mean': values.mean(axis=0).tolist(),
          'std': values.std(axis=0).tolist(),
          'min': values.min(axis=0).tolist(),
          'max': values.max(axis=0).tolist(),
          'percentile_00_5': low.tolist(), 'median': median.tolist(),
          'percentile_99_5': high.tolist()}


def label_shapes(label: Optional[np.ndarray], counts: Sequence[int]
                ) -> dict[str, Any]:
  """dataset.json's `components`, `centroid_voxel` and `foreground_box` of
  a stored label.

  Args:
    label: uint8 [X, Y, Z] class indices, [X, Y, Z, K] masks, or None (both
      empty).
    counts: its `class_voxel_counts`; classes without voxels are left out,
      as is the background of index labels.
  """
  first = 0 if label is not None and label.ndim == 4 else 1
  components, centroids = {}, {}
  for k in range(first, len(counts)):
    if counts[k]:
      mask = label_maps.class_mask(label, k)
      components[str(k)] = label_maps.connected_components(mask)
      centroids[str(k)] = label_maps.centroid_voxel(mask)
  out = {'components': components, 'centroid_voxel': centroids}
  if label is not None and any(counts[first:]):
    start, stop = spatial.nonzero_bbox(labelled(label))
    out['foreground_box'] = {'start': start.tolist(), 'stop': stop.tolist()}
  return out


def grid_entry(shape, affine) -> dict[str, Any]:
  return {'shape': [int(s) for s in shape[:3]],
          'affine': np.asarray(affine, np.float64).tolist(),
          'spacing': io.spacing_of(affine).tolist(),
          'orientation': spatial.axcodes(affine)}


@dataclass
class Regridded:
  """A case after the plan's geometric steps, before normalisation.

  image: float32 [X, Y, Z, C] on the stored grid; label: as loaded, on that
  grid, or None; mask: bool [X, Y, Z], the input's nonzero voxels carried
  onto the grid (z-score within the nonzero mask uses it); affine: the
  grid's voxel-to-world matrix; cropped_shape / cropped_spacing: [3]
  voxels / mm of the grid after reorienting and cropping, before
  resampling (the input's own without those steps); nonzero_crop:
  {'start', 'stop'} in voxels of the reoriented input when cropped, else
  None.
  """
  image: np.ndarray
  label: Optional[np.ndarray]
  mask: np.ndarray
  affine: np.ndarray
  cropped_shape: list[int]
  cropped_spacing: list[float]
  nonzero_crop: Optional[dict[str, list[int]]] = None


def to_stored_grid(image: np.ndarray, label: Optional[np.ndarray],
                   affine: np.ndarray, plan: Plan) -> Regridded:
  """The plan's geometric steps: reorient -> crop to nonzero -> resample.

  The converter (`process_case`) and inference (`unet3d.inference.predict`,
  with label None) share it, so a volume to segment lands on the grid the
  model was trained on.
  """
  nonzero_crop = None
  if plan.reorient:
    image, new_affine = spatial.reorient(image, affine)
    if label is not None:
      label, _ = spatial.reorient(label, affine)
    affine = new_affine
  if plan.crop_nonzero:
    start, stop = spatial.nonzero_bbox(image)
    image = spatial.crop(image, start, stop)
    label = None if label is None else spatial.crop(label, start, stop)
    affine = spatial.crop_affine(affine, start)
    nonzero_crop = {'start': start.tolist(), 'stop': stop.tolist()}
  cropped_shape = [int(s) for s in image.shape[:3]]
  cropped_spacing = io.spacing_of(affine).tolist()
  mask = np.any(image != 0, axis=-1)
  if plan.target_spacing is not None or plan.target_shape is not None:
    grid = resample.resample_grid(image.shape, cropped_spacing,
                                  plan.target_spacing, plan.target_shape)
    if not grid.is_identity() or grid.shape != image.shape[:3]:
      image = resample.resample_image(image, grid, plan.image_order)
      if label is not None:
        label = resample.resample_label(label, grid, plan.label_interpolation)
      mask = resample.resample_label(mask.astype(np.uint8), grid,
                                     'nearest').astype(bool)
      affine = resample.resampled_affine(affine, grid)
  return Regridded(image, label, mask, affine, cropped_shape=cropped_shape,
                   cropped_spacing=cropped_spacing, nonzero_crop=nonzero_crop)


def process_case(case: Case, load: Loader, plan: Plan, is_train: bool,
                 finish: Optional[Finisher] = None,
                 parts: Optional[PartsFn] = None
                ) -> tuple[list[Processed], dict[str, Any]]:
  """Loads and preprocesses one case.

  Returns (records, info): records[0] is the case itself (finish may add
  more, e.g. augmented crops) unless `parts` replaces each record by its
  parts (e.g. 2D slices); info is the case's dataset.json entry plus
  'samples' of foreground intensities before normalisation. The entry
  holds the original geometry, `cropped` {shape, spacing} after reorienting
  and cropping (before resampling), `nonzero_fraction` (the share of the
  original voxels inside the nonzero bounding box, whether or not the plan
  crops to it), the crop box, foreground `intensity` statistics before
  normalisation, and of records[0] (the whole case before `parts`): the
  stored geometry, class voxel counts, and per present foreground class
  (mask channel when multi-label) its face-connected `components` {count,
  largest_voxels} and `centroid_voxel` (mean voxel index per array axis),
  and the `foreground_box` {start, stop} of every labelled voxel.
  """
  raw = load(case)
  info: dict[str, Any] = {
      'case_id': case.case_id,
      'image_files': [case.recorded(f) for f in case.image_files],
      'label_file': case.recorded(case.label_file),
      'original': grid_entry(raw.image.shape, raw.affine)}
  grid = to_stored_grid(raw.image, raw.label, raw.affine, plan)
  image, label, affine = grid.image, grid.label, grid.affine
  info['cropped'] = {'shape': grid.cropped_shape,
                     'spacing': grid.cropped_spacing}
  # Recorded whether or not the plan crops: the planner's normalisation rule
  # reads it as "is there a zero background" (the converter's survey computes
  # the same number, spatial.nonzero_fraction, to decide it). Reorientation
  # keeps the box's volume, so the crop box (when there is one) gives it
  # without a rescan.
  box = grid.nonzero_crop
  start, stop = ((box['start'], box['stop']) if box is not None else
                 spatial.nonzero_bbox(raw.image))
  info['nonzero_fraction'] = spatial.box_fraction(start, stop,
                                                 raw.image.shape)
  if box is not None:
    info['nonzero_crop'] = box
  values = image[foreground_mask(label, image)]
  info['intensity'] = _channel_statistics(
      values if len(values) else image.reshape(-1, image.shape[-1]))
  info['samples'] = intensity.sample_rows(values, plan.num_samples,
                                          case_rng(plan.seed, case.case_id))
  image, mean, std = intensity.normalize(image, plan.norms, grid.mask)
  records = [Processed(case.case_id, image, label, affine, mean, std)]
  if finish is not None:
    records = finish(records[0], is_train, case_rng(plan.seed + 1,
                                                    case.case_id))
  main = records[0]
  info['stored'] = grid_entry(main.image.shape, main.affine)
  info['channel_mean'] = main.channel_mean.tolist()
  info['channel_std'] = main.channel_std.tolist()
  info['class_voxel_counts'] = ([] if main.label is None else
                                label_maps.class_voxel_counts(main.label, 0))
  info.update(label_shapes(main.label, info['class_voxel_counts']))
  info['label_type'] = (None if main.label is None else 'multi_label'
                        if main.label.ndim == 4 else 'index')
  if parts is not None:
    rng = case_rng(plan.seed + 2, case.case_id)
    records = [p for r in records for p in parts(r, is_train, rng)]
    if not records:
      raise ValueError(f'{case.image_files[0]}: no record left for case '
                       f'{case.case_id} (every slice was skipped)')
    info['record_spatial_dims'] = records[0].image.ndim - 1
  info['num_records'] = len(records)
  return records, info


@dataclass(frozen=True)
class Source:
  """What a dataset module tells the converter about its dataset.

  load / geometry / finish must be module-level functions (or partials of
  them) so that worker processes can unpickle them.
  """
  name: str
  cases: tuple[Case, ...]
  load: Loader
  geometry: GeometryFn
  # Channel names {"0": "CT"}; label names {"0": "background", ...}, or
  # None to name classes by the values found.
  modalities: dict[str, str]
  labels: Optional[dict[str, str]]
  # How each channel is normalised (CT parameters resolved later).
  norms: tuple[intensity.ChannelNorm, ...]
  finish: Optional[Finisher] = None
  # Records written in place of each case record (e.g. 2D slices).
  parts: Optional[PartsFn] = None
  # False when the files carry no orientation (e.g. HDF5).
  has_orientation: bool = True
  # Dataset-specific steps for dataset.json's `preprocessing`.
  description: Optional[dict[str, Any]] = None

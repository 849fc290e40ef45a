"""Intensity normalisation per channel: CT windows and z-scores.

Images are [X, Y, Z, C]; each channel has its `ChannelNorm`. CT parameters
are resolved once from the dataset's foreground samples (Hounsfield units
for CT), z-scores per image. Whether a z-score stays within the nonzero
mask is nnU-Net's rule (`zscore_within_nonzero_mask`), which the converter
applies when a channel leaves it open and the planner checks.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

# nnU-Net z-scores a non-CT channel within the nonzero mask when the nonzero
# bounding box holds less than this share of the volume (median case): the
# data has a zero background, e.g. a skull-stripped brain.
NONZERO_FRACTION_FOR_MASK = 0.75


def is_ct_modality(name: str) -> bool:
  """A channel whose modality name says CT ('CT', 'ct', 'non-contrast CT',
  'CT_venous'; not 'CTA'): it gets the CT scheme, not a z-score."""
  return re.search(r'(^|[^a-z])ct([^a-z]|$)', name.lower()) is not None


@dataclass(frozen=True)
class ChannelNorm:
  """How one channel is normalised.

  scheme: 'ct' (clip to [clip_low, clip_high], then (x - mean) / std with
    dataset-wide values), 'zscore' (per image, optionally within the
    nonzero mask) or 'none'.
  nonzero_mask: zscore within the nonzero mask; None: not decided yet
    (the converter resolves it from the dataset with
    `zscore_within_nonzero_mask`, see `resolve_nonzero_mask`).
  """
  scheme: str = 'zscore'
  nonzero_mask: Optional[bool] = False
  # ct: a fixed window (e.g. HU -200..250), or None for the dataset's
  # foreground percentiles.
  window: Optional[tuple[float, float]] = None
  percentiles: tuple[float, float] = (0.5, 99.5)
  # ct: resolved from the dataset before conversion.
  clip_low: Optional[float] = None
  clip_high: Optional[float] = None
  mean: Optional[float] = None
  std: Optional[float] = None


def median_nonzero_fraction(nonzero_fractions: Sequence[float]) -> float:
  """The median over the cases of dataset.json's `nonzero_fraction` (the
  share of a case's voxels inside its nonzero bounding box); 1.0 without
  cases."""
  if not len(nonzero_fractions):
    return 1.0
  return float(np.median(np.asarray(nonzero_fractions, np.float64)))


def zscore_within_nonzero_mask(nonzero_fractions: Sequence[float]) -> bool:
  """nnU-Net's rule for a non-CT channel: z-score within the nonzero mask
  when the median case's nonzero bounding box holds less than
  NONZERO_FRACTION_FOR_MASK of its volume (a zero background)."""
  return (median_nonzero_fraction(nonzero_fractions) <
          NONZERO_FRACTION_FOR_MASK)


def needs_nonzero_fractions(norms: Sequence[ChannelNorm]) -> bool:
  """Whether some channel leaves the nonzero mask to the dataset (None)."""
  return any(n.nonzero_mask is None for n in norms)


def resolve_nonzero_mask(norms: Sequence[ChannelNorm],
                         nonzero_fractions: Sequence[float]
                        ) -> tuple[ChannelNorm, ...]:
  """`norms` with every undecided nonzero_mask (None) decided: by
  `zscore_within_nonzero_mask` for z-score channels, False for the others
  (which do not use it). Decided channels are kept."""
  within = zscore_within_nonzero_mask(nonzero_fractions)
  return tuple(
      n if n.nonzero_mask is not None else dataclasses.replace(
          n, nonzero_mask=within and n.scheme == 'zscore') for n in norms)


def sample_rows(values: np.ndarray, max_samples: int,
                rng: np.random.Generator) -> np.ndarray:
  """Up to `max_samples` rows of voxel values [N, C], drawn without
  replacement."""
  if len(values) > max_samples:
    values = values[rng.choice(len(values), max_samples, replace=False)]
  return values


def ct_parameters(samples: np.ndarray, window: Optional[Sequence[float]] = None,
                  percentiles: Sequence[float] = (0.5, 99.5)
                 ) -> tuple[float, float, float, float]:
  """(clip_low, clip_high, mean, std) for CT normalisation (nnU-Net style).

  Args:
    samples: foreground intensities of the whole dataset, [N].
    window: a fixed clip range (e.g. HU -200, 250); None: the samples'
      `percentiles`.
    percentiles: the clip range when there is no window.

  The mean and std are those of the clipped samples.
  """
  samples = np.asarray(samples, np.float64).reshape(-1)
  if samples.size == 0:
    raise ValueError('CT normalisation: no foreground voxels to measure')
  if window is not None:
    low, high = float(window[0]), float(window[1])
  else:
    low, high = (float(v) for v in np.percentile(samples, percentiles))
  clipped = np.clip(samples, low, high)
  return low, high, float(clipped.mean()), float(clipped.std())


def normalize_ct(channel: np.ndarray, clip_low: float, clip_high: float,
                 mean: float, std: float) -> np.ndarray:
  """(clip(x, low, high) - mean) / std as float32."""
  out = np.clip(channel.astype(np.float32), clip_low, clip_high)
  return ((out - mean) / max(std, 1e-8)).astype(np.float32)


def normalize_zscore(channel: np.ndarray, mask: Optional[np.ndarray] = None
                    ) -> tuple[np.ndarray, float, float]:
  """Per-image z-score; with a mask the statistics come from inside it and
  voxels outside are set to 0. Returns (float32 image, mean, std)."""
  channel = channel.astype(np.float32)
  inside = channel[mask] if mask is not None else channel
  if inside.size == 0:
    inside = channel
  mean = float(inside.mean(dtype=np.float64))
  std = float(inside.std(dtype=np.float64))
  out = (channel - mean) / max(std, 1e-8)
  if mask is not None:
    out[~mask] = 0
  return out.astype(np.float32), mean, std


def normalize(image: np.ndarray, norms: Sequence[ChannelNorm],
              mask: Optional[np.ndarray] = None
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Normalises each channel of [X, Y, Z, C] by its `ChannelNorm`.

  Returns (float32 image, per-channel mean, per-channel std): the values the
  channel was shifted and divided by.
  """
  if len(norms) != image.shape[-1]:
    raise ValueError(f'{len(norms)} channel normalisations for '
                     f'{image.shape[-1]} channels')
  out = np.empty(image.shape, np.float32)
  means, stds = [], []
  for c, norm in enumerate(norms):
    if norm.scheme == 'ct':
      if norm.mean is None:
        raise ValueError('CT normalisation: parameters not resolved')
      out[..., c] = normalize_ct(image[..., c], norm.clip_low, norm.clip_high,
                                 norm.mean, norm.std)
      means.append(norm.mean)
      stds.append(norm.std)
    elif norm.scheme == 'zscore':
      if norm.nonzero_mask is None:
        raise ValueError(f'channel {c}: z-score within the nonzero mask or '
                         'not is undecided (resolve_nonzero_mask)')
      out[..., c], mean, std = normalize_zscore(
          image[..., c], mask if norm.nonzero_mask else None)
      means.append(mean)
      stds.append(std)
    elif norm.scheme == 'none':
      out[..., c] = image[..., c]
      means.append(0.0)
      stds.append(1.0)
    else:
      raise ValueError(f'normalisation scheme {norm.scheme!r}: expected ct, '
                       'zscore or none')
  return out, np.array(means), np.array(stds)

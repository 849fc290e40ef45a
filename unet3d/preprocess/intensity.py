"""Intensity normalisation per channel: CT windows and z-scores.

Images are [X, Y, Z, C]; each channel has its `ChannelNorm`. CT parameters
are resolved once from the dataset's foreground samples (Hounsfield units
for CT), z-scores per image.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

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
  """
  scheme: str = 'zscore'
  nonzero_mask: bool = False
  # ct: a fixed window (e.g. HU -200..250), or None for the dataset's
  # foreground percentiles.
  window: Optional[tuple[float, float]] = None
  percentiles: tuple[float, float] = (0.5, 99.5)
  # ct: resolved from the dataset before conversion.
  clip_low: Optional[float] = None
  clip_high: Optional[float] = None
  mean: Optional[float] = None
  std: Optional[float] = None


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

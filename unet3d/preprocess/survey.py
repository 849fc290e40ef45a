"""What the converter's dataset statistics need from one case (run in a
worker): its spacing and shape, a sample of its foreground intensities, and
its nonzero fraction.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from unet3d.preprocess import intensity
from unet3d.preprocess import io
from unet3d.preprocess import spatial
from unet3d.preprocess.cases import Case, GeometryFn, Loader, case_rng, labelled


def survey_case(case: Case, geometry: GeometryFn, load: Loader,
                reorient: bool, sample_channels: Sequence[int],
                num_samples: int, seed: int,
                nonzero_fraction: bool = False) -> dict[str, Any]:
  """What the dataset statistics need from one case.

  Returns {'spacing': per-axis mm (in canonical axis order when reorienting),
  'shape', 'samples': [N, len(sample_channels)] foreground intensities when
  sample_channels is not empty, and 'nonzero_fraction' when asked: the
  number dataset.json records for the case (`spatial.nonzero_fraction`)}.
  Samples and the fraction read the whole case.
  """
  shape, affine = geometry(case)
  spacing = (spatial.oriented_spacing(affine) if reorient else
             io.spacing_of(affine))
  out = {'spacing': spacing.tolist(), 'shape': list(shape[:3])}
  if not sample_channels and not nonzero_fraction:
    return out
  raw = load(case)
  if nonzero_fraction:
    out['nonzero_fraction'] = spatial.nonzero_fraction(raw.image)
  if sample_channels:
    # Only labelled voxels: a case without foreground contributes nothing.
    if raw.label is None:
      mask = np.zeros(raw.image.shape[:3], bool)
    else:
      mask = labelled(raw.label)
    out['samples'] = intensity.sample_rows(
        raw.image[..., list(sample_channels)][mask], num_samples,
        case_rng(seed, case.case_id))
  return out

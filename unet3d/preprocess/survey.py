"""What the converter's dataset statistics need from one case (run in a
worker): its spacing and shape, and a sample of its foreground intensities.
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
                num_samples: int, seed: int) -> dict[str, Any]:
  """What the dataset statistics need from one case.

  Returns {'spacing': per-axis mm (in canonical axis order when reorienting),
  'shape', and 'samples': [N, len(sample_channels)] foreground intensities
  when sample_channels is not empty (this reads the whole case)}.
  """
  shape, affine = geometry(case)
  spacing = (spatial.oriented_spacing(affine) if reorient else
             io.spacing_of(affine))
  out = {'spacing': spacing.tolist(), 'shape': list(shape[:3])}
  if sample_channels:
    raw = load(case)
    # Only labelled voxels: a case without foreground contributes nothing.
    if raw.label is None:
      mask = np.zeros(raw.image.shape[:3], bool)
    else:
      mask = labelled(raw.label)
    out['samples'] = intensity.sample_rows(
        raw.image[..., list(sample_channels)][mask], num_samples,
        case_rng(seed, case.case_id))
  return out

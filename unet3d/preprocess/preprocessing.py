"""The names callers outside `unet3d.preprocess` use, from the modules that
now hold them: `spatial` (orientation, cropping, back to the original
grid), `resample`, `intensity` (normalisation) and `label_maps`. New code
imports those modules directly.
"""

# pylint: disable=unused-import
from unet3d.preprocess.intensity import ChannelNorm
from unet3d.preprocess.intensity import normalize
from unet3d.preprocess.resample import resample_grid
from unet3d.preprocess.resample import resample_image
from unet3d.preprocess.resample import resampled_affine
from unet3d.preprocess.spatial import axcodes
from unet3d.preprocess.spatial import crop_affine
from unet3d.preprocess.spatial import nonzero_bbox
from unet3d.preprocess.spatial import reorient
from unet3d.preprocess.spatial import restore_original

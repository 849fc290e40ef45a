"""The whole predict path, one NIfTI file, one process: our side of the
comparison with MONAI's transform chain (benchmarks/monai_predict_peer.py,
MODE=path). Prints one JSON line.

  PYTHONPATH=. python benchmarks/predict_path.py --input=brain.nii.gz
      [--spacing=1.5] [--output_dir=/tmp/predict_path]

NIfTI in -> reorient (RAS) -> resample to --spacing mm (linear) -> z-score
within the nonzero mask -> sliding window (64^3, overlap 0.5, Gaussian,
2 windows a step; slab by slab) with the demo recipe's Model Garden U-Net
(8 filters, depth 4, 4 classes, random weights, batch norm folded) ->
labels -> back to the input grid (nearest) -> uint8 NIfTI out, through
`predict.predict_file` with a dataset.json-style plan. No nonzero crop, as
the peer has none. `seconds` covers the file's prediction after imports and
model building; time the whole process from outside for the ratio:

  farm-bench --vs "/tmp/peer/bin/python benchmarks/monai_predict_peer.py \\
      brain.nii.gz /tmp/out" -- python benchmarks/predict_path.py \\
      --input=brain.nii.gz
  (with MODE=path MODEL=garden GARDEN=.../torch_garden_unet_step.py NC=4
   F=8 DEPTH=4 PIXDIM=1.5,1.5,1.5 OVERLAP=0.5 WEIGHTING=gaussian SW_BATCH=2
   in the environment for the peer)
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import time

from unet3d import startup  # pylint: disable=g-import-not-at-top

startup.prepare_environment()
tf = startup.import_tensorflow()

from unet3d import config  # pylint: disable=g-import-not-at-top
from unet3d import errors
from unet3d import models
from unet3d.inference import predict
from unet3d.inference import whole_volume


def plan(spacing: float) -> dict:
  """The dataset.json preprocessing section the converter would write."""
  return {'preprocessing': {
      'orientation': 'RAS', 'crop_to_nonzero': False,
      'resample': {'target_spacing': [spacing] * 3},
      'image_interpolation': 'spline order 1',
      'label_interpolation': 'one-hot linear',
      'normalization': [{'scheme': 'zscore', 'within_nonzero_mask': True}]}}


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--input', required=True)
  parser.add_argument('--spacing', type=float, default=1.5)
  parser.add_argument('--output_dir', default='/tmp/predict_path')
  args = parser.parse_args()
  cfg = config.build_config(None, {
      'input_image_size': [64, 64, 64], 'num_channels': 1, 'num_classes': 4,
      'num_base_filters': 8, 'depth': 4, 'predict_batch_size': 2,
      'distribution_strategy': 'cpu',
      'inference': {'overlap': 0.5, 'weighting': 'gaussian'}})
  model = models.build_model(cfg)
  volume = whole_volume.segmenter(cfg, whole_volume.probabilities_fn(
      cfg, model, fold_batch_norm=True))
  os.makedirs(args.output_dir, exist_ok=True)
  out = os.path.join(args.output_dir, 'ours_seg.nii.gz')
  start = time.perf_counter()
  predict.predict_file(args.input, out, None, cfg, plan(args.spacing),
                       volume=volume)
  print(json.dumps({
      'bench': 'unet3d_predict_path', 'input': os.path.basename(args.input),
      'spacing_mm': args.spacing, 'seconds': round(
          time.perf_counter() - start, 2),
      'peak_rss_mb': round(resource.getrusage(
          resource.RUSAGE_SELF).ru_maxrss / 1024),
      **startup.machine_info()}))


if __name__ == '__main__':
  errors.one_line_errors(main)()

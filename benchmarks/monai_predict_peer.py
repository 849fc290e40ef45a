"""MONAI's side of benchmarks/predict_memory.py and predict_path.py: one
process, one volume, one JSON line. Runs in a virtualenv with torch (CPU),
monai and nibabel; imports nothing from unet3d.

  MODE=memory  NIfTI in (nibabel) -> sliding_window_inference (MONAI's
               defaults: overlap 0.25, constant weights, sw_batch_size 1,
               unless OVERLAP / WEIGHTING / SW_BATCH are set) -> argmax ->
               uint8 NIfTI out.
  MODE=path    LoadImage -> EnsureChannelFirst -> Spacing (PIXDIM) ->
               NormalizeIntensity -> sliding_window_inference -> argmax ->
               Spacing back to the input grid (nearest) -> SaveImage.

MODEL=tiny: a 1x1x1 conv to NC classes + softmax (memory is the point);
MODEL=garden: the PyTorch replica of unet3d's Model Garden U-Net
(GARDEN=/path/torch_garden_unet_step.py, F, DEPTH, NC). Prints seconds
(the whole run after imports, model and input file ready) and the process's
peak RSS (ru_maxrss).
"""
import json
import os
import resource
import sys
import time

import numpy as np
import torch
from monai.inferers import sliding_window_inference

NC = int(os.environ.get('NC', 14))
PATCH = int(os.environ.get('PATCH', 64))
torch.set_num_threads(os.cpu_count())


def build_model():
  if os.environ.get('MODEL', 'tiny') == 'tiny':
    torch.manual_seed(0)
    conv = torch.nn.Conv3d(1, NC, 1)
    return torch.nn.Sequential(conv, torch.nn.Softmax(dim=1)).eval()
  source = open(os.environ['GARDEN']).read()
  namespace = {}
  exec(source.split('m = Net()')[0], namespace)  # pylint: disable=exec-used
  net = namespace['Net']().eval()
  return torch.nn.Sequential(net, torch.nn.Softmax(dim=1)).eval()


def window_args():
  return dict(roi_size=(PATCH,) * 3,
              sw_batch_size=int(os.environ.get('SW_BATCH', 1)),
              overlap=float(os.environ.get('OVERLAP', 0.25)),
              mode=os.environ.get('WEIGHTING', 'constant'))


def run_memory(model, path, out):
  import nibabel as nib  # pylint: disable=g-import-not-at-top
  image = nib.load(path)
  x = torch.from_numpy(np.asarray(image.dataobj, np.float32))[None, None]
  probabilities = sliding_window_inference(x, predictor=model,
                                           **window_args())
  labels = torch.argmax(probabilities, dim=1)[0].to(torch.uint8).numpy()
  del probabilities
  nib.save(nib.Nifti1Image(labels, image.affine), out)


def run_path(model, path, out_dir):
  from monai import transforms as mt  # pylint: disable=g-import-not-at-top
  pixdim = [float(p) for p in os.environ.get('PIXDIM', '1,1,1').split(',')]
  load = mt.Compose([mt.LoadImage(image_only=True),
                     mt.EnsureChannelFirst(),
                     mt.Spacing(pixdim=pixdim, mode='bilinear'),
                     mt.NormalizeIntensity(nonzero=True)])
  image = load(path)
  probabilities = sliding_window_inference(image[None], predictor=model,
                                           **window_args())[0]
  labels = torch.argmax(probabilities, dim=0, keepdim=True).to(torch.uint8)
  del probabilities
  labels = image.__class__(labels, meta=image.meta, applied_operations=
                           image.applied_operations)
  # Back to the input's grid: the inverse of the Spacing above.
  restored = mt.SpatialResample(mode='nearest')(
      labels, dst_affine=image.meta['original_affine'],
      spatial_size=image.meta['spatial_shape'])
  mt.SaveImage(output_dir=out_dir, output_postfix='seg',
               output_dtype=np.uint8, separate_folder=False,
               print_log=False)(restored)


def main():
  model = build_model()
  path, out = sys.argv[1], sys.argv[2]
  start = time.perf_counter()
  with torch.inference_mode():
    if os.environ.get('MODE', 'memory') == 'memory':
      run_memory(model, path, out)
    else:
      run_path(model, path, out)
  seconds = time.perf_counter() - start
  print(json.dumps({
      'peer': 'monai', 'torch': torch.__version__,
      'monai': __import__('monai').__version__, 'window': window_args(),
      'seconds': round(seconds, 2),
      'peak_rss_mb': round(resource.getrusage(
          resource.RUSAGE_SELF).ru_maxrss / 1024)}))


if __name__ == '__main__':
  main()

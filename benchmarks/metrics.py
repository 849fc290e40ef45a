"""Seconds per class of the host-side case metrics on a CT-sized case.

Builds a synthetic 512x512x300 label map with 14 organ-like blobs (noisy
ellipsoids) and a prediction that shifts and roughens each one, then times
dice plus HD95, ASSD and NSD (one `surface_scores` call, as reports compute
them) per class under each convention. Prints JSON.

  python -m benchmarks.metrics [--shape 512 512 300] [--classes 14]

Run from the repository root.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np
import scipy
from scipy import ndimage

from unet3d import startup
from unet3d.metrics import binary
from unet3d.metrics import surface
from unet3d.metrics.conventions import Conventions

CONVENTIONS = {
    'default (max_directed, area; DeepMind)': Conventions(),
    'monai (max_directed, voxel)': Conventions(surface_weighting='voxel'),
    'legacy (pooled, voxel; medpy)': Conventions.legacy(),
}


def _blob(shape, centre, radii, rng, roughness):
  """A noisy ellipsoid (boolean, over `shape`) in its own bounding box."""
  lo = [max(int(c - 1.3 * r), 0) for c, r in zip(centre, radii)]
  hi = [min(int(c + 1.3 * r) + 1, s) for c, r, s in zip(centre, radii, shape)]
  grid = np.meshgrid(*[(np.arange(a, b) - c) / r for a, b, c, r in
                       zip(lo, hi, centre, radii)], indexing='ij', sparse=True)
  noise = ndimage.gaussian_filter(rng.standard_normal([b - a for a, b in
                                                       zip(lo, hi)]), 4)
  inside = sum(g**2 for g in grid) <= 1 + roughness * noise / noise.std()
  return tuple(slice(a, b) for a, b in zip(lo, hi)), inside


def synthetic_case(shape, num_classes: int, seed: int = 0):
  """(label, prediction) uint8 maps [*shape] with classes 1..num_classes."""
  rng = np.random.default_rng(seed)
  label = np.zeros(shape, np.uint8)
  prediction = np.zeros(shape, np.uint8)
  for c in range(1, num_classes + 1):
    radii = rng.uniform(12, 60, 3)
    centre = [rng.uniform(r, s - r) for r, s in zip(radii, shape)]
    box, inside = _blob(shape, centre, radii, rng, 0.1)
    label[box][inside] = c
    moved = np.asarray(centre) + rng.normal(0, 1.5, 3)
    box, inside = _blob(shape, moved, radii * rng.uniform(0.9, 1.1, 3), rng,
                        0.2)
    prediction[box][inside] = c
  return label, prediction


def time_classes(label, prediction, spacing, num_classes, conventions):
  """Seconds per class of dice + surface_scores, and the last scores."""
  seconds, scores = [], {}
  for c in range(1, num_classes + 1):
    start = time.perf_counter()
    p, t = prediction == c, label == c
    scores[c] = {'dice': binary.dice(p, t, conventions),
                 **surface.surface_scores(p, t, spacing, conventions)}
    seconds.append(time.perf_counter() - start)
  return seconds, scores


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--shape', type=int, nargs=3, default=[512, 512, 300])
  parser.add_argument('--spacing', type=float, nargs=3,
                      default=[0.8, 0.8, 1.5])
  parser.add_argument('--classes', type=int, default=14)
  args = parser.parse_args()
  label, prediction = synthetic_case(tuple(args.shape), args.classes)
  results = {}
  for name, conventions in CONVENTIONS.items():
    seconds, scores = time_classes(label, prediction, args.spacing,
                                   args.classes, conventions)
    results[name] = {
        'conventions': conventions.describe(),
        'seconds_per_class_median': round(float(np.median(seconds)), 3),
        'seconds_per_class_max': round(float(np.max(seconds)), 3),
        'seconds_total': round(float(np.sum(seconds)), 2),
        'mean_hd95_mm': round(float(np.mean([s['hd95'] for s in
                                             scores.values()])), 3),
        'mean_nsd': round(float(np.mean([s['nsd'] for s in
                                         scores.values()])), 4),
    }
  print(json.dumps({
      'cpu': startup.cpu_model(), 'cpu_flags': startup.cpu_simd_flags(), 'cpu_count': os.cpu_count(),
      'cores_available': len(os.sched_getaffinity(0)),
      'shape': args.shape, 'spacing_mm': args.spacing,
      'classes': args.classes,
      'voxels_per_class_median': int(np.median(np.bincount(
          label.ravel(), minlength=args.classes + 1)[1:])),
      'numpy': np.__version__, 'scipy': scipy.__version__,
      'results': results}, indent=1))


if __name__ == '__main__':
  main()

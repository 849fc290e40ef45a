"""Tiny converted demo datasets for tests that need real records."""

from unet3d.preprocess import datasets
from unet3d.preprocess import synthetic


def convert_demo_task(root, num_cases: int, shape, seed: int,
                      **options) -> str:
  """Writes a demo Decathlon task of num_cases volumes under root, converts
  it into one shard per split, and returns the records folder."""
  task = synthetic.write_demo_decathlon_task(str(root / 'task'),
                                             num_cases=num_cases,
                                             shape=shape, seed=seed)
  out = str(root / 'records')
  datasets.convert_decathlon(task, out, num_shards=1, seed=0, **options)
  return out

"""data_preprocess/convert_png_slices.py and unet3d/preprocess/png_slices.py
on a tiny folder in the UNet 3+ repository's layout."""

import json

import numpy as np
from PIL import Image

from tests.preprocess import test_convert_common as common
from unet3d.input import schema


def _write(root):
  """volumes 3, 5, 8 of 3 slices; RGB (k+1, k, k-1) as OpenCV writes."""
  pixels = {}
  for subset, volumes in (('train', (3, 5)), ('val', (8,))):
    for folder in ('images', 'mask'):
      (root / subset / folder).mkdir(parents=True)
    for v in volumes:
      for k in range(3):
        bgr = np.random.default_rng(v * 10 + k).integers(
            0, 256, (6, 7, 3)).astype(np.uint8)
        mask = (np.arange(42).reshape(6, 7) + v + k) % 2
        Image.fromarray(bgr[..., ::-1]).save(
            root / subset / 'images' / f'image_{v}_{k}.png')
        Image.fromarray(mask.astype(np.uint8)).save(
            root / subset / 'mask' / f'mask_{v}_{k}.png')
        pixels[f'volume-{v}#z{k:04d}'] = (bgr, mask)
  return pixels


def test_round_trip_keeps_values_and_volumes_whole(tmp_path):
  pixels = _write(tmp_path / 'data')
  out = tmp_path / 'records'
  result = common.run_cli('convert_png_slices.py',
                          input_path=f'{tmp_path}/data', output_path=out,
                          validation_fraction=0.34, num_shards=1)
  assert result.returncode == 0, result.stderr[-2000:]
  summary = json.loads((out / 'dataset.json').read_text())
  assert summary['labels'] == {'0': 'background', '1': 'liver'}
  train, val = ({v.case_id: v for p in out.glob(f'{side}-*.tfrecord')
                  for v in map(schema.decode_volume, schema.read_records(
                      str(p)))} for side in ('train', 'val'))
  assert set(train) | set(val) == set(pixels)
  train_volumes = {r.split('#')[0] for r in train}
  val_volumes = {r.split('#')[0] for r in val}
  assert len(val_volumes) == 1 and not train_volumes & val_volumes
  for record_id, record in {**train, **val}.items():
    bgr, mask = pixels[record_id]
    np.testing.assert_allclose(record.image, bgr / 255.0, atol=1e-6)
    np.testing.assert_array_equal(record.label, mask)

"""Tests for unet3d/evaluation/volumes_2d.py: a 2D model's dice per volume
is the dice of the volume reassembled from its slices."""

import json

import numpy as np

from tests import runs
from unet3d import models
from unet3d.evaluation import evaluator
from unet3d.evaluation import volumes_2d
from unet3d.input import schema
from unet3d.metrics import overlap

SIZE = 8
NAMES = ['background', 'liver', 'tumor']


def _counts(label, prediction):
  predicted = overlap.label_map_predictions(prediction[None], 3, 'softmax')
  return overlap.counts_from_predictions(label[None], predicted, 3).numpy()[0]


def _volumes(seed):
  rng = np.random.default_rng(seed)
  labels = {c: rng.integers(0, 3, (SIZE, SIZE, 4)).astype(np.uint8)
            for c in ('volume-0', 'volume-7')}
  predictions = {c: np.where(rng.random(l.shape) < 0.3,
                             rng.integers(0, 3, l.shape), l).astype(np.uint8)
                 for c, l in labels.items()}
  return labels, predictions


def test_per_volume_dice_is_numpy_dice_of_the_reassembled_volume():
  labels, predictions = _volumes(0)
  ids, counts, sliced = [], [], {}
  for case in labels:
    for k in (3, 0, 2, 1):  # slices out of order, the evaluator's names
      ids.append(f'{case}_z{k:04d}')
      counts.append(_counts(labels[case][..., k], predictions[case][..., k]))
      sliced[f'{case}#z{k:04d}'] = predictions[case][..., k]
  report = volumes_2d.per_volume_report(ids, np.stack(counts), NAMES, 'one',
                                        1)
  assert report['num_volumes'] == 2
  for case in labels:
    for c in (1, 2):
      expected = runs.numpy_dice(predictions[case], labels[case], c)
      np.testing.assert_allclose(
          report['dice_per_volume'][case][NAMES[c]], expected)
  np.testing.assert_array_equal(volumes_2d.reassemble(sliced)['volume-7'],
                                predictions['volume-7'])
  mean = np.mean([runs.numpy_dice(predictions[v], labels[v], c)
                  for c in (1, 2) for v in labels])
  np.testing.assert_allclose(report['mean_foreground_dice'], mean)


def test_eval_of_a_2d_model_reports_per_volume_dice(tmp_path):
  labels, _ = _volumes(1)
  rng = np.random.default_rng(2)
  images = {c: rng.normal(size=(SIZE, SIZE, 4)).astype(np.float32)
            for c in labels}
  slices = [schema.Volume(
      image=np.stack([images[c][..., max(k - 1, 0)], images[c][..., k],
                      images[c][..., min(k + 1, 3)]], -1),
      label=labels[c][..., k], spacing=np.ones(2), affine=np.eye(4),
      case_id=f'{c}#z{k:04d}') for c in labels for k in range(4)]
  schema.write_records(str(tmp_path / 'val-0.tfrecord'),
                       (schema.encode_volume(v) for v in slices))
  cfg = runs.run_config(
      tmp_path, tmp_path / 'run', model={'spatial_dims': 2}, num_classes=3,
      num_channels=3, input_image_size=[SIZE, SIZE],
      data={'eval_image_size': [SIZE, SIZE]})
  model = models.build_model(cfg)
  report = evaluator.evaluate(cfg, model=model, step=0)
  predicted = {c: np.stack([np.argmax(model(v.image[None], training=False)
                                      [0].numpy(), -1)
                            for v in slices if v.case_id.startswith(c + '#')],
                           -1) for c in labels}
  assert report['num_cases'] == 8 and report['per_volume']['num_volumes'] == 2
  for c in labels:
    np.testing.assert_allclose(
        report['per_volume']['dice_per_volume'][c]['class_1'],
        runs.numpy_dice(predicted[c], labels[c], 1), atol=1e-6)
  with open(tmp_path / 'run' / 'eval_results.json') as f:
    assert json.load(f)['per_volume']['num_volumes'] == 2
  assert 'volume' in volumes_2d.format_per_volume(report)

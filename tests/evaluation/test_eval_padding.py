"""Evaluation steps padded to a multiple of the replicas: the published
cloud recipes' eval_batch_size (1 on 2 and 8 replicas) scores exactly as on
one device, and padded examples enter no count, metric or report."""

import csv
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from tests import runs
from tests.evaluation import replica_eval
from unet3d.evaluation import evaluator

@pytest.fixture(scope='module')
def records(tmp_path_factory):
  root = tmp_path_factory.mktemp('records')
  runs.write_cases(str(root / 'val-0.tfrecord'), 3, seed=3)
  return root


def test_padded_batch_masks_the_padding():
  images = np.ones([3, 2, 2, 1], np.float32)
  padded, valid = evaluator.padded_batch(images, 3, 2)
  assert padded.shape == (4, 2, 2, 1) and valid.tolist() == [1, 1, 1, 0]
  assert not padded[3].any()
  padded, valid = evaluator.padded_batch(images[:1], 1, 8)
  assert padded.shape[0] == 8 and valid.sum() == 1
  padded, valid = evaluator.padded_batch(images[:2], 4, 2)
  assert padded.shape[0] == 4 and valid.tolist() == [1, 1, 0, 0]


def test_two_replicas_score_as_one_device(records, tmp_path):
  """eval_batch_size 1 (published) and 3 on the 2 replicas of a v3-32."""
  recipe = 'v3-32_256x256x256_dice.yaml'
  reference = replica_eval.evaluate_on(
      replica_eval.tiny_cloud_config(recipe, records), ['/cpu:0'])
  for batch in (1, 3):
    cfg = replica_eval.tiny_cloud_config(
        recipe, records, eval_batch_size=batch,
        model_dir=str(tmp_path / str(batch)))
    report = replica_eval.evaluate_on(cfg, ['/cpu:0', '/cpu:1'])
    assert report == reference, batch
    assert report['num_cases'] == 3
    with open(tmp_path / str(batch) / 'eval' / 'cases.csv') as f:
      assert len({row['case_id'] for row in csv.DictReader(f)}) == 3


def test_eight_replicas_score_as_one_device(records):
  """A process of its own makes 8 logical CPUs: a v3-128 recipe at its
  published eval_batch_size 1, and at 2 and 8."""
  items = [f'v3-128_256x256x256_ce.yaml:{batch}' for batch in (1, 2, 8)]
  out = subprocess.run(
      [sys.executable, '-m', 'tests.evaluation.replica_eval', '8',
       str(records)] + items, cwd=replica_eval.REPO, capture_output=True,
      text=True, timeout=300,
      env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2'), check=False)
  lines = [l for l in out.stdout.splitlines() if l.startswith('RESULT ')]
  assert lines, out.stderr[-2000:]
  assert json.loads(lines[-1][len('RESULT '):]) == dict.fromkeys(items, True)

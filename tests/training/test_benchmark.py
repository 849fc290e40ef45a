"""Tests for unet3d/training/benchmark.py: the figures and a real run."""

import time

import numpy as np
import pytest

from tests import runs
from unet3d.training import benchmark


def test_latency_report_against_numpy():
  seconds = np.array([0.5, 0.25, 1.0, 0.5])
  got = benchmark.latency_report(seconds, batch_size=2, voxels_per_image=10)
  assert got['images_per_second_mean'] == pytest.approx(np.mean(2 / seconds))
  assert got['images_per_second_total'] == pytest.approx(8 / 2.25)
  assert got['voxels_per_second_total'] == pytest.approx(80 / 2.25)
  assert got['latency_ms_p50'] == pytest.approx(500.0)
  assert got['latency_ms_p99'] == pytest.approx(
      np.percentile(seconds, 99) * 1e3)


def test_benchmark_runs_the_pipeline_and_writes_nothing(tmp_path):
  root = tmp_path / 'records'
  root.mkdir()
  runs.make_records(root)
  cfg = runs.run_config(root, tmp_path / 'run', train={
      'benchmark_steps': 3, 'benchmark_warmup_steps': 1})
  report = benchmark.run_benchmark(cfg)
  assert report['steps'] == 3 and report['warmup_steps'] == 1
  assert report['images_per_second_total'] > 0
  assert report['latency_ms_p50'] <= report['latency_ms_p99']
  assert report['input_headroom'] == pytest.approx(
      report['input_images_per_second_during_training'] /
      report['images_per_second_total'])
  assert not (tmp_path / 'run').exists()


def test_input_capacity_counts_what_the_drained_copy_delivers(tmp_path):
  """While a 'step' that only sleeps runs, the pipeline copy keeps
  delivering: the capacity is well above the 2 x batch the steps took."""
  root = tmp_path / 'records'
  root.mkdir()
  runs.make_records(root)
  cfg = runs.run_config(root, tmp_path / 'run')
  steps, nap = 2, 0.5
  got = benchmark.input_capacity(cfg, lambda: time.sleep(nap), steps)
  consumed = steps * cfg.train_batch_size / (steps * nap)
  assert got['images_per_second_while_draining'] == pytest.approx(
      consumed, rel=0.3)
  assert got['input_images_per_second_during_training'] > 2 * consumed

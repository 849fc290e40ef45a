"""Tests for unet3d/training/trainer.py's eval progress line: which
classes it names."""

import types

import numpy as np
import tensorflow as tf

from unet3d import config
from unet3d.evaluation import report as report_lib
from unet3d.training import trainer


def _line(capsys, activation, num_classes, names):
  cfg = config.merge(config.Config(), {
      'num_classes': num_classes, 'model': {'output_activation': activation}})
  fake = types.SimpleNamespace(
      cfg=cfg, _progress=None, state=types.SimpleNamespace(
          step=7, best_dice=tf.Variable(-1.0)))
  report = {'per_class': {n: {'dice': 0.5 + i / 10}
                          for i, n in enumerate(names)},
            'mean_foreground_dice': 0.5}
  trainer.Trainer._progress_message(fake, report)  # pylint: disable=protected-access
  return capsys.readouterr().out


def test_a_one_class_sigmoid_model_names_its_class(capsys):
  assert 'tumour 0.5000' in _line(capsys, 'sigmoid', 1, ['tumour'])


def test_sigmoid_channels_are_all_foreground_softmax_skips_background(
    capsys):
  assert 'wt 0.5000, tc 0.6000' in _line(capsys, 'sigmoid', 2, ['wt', 'tc'])
  line = _line(capsys, 'softmax', 2, ['background', 'liver'])
  assert 'background' not in line and 'liver 0.6000' in line


def test_the_mean_of_a_sigmoid_report_counts_every_channel():
  cfg = config.merge(config.Config(), {
      'num_classes': 2, 'model': {'output_activation': 'sigmoid'}})
  counts = [[[1, 0, 0, 5], [0, 1, 1, 5]]]  # dice 1 and 0
  report = report_lib.build_report(cfg, np.array(counts, float), None, [],
                                   3, ['wt', 'tc'])
  assert report['mean_foreground_dice'] == 0.5

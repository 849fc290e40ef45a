"""Tests for unet3d/evaluation/tables.py: rows against hand-computed
scores, summaries against numpy, CSV/JSON text."""

import csv
import io
import json
import math

import numpy as np
import pytest

from unet3d.evaluation import tables

NAMES = ['background', 'liver', 'tumour']


def _counts(rows):
  """[C, 4] from (tp, fp, fn) per class; tn is irrelevant here."""
  return np.array([[tp, fp, fn, 100] for tp, fp, fn in rows], np.float64)


def test_case_rows_score_each_foreground_class_by_hand():
  surface = {'per_class': {'liver': {'hd95': 2.5, 'assd': 1.0, 'nsd': 0.75},
                           'tumour': {'hd95': math.inf, 'assd': math.inf,
                                      'nsd': 0.0}}}
  rows = tables.case_rows('c1', _counts([(50, 0, 0), (8, 2, 6), (0, 3, 0)]),
                          NAMES, 1, 'one', surface)
  assert [r['class'] for r in rows] == ['liver', 'tumour']
  liver, tumour = rows
  # dice 2*8/(16+2+6), iou 8/16, precision 8/10, recall 8/14
  assert liver['dice'] == pytest.approx(16 / 24)
  assert liver['iou'] == pytest.approx(0.5)
  assert liver['precision'] == pytest.approx(0.8)
  assert liver['recall'] == pytest.approx(8 / 14)
  assert (liver['hd95'], liver['assd'], liver['nsd']) == (2.5, 1.0, 0.75)
  assert (liver['label_voxels'], liver['predicted_voxels']) == (14, 10)
  # Nothing labelled, 3 voxels predicted: dice 0, recall undefined -> 1.
  assert tumour['dice'] == 0 and tumour['recall'] == 1.0
  assert tumour['hd95'] == math.inf


def test_excluded_scores_are_none_and_missing_surfaces_are_empty():
  rows = tables.case_rows('c1', _counts([(5, 0, 0), (0, 0, 0), (1, 1, 1)]),
                          NAMES, 1, 'exclude')
  assert rows[0]['dice'] is None and rows[0]['hd95'] is None
  assert rows[1]['dice'] == pytest.approx(0.5)


def test_summary_is_mean_and_sample_std_over_cases():
  rng = np.random.default_rng(0)
  rows = []
  for case in range(5):
    counts = _counts([(50, 0, 0)] + [tuple(rng.integers(1, 30, 3))
                                     for _ in range(2)])
    surface = {'per_class': {n: {'hd95': float(rng.uniform(1, 9)),
                                 'assd': float(rng.uniform(0, 3)),
                                 'nsd': float(rng.uniform())}
                             for n in NAMES[1:]}}
    if case == 2:
      surface['per_class']['tumour']['hd95'] = math.inf
    rows += tables.case_rows(f'c{case}', counts, NAMES, 1, 'one', surface)
  summary = tables.summary_rows(rows, NAMES[1:])
  assert [s['class'] for s in summary] == ['liver', 'tumour',
                                           'mean_foreground']
  for entry in summary[:2]:
    mine = [r for r in rows if r['class'] == entry['class']]
    dice = np.array([r['dice'] for r in mine])
    assert entry['cases'] == 5
    assert entry['dice_mean'] == pytest.approx(dice.mean())
    assert entry['dice_std'] == pytest.approx(dice.std(ddof=1))
    hd95 = np.array([r['hd95'] for r in mine])
    finite = hd95[np.isfinite(hd95)]
    assert entry['hd95_mean'] == pytest.approx(finite.mean())
    assert entry['hd95_infinite'] == len(hd95) - len(finite)
  # mean_foreground: per case the mean over classes, then over cases.
  per_case = [np.mean([r['dice'] for r in rows if r['case_id'] == f'c{i}'])
              for i in range(5)]
  assert summary[2]['dice_mean'] == pytest.approx(np.mean(per_case))
  assert summary[2]['dice_std'] == pytest.approx(np.std(per_case, ddof=1))
  # Case 2's tumour hd95 is inf: its mean over classes is liver's alone.
  liver2 = [r['hd95'] for r in rows if r['case_id'] == 'c2'][0]
  per_case_hd = [np.mean([r['hd95'] for r in rows if r['case_id'] == f'c{i}'
                          and math.isfinite(r['hd95'])]) for i in range(5)]
  assert per_case_hd[2] == pytest.approx(liver2)
  assert summary[2]['hd95_mean'] == pytest.approx(np.mean(per_case_hd))


def test_one_case_has_no_std():
  rows = tables.case_rows('c', _counts([(1, 0, 0), (1, 1, 0), (2, 0, 1)]),
                          NAMES, 1, 'one')
  summary = tables.summary_rows(rows, NAMES[1:])
  assert summary[0]['dice_std'] is None and summary[0]['hd95_mean'] is None


def test_files_hold_the_columns_and_infinity_conventions(tmp_path):
  rows = tables.case_rows(
      'c1', _counts([(5, 0, 0), (4, 0, 0), (0, 2, 0)]), NAMES, 1, 'one',
      {'per_class': {'liver': {'hd95': 0.0, 'assd': 0.0, 'nsd': 1.0},
                     'tumour': {'hd95': math.inf, 'assd': math.inf,
                                'nsd': 0.0}}})
  summary = tables.summary_rows(rows, NAMES[1:])
  paths = tables.write_tables(str(tmp_path), rows, summary, {'step': 7})
  with open(paths['cases.csv']) as f:
    read = list(csv.DictReader(f))
  assert tuple(read[0]) == tables.CASE_COLUMNS
  assert read[1]['hd95'] == 'inf' and read[1]['dice'] == '0'
  assert float(read[0]['dice']) == 1.0
  with open(paths['summary.csv']) as f:
    summary_read = list(csv.DictReader(f))
  assert tuple(summary_read[0]) == tables.SUMMARY_COLUMNS
  assert summary_read[1]['hd95_mean'] == ''  # only an infinite value
  assert summary_read[1]['hd95_infinite'] == '1'
  with open(paths['cases.json']) as f:
    cases = json.load(f)  # strict JSON: no Infinity
  assert cases[1]['hd95'] is None and cases[1]['nsd'] == 0.0
  with open(paths['summary.json']) as f:
    content = json.load(f)
  assert content['step'] == 7
  assert [c['class'] for c in content['classes']] == [
      'liver', 'tumour', 'mean_foreground']
  assert not [p for p in tmp_path.iterdir() if 'tmp' in p.name]


def test_csv_text_formats_numbers_compactly():
  text = tables.to_csv([{'a': 1 / 3, 'b': None, 'c': 5, 'd': -math.inf}],
                       ['a', 'b', 'c', 'd'])
  assert list(csv.reader(io.StringIO(text))) == [['a', 'b', 'c', 'd'],
                                                ['0.333333', '', '5', '-inf']]

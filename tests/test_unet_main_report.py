"""Tests for the eval report that unet3d/cli/main.py prints."""

from unet3d.cli import main


def test_an_ensemble_header_names_the_members_steps():
  report = {'step': None, 'ensemble': [{'model_dir': '/a', 'step': 10},
                                       {'model_dir': '/b', 'step': 12}]}
  header = main.report_header(report)
  assert header == 'evaluation of an ensemble of 2 at steps 10, 12:'
  assert 'None' not in header
  assert main.report_header({'step': 5}) == 'evaluation at step 5:'

"""Evaluation reports: the JSON report, its TensorBoard scalars, and the
table printed to the terminal.

Files in model_dir:
  eval_results.json   the latest evaluation (`build_report`'s dict)
  eval/               TensorBoard scalars of every evaluation, and the
                      latest evaluation's tables (cases.csv, summary.csv,
                      cases.json, summary.json: `unet3d.evaluation.tables`)
                      and PNG overlays (eval/overlays/<case>.png)
  eval/ensemble/      an ensemble's eval_results.json, tables and overlays
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

import numpy as np
import tensorflow as tf

from unet3d import fileio
from unet3d.config import Config
from unet3d.evaluation import scoring
from unet3d.metrics import overlap
from unet3d.metrics import surface

EVAL_RESULTS_FILE = 'eval_results.json'
EVAL_SUMMARY_DIR = 'eval'


def first_scored_class(cfg: Config) -> int:
  """Scores of the foreground start here: 1 skips the background of a
  softmax model; every sigmoid channel (and a lone class) is foreground."""
  if cfg.model.output_activation == 'sigmoid' or cfg.num_classes == 1:
    return 0
  return 1


def build_report(cfg: Config, counts: np.ndarray,
                 region_counts: Optional[np.ndarray],
                 surface_reports: list[dict], step: Optional[int],
                 class_names: Sequence[str]) -> dict[str, Any]:
  """The report of one evaluation: `overlap.summarize` of the counts with
  the class names, plus step, mode, surface metrics and the conventions
  (`Conventions.describe()`) every score follows."""
  conventions = scoring.conventions_from_config(cfg)
  report = overlap.summarize(counts, class_names=class_names,
                             empty_class=scoring.empty_class_of(conventions),
                             include_background=first_scored_class(cfg) == 0,
                             region_counts_array=region_counts)
  report['step'] = step
  report['num_cases'] = int(len(counts))
  report['eval_mode'] = cfg.data.eval_mode
  report['conventions'] = conventions.describe()
  if surface_reports:
    report['surface_metrics'] = {
        'mean': surface.summarize_surface(surface_reports),
        'empty_convention': conventions.empty_text(),
        'per_case': surface_reports}
  return report


def _flat_scalars(report: dict[str, Any], prefix: str = '') -> dict[str, float]:
  out = {}
  for key, value in report.items():
    if isinstance(value, dict):
      out.update(_flat_scalars(value, f'{prefix}{key}/'))
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
      if np.isfinite(value):
        out[prefix + key] = float(value)
  return out


def write_report(model_dir: str, report: dict[str, Any],
                 results_dir: Optional[str] = None) -> None:
  """Writes `eval_results.json` into model_dir and the report's scalars to
  TensorBoard; with results_dir (an ensemble's report folder), only
  eval_results.json, there."""
  if results_dir:
    fileio.write_json(fileio.join(results_dir, EVAL_RESULTS_FILE), report)
    return
  fileio.write_json(fileio.join(model_dir, EVAL_RESULTS_FILE), report)
  writer = tf.summary.create_file_writer(
      fileio.join(model_dir, EVAL_SUMMARY_DIR))
  with writer.as_default(step=report.get('step') or 0):
    for key, value in _flat_scalars(report).items():
      tf.summary.scalar(key, value)
  writer.flush()


def format_report(report: dict) -> str:
  """Human-readable per-class lines of a `build_report` report: overlap
  scores, and HD95 (mm) and NSD when surface metrics were computed; then
  the report folder."""
  def fmt(value, digits=4):
    return 'n/a' if value is None else f'{value:.{digits}f}'

  surface_means = (report.get('surface_metrics') or {}).get('mean', {})
  header = (f"{'class':>16s}  {'dice':>7s}  {'iou':>7s}  {'prec':>7s}  "
            f"{'recall':>7s}")
  if surface_means:
    header += f"  {'hd95 mm':>8s}  {'nsd':>7s}"
  lines = [header]
  rows = list(report['per_class'].items()) + list(
      (report.get('regions') or {}).items())
  for name, s in rows:
    line = (f"{name:>16s}  {fmt(s['dice']):>7s}  {fmt(s['iou']):>7s}  "
            f"{fmt(s['precision']):>7s}  {fmt(s['recall']):>7s}")
    if name in surface_means:
      line += (f"  {fmt(surface_means[name]['hd95'], 2):>8s}  "
               f"{fmt(surface_means[name]['nsd']):>7s}")
    lines.append(line)
  lines.append(f"{'mean foreground':>16s}  "
               f"{fmt(report['mean_foreground_dice']):>7s}")
  lines.append(f"({report['num_cases']} cases; a class empty in both label "
               f"and prediction counts as: {report['empty_class']})")
  if report.get('report_dir'):
    lines.append(f"report: {report['report_dir']} (cases.csv, summary.csv, "
                 'JSON, overlays/)')
  return '\n'.join(lines)

"""Tests for unet3d/inference/export_formats.py: ONNX and OpenVINO IR of
the `patches` model match the SavedModel (the `export` extra)."""

import json
import os

import numpy as np
import pytest
import tensorflow as tf

from unet3d import config
from unet3d import models
from unet3d.inference import export
from unet3d.inference import export_formats
from unet3d.inference import whole_volume


def _cfg(tmp_path, fmt):
  cfg = config.merge(config.Config(), {
      'model_dir': str(tmp_path), 'num_classes': 3, 'num_base_filters': 2,
      'depth': 2, 'input_image_size': [16, 16, 16], 'export': {'format': fmt}})
  config.validate(cfg)
  return cfg


@pytest.fixture(scope='module')
def exported(tmp_path_factory):
  """One tiny model's SavedModel; returns (model, export_dir, patches,
  the SavedModel's probabilities of patches)."""
  root = tmp_path_factory.mktemp('export')
  cfg = _cfg(root, 'saved_model')
  model = models.build_model(cfg)
  path = export.export_saved_model(model, cfg, str(root / 'export'))
  patches = np.random.default_rng(0).normal(size=(2, 16, 8, 16, 1)).astype(
      np.float32)
  serve = tf.saved_model.load(path).signatures['patches']
  expected = serve(image=tf.constant(patches))['probabilities'].numpy()
  return model, path, patches, expected


def _formats(path):
  with open(os.path.join(path, 'export_info.json')) as f:
    return json.load(f)['formats']


def test_onnx_runtime_matches_the_saved_model(exported, tmp_path):
  pytest.importorskip('tf2onnx', reason='the export extra is not installed')
  ort = pytest.importorskip('onnxruntime',
                            reason='the export extra is not installed')
  model, path, patches, expected = exported
  export_formats.write_formats([model], _cfg(tmp_path, 'onnx'), path)
  entry = _formats(path)['onnx']
  assert entry['signature'] == 'patches' and entry['files'] == ['model.onnx']
  assert 'TensorStridedSliceUpdate' in entry['not_converted']
  session = ort.InferenceSession(os.path.join(path, 'model.onnx'),
                                 providers=['CPUExecutionProvider'])
  got, = session.run(['probabilities'], {'image': patches})
  np.testing.assert_allclose(got, expected, atol=1e-4)
  # The sliding window around the runtime segments a whole volume as the
  # model does.
  cfg = _cfg(tmp_path, 'onnx')
  volume = np.random.default_rng(1).normal(size=(20, 18, 24, 1)).astype(
      np.float32)
  runtime = whole_volume.volume_fn(
      cfg, lambda batch: session.run(['probabilities'], {'image': batch})[0])
  direct = whole_volume.volume_fn(
      cfg, whole_volume.probabilities_fn(cfg, [model]))
  np.testing.assert_allclose(runtime(volume), direct(volume), atol=1e-4)


def test_openvino_matches_the_saved_model(exported, tmp_path):
  ov = pytest.importorskip('openvino',
                           reason='the export extra is not installed')
  model, path, patches, expected = exported
  export_formats.write_formats([model], _cfg(tmp_path, 'openvino'), path)
  assert _formats(path)['openvino']['files'] == ['model.xml', 'model.bin']
  core = ov.Core()
  compiled = core.compile_model(
      core.read_model(os.path.join(path, 'model.xml')), 'CPU',
      {'INFERENCE_PRECISION_HINT': 'f32'})
  got = compiled([patches])[compiled.output('probabilities')]
  np.testing.assert_allclose(got, expected, atol=1e-4)


def test_export_format_is_checked_in_one_line(tmp_path):
  cfg = config.merge(config.Config(), {'export': {'format': 'tflite'}})
  with pytest.raises(config.ConfigError, match='^export.format: '):
    config.validate(cfg)


def test_export_format_flag_sets_the_config_key(tmp_path):
  from unet3d import run_dir  # pylint: disable=g-import-not-at-top
  from unet3d.cli import main  # pylint: disable=g-import-not-at-top
  run_dir.save_params(config.build_config(
      params_override=f'model_dir={tmp_path}'))
  main.FLAGS.unparse_flags()
  try:
    main.FLAGS(['unet3d', '--mode=export', f'--model_dir={tmp_path}',
                '--export_format=openvino'])
    assert main.resolve_config(main.FLAGS).export.format == 'openvino'
  finally:
    main.FLAGS.unparse_flags()

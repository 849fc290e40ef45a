"""Tests for unet3d/inference/export.py: the `patches` signature against
the Keras model, and `serving_default` on raw volumes in a process that
cannot import unet3d against `--mode=predict`."""

import json
import os
import subprocess
import sys

import nibabel as nib
import numpy as np
import pytest
import tensorflow as tf

from tests.inference import test_predict
from unet3d import config
from unet3d import models
from unet3d.inference import export
from unet3d.preprocess import cases
from unet3d.preprocess import dataset_json
from unet3d.preprocess import io
from unet3d.preprocess import preprocessing as pp


def _cfg(tmp_path, **model):
  cfg = config.merge(config.Config(), {
      'model_dir': str(tmp_path), 'num_classes': 3, 'num_base_filters': 2,
      'depth': 2, 'input_image_size': [16, 16, 16], 'model': model})
  config.validate(cfg)
  return cfg


@pytest.mark.parametrize('activation', ['softmax', 'sigmoid'])
def test_saved_model_reproduces_the_keras_model(tmp_path, activation):
  cfg = _cfg(tmp_path, output_activation=activation)
  model = models.build_model(cfg)
  path = export.export_saved_model(model, cfg, str(tmp_path / 'export'))
  assert os.path.isfile(os.path.join(path, 'params.yaml'))
  assert not os.path.exists(path + '.tmp-incomplete')
  serve = tf.saved_model.load(path).signatures['patches']
  # Any size divisible by the stride, not only the training size.
  image = np.random.default_rng(0).normal(size=(2, 8, 12, 16, 1)).astype(
      np.float32)
  out = serve(image=tf.constant(image))
  logits = model(image, training=False).numpy()
  if activation == 'softmax':
    e = np.exp(logits - logits.max(-1, keepdims=True))
    np.testing.assert_allclose(out['probabilities'].numpy(),
                               e / e.sum(-1, keepdims=True), atol=1e-5)
    np.testing.assert_array_equal(out['classes'].numpy(), logits.argmax(-1))
  else:
    np.testing.assert_allclose(out['probabilities'].numpy(),
                               1 / (1 + np.exp(-logits)), atol=1e-5)
    np.testing.assert_array_equal(out['masks'].numpy(), logits > 0)


def test_export_refuses_an_existing_folder_and_needs_a_checkpoint(tmp_path):
  cfg = _cfg(tmp_path)
  model = models.build_model(cfg)
  (tmp_path / 'export').mkdir()
  with pytest.raises(ValueError, match='export folder exists'):
    export.export_saved_model(model, cfg, str(tmp_path / 'export'))
  with pytest.raises(config.ConfigError, match='no checkpoint'):
    export.export_model(cfg)


# ----------------------------------------------------------------------------
# Raw volumes in, the same labels as --mode=predict out
# ----------------------------------------------------------------------------

# Runs in a fresh interpreter that cannot import unet3d: serving needs only
# TensorFlow and the SavedModel.
_SERVE_SCRIPT = '''
import importlib.abc, importlib.util, sys


class _NoProject(importlib.abc.MetaPathFinder):
  def find_spec(self, name, path=None, target=None):
    if name == 'unet3d' or name.startswith('unet3d.'):
      raise ImportError('serving must not import unet3d')
    return None


sys.meta_path.insert(0, _NoProject())
import numpy as np
import tensorflow as tf
assert 'unet3d' not in sys.modules
export_dir, volume, out = sys.argv[1:]
serve = tf.saved_model.load(export_dir).signatures['serving_default']
result = serve(image=tf.constant(np.load(volume)))
np.save(out + '_classes.npy', result['classes'].numpy())
np.save(out + '_probabilities.npy', result['probabilities'].numpy())
assert not [m for m in sys.modules if m.startswith('unet3d')]
'''


def _raw_volume_at_training_spacing(task_dir, info):
  """case_001's raw intensities, reoriented and resampled to the training
  grid (not normalised), made 40 x 13 x ~16 voxels (one axis shorter than
  the 16^3 window) with a zero slab that the nonzero crop removes.
  Returns (float32 [X, Y, Z], its RAS affine)."""
  plan = dataset_json.plan_from_dataset_info(info)
  image, affine = cases.read_images(
      [str(task_dir / 'imagesTr' / 'case_001.nii.gz')])
  image, affine = pp.reorient(image, affine)
  grid = pp.resample_grid(image.shape, io.spacing_of(affine),
                          plan.target_spacing)
  image = pp.resample_image(image, grid, plan.image_order)[..., 0]
  affine = pp.resampled_affine(affine, grid)
  volume = np.concatenate([image, image[::-1]], axis=0)[:40, :13]
  volume[:, :, -3:] = 0
  return np.ascontiguousarray(volume, np.float32), affine


def test_saved_model_segments_raw_volumes_like_predict(tmp_path):
  task_dir, records, info = test_predict._convert(  # pylint: disable=protected-access
      tmp_path, nonzero_mask=True)
  model_dir = tmp_path / 'model'
  cfg = test_predict._cfg(  # pylint: disable=protected-access
      model_dir=str(model_dir),
      training_file_pattern=str(records / 'train-*'), train_batch_size=1,
      train_steps=2, loss='dice_ce', use_index_label_in_train=True,
      train={'steps_per_loop': 2}, data={'shuffle_buffer': 1})
  test_predict.unet_main.run('train', cfg)

  volume, affine = _raw_volume_at_training_spacing(task_dir, info)
  assert volume.shape[1] < 16 and volume.shape != (16, 16, 16)
  scan = tmp_path / 'scan.nii.gz'
  io.save_nifti(str(scan), volume, affine)
  override = '--params_override=inference.mirror_axes=[0,2]'
  # The reference: the command's config resolution and predict mode, in
  # this process (predict's exit codes and stderr have their own tests).
  flags = test_predict.test_unet_main._flags([  # pylint: disable=protected-access
      '--mode=predict', f'--model_dir={model_dir}', f'--input={scan}',
      f'--output_dir={tmp_path / "seg"}', override])
  try:
    test_predict.unet_main.run('predict',
                               test_predict.unet_main.resolve_config(flags))
  finally:
    flags.unparse_flags()
  proc = test_predict._run_main(  # pylint: disable=protected-access
      '--mode=export', f'--model_dir={model_dir}', override)
  assert proc.returncode == 0, proc.stderr[-2000:]
  export_dir = model_dir / 'saved_model' / '2'
  assert f'exported SavedModel to {export_dir}' in proc.stdout

  with open(export_dir / export.EXPORT_INFO_FILE) as f:
    export_info = json.load(f)
  preprocessing = info['preprocessing']
  assert export_info['input_channels'] == 1
  assert export_info['classes'] == [info['labels'][k] for k in ('0', '1',
                                                                '2')]
  assert export_info['spacing'] == preprocessing['resample'][
      'target_spacing']
  assert export_info['normalization'] == preprocessing['normalization']
  assert export_info['patch_size'] == [16, 16, 16]
  assert export_info['mirror_axes'] == [0, 2]
  assert export_info['crop_to_nonzero'] is True

  np.save(tmp_path / 'volume.npy', volume[..., None])
  script = tmp_path / 'serve.py'
  script.write_text(_SERVE_SCRIPT)
  env = {k: v for k, v in os.environ.items() if k != 'PYTHONPATH'}
  env['TF_CPP_MIN_LOG_LEVEL'] = '3'
  proc = subprocess.run(
      [sys.executable, '-I', str(script), str(export_dir),
       str(tmp_path / 'volume.npy'), str(tmp_path / 'served')],
      cwd=str(tmp_path), env=env, capture_output=True, text=True,
      timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  served = np.load(tmp_path / 'served_classes.npy')
  probabilities = np.load(tmp_path / 'served_probabilities.npy')
  predicted = np.asarray(nib.load(tmp_path / 'seg' / 'scan_seg.nii.gz')
                         .dataobj)
  assert served.shape == predicted.shape == volume.shape
  agreement = np.mean(served == predicted)
  assert agreement >= 0.999, agreement
  # Outside the nonzero box: background, probability 1.
  assert (served[:, :, -3:] == 0).all()
  np.testing.assert_allclose(probabilities[:, :, -3:, 0], 1.0)
  np.testing.assert_allclose(probabilities.sum(-1), 1.0, atol=1e-5)
  assert len(np.unique(served[:, :, :-3])) > 1  # not a trivial prediction


# ----------------------------------------------------------------------------
# The served contract: non-finite voxels, rank and channels
# ----------------------------------------------------------------------------


@pytest.fixture(scope='module')
def served(tmp_path_factory):
  """One softmax export (no dataset.json), loaded once: (signatures, dir)."""
  root = tmp_path_factory.mktemp('served')
  cfg = _cfg(root)
  path = export.export_saved_model(models.build_model(cfg), cfg,
                                   str(root / 'export'))
  return tf.saved_model.load(path).signatures, path


def _volume(shape=(12, 10, 9, 1)):
  return np.random.default_rng(1).normal(size=shape).astype(np.float32) + 5


def _nan(v):
  v[2, 3, 4, 0] = np.nan


def _posinf(v):
  v[0, 0, 0, 0] = np.inf


def _neginf(v):
  v[5, 5, 5, 0] = -np.inf


def _nan_slab(v):
  v[:, :, 3] = np.nan


def _mixed(v):
  v[1, 2, 3, 0], v[4, 4, 4, 0], v[7, 1, 1, 0] = np.nan, np.inf, -np.inf


NONFINITE = {'nan': _nan, 'posinf': _posinf, 'neginf': _neginf,
             'nan_slab': _nan_slab, 'mixed': _mixed}


@pytest.mark.parametrize('kind', sorted(NONFINITE))
def test_served_nonfinite_voxels_are_replaced_and_counted(served, kind):
  signatures, _ = served
  volume = _volume()
  NONFINITE[kind](volume)
  bad = int((~np.isfinite(volume)).sum())
  out = signatures['serving_default'](image=tf.constant(volume))
  assert int(out['nonfinite_voxels']) == bad
  probabilities = out['probabilities'].numpy()
  assert np.isfinite(probabilities).all()
  # The same as serving the volume with the converters' rule applied.
  fixed, count = cases.replace_nonfinite(volume)
  assert count == bad
  expected = signatures['serving_default'](image=tf.constant(fixed))
  np.testing.assert_allclose(probabilities, expected['probabilities'],
                             atol=1e-6)
  assert int(expected['nonfinite_voxels']) == 0


@pytest.mark.parametrize('fill', [np.nan, np.inf, -np.inf])
def test_served_channel_without_finite_voxels_is_refused(served, fill):
  signatures, _ = served
  volume = np.full((8, 8, 8, 1), fill, np.float32)
  with pytest.raises(tf.errors.InvalidArgumentError,
                     match=r'image: channel\(s\) \[0\] have no finite voxel'):
    signatures['serving_default'](image=tf.constant(volume))


@pytest.mark.parametrize('signature,shape,layout', [
    ('serving_default', (8, 8, 8, 2), '[X, Y, Z, 1] (rank 4, 1 channel(s))'),
    ('serving_default', (8, 8, 8, 5), '[X, Y, Z, 1] (rank 4, 1 channel(s))'),
    ('serving_default', (8, 8, 8), '[X, Y, Z, 1] (rank 4, 1 channel(s))'),
    ('serving_default', (1, 8, 8, 8, 1),
     '[X, Y, Z, 1] (rank 4, 1 channel(s))'),
    ('patches', (1, 8, 8, 8, 3), '[B, X, Y, Z, 1] (rank 5, 1 channel(s))'),
    ('patches', (8, 8, 8, 1), '[B, X, Y, Z, 1] (rank 5, 1 channel(s))'),
])
def test_served_rank_and_channels_are_checked(served, signature, shape,
                                              layout):
  signatures, _ = served
  with pytest.raises(tf.errors.InvalidArgumentError) as info:
    signatures[signature](image=tf.zeros(shape))
  expected = (f'image: expected float32 {layout}, got shape '
              f'[{" ".join(str(s) for s in shape)}]')
  assert expected in info.value.message, info.value.message


def test_export_info_documents_nonfinite_voxels(served):
  _, path = served
  with open(os.path.join(path, export.EXPORT_INFO_FILE)) as f:
    info = json.load(f)
  outputs = info['signatures']['serving_default']['outputs']
  assert outputs['nonfinite_voxels'].startswith('int32 []')
  assert info['nonfinite_voxels'] == cases.NONFINITE_RULE


@pytest.mark.parametrize('failure', [
    OSError(28, 'No space left on device'),
    tf.errors.ResourceExhaustedError(None, None, 'disk full')])
def test_a_failed_export_write_is_one_line_and_leaves_nothing(
    tmp_path, monkeypatch, failure):
  cfg = _cfg(tmp_path)
  model = models.build_model(cfg)
  target = tmp_path / 'run' / 'saved_model' / '7'

  def fail(module, path, signatures=None):
    del module, signatures
    os.makedirs(path)  # a partial write, then the disk is full
    raise failure

  monkeypatch.setattr(tf.saved_model, 'save', fail)
  with pytest.raises(ValueError) as info:
    export.export_saved_model(model, cfg, str(target))
  message = str(info.value)
  assert '\n' not in message
  assert message.startswith(f'{target}: cannot write the export (')
  assert not (tmp_path / 'run').exists()


def test_an_export_under_a_file_is_one_line(tmp_path):
  cfg = _cfg(tmp_path)
  (tmp_path / 'afile').write_text('x')
  target = tmp_path / 'afile' / 'saved_model' / '7'
  with pytest.raises(ValueError, match=f'^{target}: cannot write the '
                     'export'):
    export.export_saved_model(models.build_model(cfg), cfg, str(target))
  assert (tmp_path / 'afile').read_text() == 'x'

"""Tests for unet3d/inference/sliding_window.py: the TF loop against
independent numpy references (window placement, Gaussian map, weighted mean,
mirroring), hand-computed values and properties (identity reconstruction,
seams, flip symmetry), device and host paths, strategies, SavedModels."""

import itertools
import math

import numpy as np
import pytest
import tensorflow as tf

from unet3d.inference import sliding_window as sw
from unet3d.inference import window_placement as wp

# tests/conftest.py splits the CPU into two logical devices.
TWO_CPUS = len(tf.config.list_logical_devices('CPU')) >= 2

PATCH = (16, 16, 16)


# ----------------------------------------------------------------------------
# numpy references, written independently of the module
# ----------------------------------------------------------------------------


def ref_starts(size, patch, overlap):
  """nnU-Net placement, in Python floats (the module uses integer ops)."""
  if size <= patch:
    return [0]
  step = max(1, int(patch * (1 - overlap)))
  count = math.ceil((size - patch) / step) + 1
  return [round(i * (size - patch) / (count - 1)) for i in range(count)]


def ref_gaussian(patch, sigma_scale=0.125):
  """exp(-|x|^2 / 2 sigma^2) on the full grid at once, max 1, floored."""
  grids = np.meshgrid(*[np.arange(p) - (p - 1) / 2 for p in patch],
                      indexing='ij')
  g = np.exp(-0.5 * sum((x / (sigma_scale * p))**2
                        for x, p in zip(grids, patch)))
  g = g / g.max()
  return np.maximum(g, g[g > 0].min())


def ref_flips(axes):
  return [c for r in range(len(axes) + 1)
          for c in itertools.combinations(axes, r)]


def ref_sliding_window(predict, image, patch, overlap=0.5,
                       weighting='gaussian', mirror_axes=(), pad_value=0.0):
  """One window at a time on the host, float64 sums."""
  spatial = image.shape[:-1]
  padded = tuple(max(s, p) for s, p in zip(spatial, patch))
  image = np.pad(image, [(0, p - s) for s, p in zip(spatial, padded)] +
                 [(0, 0)], constant_values=pad_value)
  weights = (ref_gaussian(patch) if weighting == 'gaussian'
             else np.ones(patch))
  total, norm = None, np.zeros(padded)
  for corner in itertools.product(*[ref_starts(s, p, overlap)
                                    for s, p in zip(padded, patch)]):
    box = tuple(slice(c, c + p) for c, p in zip(corner, patch))
    window = image[box][None].astype(np.float32)
    outs = [np.flip(predict(np.flip(window, [a + 1 for a in axes])),
                    [a + 1 for a in axes])
            for axes in ref_flips(mirror_axes)]
    out = np.mean(np.asarray(outs, np.float64), axis=0)[0]
    if total is None:
      total = np.zeros(padded + out.shape[-1:])
    total[box] += out * weights[..., None]
    norm[box] += weights
  result = total / norm[..., None]
  return result[tuple(slice(0, s) for s in spatial)]


# ----------------------------------------------------------------------------
# Models: TF predict_fn and numpy twin
# ----------------------------------------------------------------------------

_W = np.random.default_rng(7).normal(size=(2, 3)).astype(np.float32)
_B = np.array([0.1, -0.2, 0.3], np.float32)


def linear_softmax_tf(x):
  return tf.nn.softmax(tf.einsum('...c,ck->...k', x, _W) + _B)


def linear_softmax_np(x):
  z = x.astype(np.float64) @ _W + _B
  e = np.exp(z - z.max(-1, keepdims=True))
  return e / e.sum(-1, keepdims=True)


def context_tf(x):
  """Depends on the window (cumulative sums): not voxel-wise, not
  flip-symmetric."""
  a = tf.math.cumsum(x[..., :1], axis=1) * 0.1
  b = tf.math.cumsum(x[..., -1:], axis=3) * 0.2 - x[..., :1]
  return tf.sigmoid(tf.concat([a, b], -1))


def context_np(x):
  x = x.astype(np.float64)
  a = np.cumsum(x[..., :1], axis=1) * 0.1
  b = np.cumsum(x[..., -1:], axis=3) * 0.2 - x[..., :1]
  return 1 / (1 + np.exp(-np.concatenate([a, b], -1)))


def box_blur_tf(x):
  """3x3x3 mean with zero padding: commutes with every flip."""
  kernel = tf.ones([3, 3, 3, x.shape[-1], 1]) / 27.0
  return tf.sigmoid(tf.nn.conv3d(x, kernel, [1] * 5, 'SAME'))


def _image(shape, channels=2, seed=0):
  return np.random.default_rng(seed).normal(
      size=tuple(shape) + (channels,)).astype(np.float32)


def _run(predict, image, patch=PATCH, strategy=None, **kwargs):
  out = sw.sliding_window_inference(
      predict, image, sw.WindowOptions(patch, **kwargs), strategy)
  assert out.dtype == tf.float32
  return out.numpy()


# ----------------------------------------------------------------------------
# Placement and weights
# ----------------------------------------------------------------------------


def test_window_starts_hand_values():
  starts = lambda *a: wp.window_starts_tensor(*a).numpy().tolist()
  assert starts(10, 16, 0.5) == [0]           # smaller: padded, one window
  assert starts(16, 16, 0.5) == [0]
  assert starts(32, 16, 0.5) == [0, 8, 16]
  assert starts(32, 16, 0.0) == [0, 16]
  assert starts(32, 16, 0.75) == [0, 4, 8, 12, 16]
  assert starts(37, 16, 0.5) == [0, 7, 14, 21]  # 21 / 3 apart
  # span 5 over 2 steps: 2.5 rounds half to even, as Python's round.
  assert starts(13, 8, 0.5) == [0, 2, 5]
  with pytest.raises(ValueError, match='overlap: must be in'):
    wp.window_starts_tensor(32, 16, 1.0)
  # The static helper says the same.
  for size in range(1, 80):
    assert wp.window_starts(size, 16, 0.5) == starts(size, 16, 0.5)


def test_window_starts_match_the_float_formula_for_dynamic_sizes():
  # The sizes are tensors inside a traced function: the placement is
  # computed from the dynamic shape.
  for patch, overlap in [(16, 0.5), (16, 0.25), (8, 0.75), (5, 0.3),
                         (64, 0.5)]:
    fn = tf.function(lambda n, p=patch, o=overlap: wp.window_starts_tensor(
        n, p, o),
                     input_signature=[tf.TensorSpec([], tf.int32)])
    for size in range(1, 200):
      assert fn(size).numpy().tolist() == ref_starts(size, patch, overlap), (
          size, patch, overlap)


def test_window_corners_are_the_product_of_the_axes():
  corners = wp.window_corners([20, 33, 17], PATCH, 0.5).numpy().tolist()
  expected = itertools.product(ref_starts(20, 16, .5), ref_starts(33, 16, .5),
                               ref_starts(17, 16, .5))
  assert corners == [list(c) for c in expected]


def test_gaussian_map_matches_the_formula():
  for patch in [(9, 5), (16, 16, 16), (12, 7, 20)]:
    weights = wp.gaussian_importance_map(patch)
    np.testing.assert_allclose(weights, ref_gaussian(patch), rtol=1e-6)
    assert weights.dtype == np.float32 and weights.min() > 0
  # sigma = 0.25 * size, by hand: z / 2.25, y / 1.25.
  z, y = np.arange(9) - 4.0, np.arange(5) - 2.0
  expected = np.exp(-0.5 * ((z[:, None] / 2.25)**2 + (y[None, :] / 1.25)**2))
  np.testing.assert_allclose(wp.gaussian_importance_map((9, 5), 0.25),
                             expected / expected.max(), rtol=1e-6)


def test_mirror_flips_are_every_subset():
  assert wp.mirror_flips((), 3) == [()]
  assert wp.mirror_flips((2, 0), 3) == [(), (0,), (2,), (0, 2)]
  assert len(wp.mirror_flips((0, 1, 2), 3)) == 8


# ----------------------------------------------------------------------------
# Identity-like models are reconstructed
# ----------------------------------------------------------------------------


@pytest.mark.parametrize('overlap', [0.0, 0.25, 0.5, 0.75])
@pytest.mark.parametrize('weighting', ['gaussian', 'constant'])
def test_a_voxelwise_model_is_reconstructed(overlap, weighting):
  # Every window predicts the same value at a voxel, so any weighted mean
  # of windows must equal the model on the whole image.
  for shape in [(16, 16, 16), (10, 12, 9), (20, 33, 17), (32, 32, 32),
                (40, 16, 7)]:
    image = _image(shape)
    out = _run(linear_softmax_tf, image, overlap=overlap, batch_size=3,
               weighting=weighting)
    assert out.shape == shape + (3,)
    np.testing.assert_allclose(out, linear_softmax_np(image), atol=1e-5)


@pytest.mark.parametrize('overlap', [0.0, 0.25, 0.5, 0.75])
def test_the_identity_returns_the_input(overlap):
  for shape in [(9, 31, 16), (24, 24, 24)]:
    image = _image(shape, channels=1)
    out = _run(tf.identity, image, patch=(16, 8, 12), overlap=overlap,
               batch_size=2)
    np.testing.assert_allclose(out, image, rtol=1e-5, atol=1e-5)


def test_constant_weighting_averages_windows_by_hand():
  # 1-D: windows [0, 4), [2, 6), [4, 8), each predicting its own mean
  # (1.5, 3.5, 5.5); a voxel gets the mean over the windows covering it.
  image = np.arange(8, dtype=np.float32).reshape(8, 1)
  window_mean = lambda x: tf.broadcast_to(
      tf.reduce_mean(x, axis=[1, 2], keepdims=True), tf.shape(x))
  out = _run(window_mean, image, patch=(4,), weighting='constant')
  np.testing.assert_allclose(out[:, 0],
                             [1.5, 1.5, 2.5, 2.5, 4.5, 4.5, 5.5, 5.5])


def test_smaller_than_the_patch_is_padded_with_pad_value_and_cropped():
  image = np.ones((5, 6, 7, 1), np.float32)
  # The window mean sees the padding: 5*6*7 ones and 8^3 - 210 sevens.
  window_mean = lambda x: tf.broadcast_to(
      tf.reduce_mean(x, axis=[1, 2, 3], keepdims=True), tf.shape(x))
  out = _run(window_mean, image, patch=(8, 8, 8), pad_value=7.0)
  assert out.shape == (5, 6, 7, 1)
  np.testing.assert_allclose(out, (210 + 7 * (512 - 210)) / 512, rtol=1e-6)


def test_two_spatial_axes():
  image = _image((13, 20))
  out = _run(lambda x: tf.sigmoid(tf.math.cumsum(x, 1)), image,
             patch=(8, 8), batch_size=2)
  ref = ref_sliding_window(
      lambda x: 1 / (1 + np.exp(-np.cumsum(x.astype(np.float64), 1))),
      image, (8, 8))
  np.testing.assert_allclose(out, ref, atol=1e-5)


# ----------------------------------------------------------------------------
# Against the numpy reference
# ----------------------------------------------------------------------------


@pytest.mark.parametrize('overlap,batch_size', [(0.5, 1), (0.5, 3),
                                                (0.25, 2), (0.75, 4)])
@pytest.mark.parametrize('weighting', ['gaussian', 'constant'])
def test_matches_the_numpy_reference(overlap, batch_size, weighting):
  for shape in [(20, 33, 17), (10, 12, 9), (32, 32, 32)]:
    image = _image(shape, seed=sum(shape))
    out = _run(context_tf, image, overlap=overlap, batch_size=batch_size,
               weighting=weighting)
    ref = ref_sliding_window(context_np, image, PATCH, overlap, weighting)
    np.testing.assert_allclose(out, ref, atol=1e-5)


def test_predicts_batch_by_batch():
  image = _image((20, 33, 17))
  calls = tf.Variable(0)
  windows = tf.Variable(0)
  largest = tf.Variable(0)

  def counting(x):
    calls.assign_add(1)
    windows.assign_add(tf.shape(x)[0])
    largest.assign(tf.maximum(largest, tf.shape(x)[0]))
    with tf.control_dependencies([calls, windows, largest]):
      return tf.identity(linear_softmax_tf(x))

  _run(counting, image, batch_size=3)
  total = len(ref_starts(20, 16, .5)) * len(ref_starts(33, 16, .5)) * len(
      ref_starts(17, 16, .5))  # 2 * 4 * 2
  assert windows.numpy() == total == 16
  assert calls.numpy() == math.ceil(16 / 3)
  assert largest.numpy() == 3


def test_half_precision_outputs_are_accumulated_in_float32():
  image = _image((20, 24, 17))
  out = _run(lambda x: tf.cast(context_tf(x), tf.float16), image,
             batch_size=2)
  ref = ref_sliding_window(context_np, image, PATCH)
  np.testing.assert_allclose(out, ref, atol=2e-3)


# ----------------------------------------------------------------------------
# Gaussian weighting hides window seams
# ----------------------------------------------------------------------------


def test_gaussian_weighting_beats_constant_near_window_borders():
  # The model is the identity plus an error that is 1 on a window's faces
  # and falls linearly to 0 at its centre, as a patch model's boundary
  # artefacts: the Gaussian down-weights each window's border.
  distance = np.minimum.reduce(np.meshgrid(
      *[np.minimum(np.arange(p), p - 1 - np.arange(p)) for p in PATCH],
      indexing='ij'))
  border_error = (1.0 - distance / distance.max()).astype(np.float32)
  biased = lambda x: x + border_error[None, ..., None]
  image = _image((48, 40, 36), channels=1)
  errors, interior = {}, {}
  for weighting in ('gaussian', 'constant'):
    out = _run(biased, image, overlap=0.5, weighting=weighting)
    error = np.abs(out - image)
    errors[weighting] = error.mean()
    # Half a patch from the volume's faces every voxel is in >= 2 windows
    # per axis (closer, only one window covers it along that axis).
    interior[weighting] = error[8:-8, 8:-8, 8:-8].mean()
    # Same seams in the numpy reference.
    ref = ref_sliding_window(lambda x: x + border_error[None, ..., None],
                             image, PATCH, 0.5, weighting)
    np.testing.assert_allclose(out, ref, atol=1e-5)
  # Measured: 0.58 vs 0.78 everywhere, 0.38 vs 0.76 inside.
  assert errors['gaussian'] < 0.8 * errors['constant'], errors
  assert interior['gaussian'] < 0.6 * interior['constant'], interior


# ----------------------------------------------------------------------------
# Test-time mirroring
# ----------------------------------------------------------------------------


def test_mirroring_a_flip_symmetric_model_changes_nothing():
  image = _image((20, 33, 17))
  plain = _run(box_blur_tf, image, batch_size=2)
  for axes in [(0,), (1, 2), (0, 1, 2)]:
    mirrored = _run(box_blur_tf, image, batch_size=2, mirror_axes=axes)
    np.testing.assert_allclose(mirrored, plain, atol=1e-6)


@pytest.mark.parametrize('axes', [(0,), (2, 1), (0, 1, 2)])
def test_mirroring_averages_the_flipped_predictions(axes):
  image = _image((20, 33, 17))
  out = _run(context_tf, image, batch_size=3, mirror_axes=axes)
  ref = ref_sliding_window(context_np, image, PATCH, mirror_axes=axes)
  np.testing.assert_allclose(out, ref, atol=1e-5)
  # The model is not flip-symmetric: mirroring does change the result.
  assert np.abs(out - ref_sliding_window(context_np, image, PATCH)).max() > .05


# ----------------------------------------------------------------------------
# Traced: tf.function with unknown sizes, SavedModel
# ----------------------------------------------------------------------------


def _tiny_keras_model(seed=3, channels=1, classes=3):
  tf.keras.utils.set_random_seed(seed)
  return tf.keras.Sequential([
      tf.keras.Input((None, None, None, channels)),
      tf.keras.layers.Conv3D(4, 3, padding='same', activation='relu'),
      tf.keras.layers.Conv3D(classes, 3, padding='same',
                             activation='softmax')])


def test_inside_a_tf_function_with_unknown_spatial_sizes():
  model = _tiny_keras_model(channels=2)

  @tf.function(input_signature=[tf.TensorSpec([None, None, None, 2])])
  def infer(image):
    return sw.sliding_window_inference(
        lambda x: model(x, training=False), image,
        sw.WindowOptions(PATCH, overlap=0.5, batch_size=2, mirror_axes=(1,)))

  for shape in [(20, 33, 17), (10, 12, 9), (32, 16, 24)]:
    image = _image(shape)
    out = infer(image).numpy()
    ref = ref_sliding_window(lambda x: model(x).numpy(), image, PATCH,
                             mirror_axes=(1,))
    np.testing.assert_allclose(out, ref, atol=1e-5)
  assert infer.experimental_get_tracing_count() == 1


def test_in_a_saved_model_serving_signature(tmp_path):
  model = _tiny_keras_model()

  class Serving(tf.Module):

    def __init__(self):
      super().__init__()
      self.model = model

    @tf.function(input_signature=[tf.TensorSpec([None, None, None, 1],
                                                name='image')])
    def serve(self, image):
      probabilities = sw.sliding_window_inference(
          lambda x: self.model(x, training=False), image,
          sw.WindowOptions(PATCH, overlap=0.5, batch_size=2,
                           mirror_axes=(0, 2)))
      return {'probabilities': probabilities,
              'classes': tf.argmax(probabilities, -1, output_type=tf.int32)}

  module = Serving()
  tf.saved_model.save(module, str(tmp_path),
                      signatures={'serving_default': module.serve})
  del module
  serve = tf.saved_model.load(str(tmp_path)).signatures['serving_default']
  for shape in [(20, 33, 17), (10, 12, 9)]:
    image = _image(shape, channels=1)
    out = serve(image=tf.constant(image))
    ref = ref_sliding_window(lambda x: model(x).numpy(), image, PATCH,
                             mirror_axes=(0, 2))
    np.testing.assert_allclose(out['probabilities'].numpy(), ref, atol=1e-5)
    np.testing.assert_array_equal(out['classes'].numpy(), ref.argmax(-1))


def test_a_window_fn_is_traced_once_for_every_size():
  model = _tiny_keras_model()
  window_fn = sw.make_sliding_window_fn(
      tf.function(lambda x: model(x, training=False)),
      sw.WindowOptions(PATCH, batch_size=2, mirror_axes=(2,)), 1)
  for shape in [(20, 33, 17), (10, 12, 9), (40, 16, 16)]:
    image = _image(shape, channels=1)
    ref = ref_sliding_window(lambda x: model(x).numpy(), image, PATCH,
                             mirror_axes=(2,))
    np.testing.assert_allclose(window_fn(image).numpy(), ref, atol=1e-5)
  assert window_fn.experimental_get_tracing_count() == 1


def test_device_and_host_paths_agree():
  # The same Keras model as a tf.function (device path, traced into the
  # loop) and as a numpy function (host path, tf.numpy_function).
  model = _tiny_keras_model()
  device = tf.function(lambda x: model(x, training=False))
  assert sw.runs_on_device(device) and sw.runs_on_device(model)
  host_calls = []

  def host(batch):
    assert isinstance(batch, np.ndarray)
    host_calls.append(batch.shape[0])
    return model(batch, training=False).numpy()

  assert not sw.runs_on_device(host)
  image = _image((20, 33, 17), channels=1)
  for mirror_axes in [(), (0, 2)]:
    on_device = _run(device, image, batch_size=3, mirror_axes=mirror_axes)
    on_host = _run(host, image, batch_size=3, mirror_axes=mirror_axes)
    np.testing.assert_allclose(on_device, on_host, atol=1e-6)
  # 2 * 4 * 2 windows in batches of 3 (the last holds 1); with mirroring,
  # each batch once per flip.
  assert host_calls == [3] * 5 + [1] + [3] * 20 + [1] * 4


# ----------------------------------------------------------------------------
# tf.distribute
# ----------------------------------------------------------------------------


def _strategy(name):
  if name == 'one_device':
    return tf.distribute.OneDeviceStrategy('/cpu:0')
  if not TWO_CPUS:
    pytest.skip('TF was initialised before the CPU could be split in two')
  return tf.distribute.MirroredStrategy(
      ['/cpu:0', '/cpu:1'],
      cross_device_ops=tf.distribute.ReductionToOneDevice())


@pytest.mark.parametrize('name', ['one_device', 'mirrored'])
@pytest.mark.parametrize('batch_size,mirror_axes', [(1, ()), (3, (0, 2))])
def test_a_strategy_gives_the_same_result(name, batch_size, mirror_axes):
  strategy = _strategy(name)
  with strategy.scope():
    model = _tiny_keras_model()
  # 6 windows: uneven across batches of 2 (1 per replica) or 4 (2 each).
  image = _image((16, 25, 17), channels=1)
  devices = set()

  def predict(x):
    devices.add(tf.identity(x).device.rsplit(':', 1)[-1])  # at trace time
    return model(x, training=False)

  out = _run(predict, image, batch_size=batch_size, mirror_axes=mirror_axes,
             strategy=strategy)
  ref = ref_sliding_window(lambda x: model(x).numpy(), image, PATCH,
                           mirror_axes=mirror_axes)
  np.testing.assert_allclose(out, ref, atol=1e-5)
  # Mirrored: predict_fn is placed on both logical CPUs.
  assert devices == ({'0', '1'} if name == 'mirrored' else {'0'}), devices


# ----------------------------------------------------------------------------
# Arguments
# ----------------------------------------------------------------------------


def test_bad_arguments_name_the_argument_on_both_paths():
  image = np.zeros((8, 8, 8, 1), np.float32)
  identity = tf.identity
  options = sw.WindowOptions
  with pytest.raises(ValueError, match='patch_size: expected 3 sizes'):
    sw.sliding_window_inference(identity, image, options((8, 8)))
  with pytest.raises(ValueError, match='weighting: expected'):
    sw.sliding_window_inference(identity, image,
                                options((8, 8, 8), weighting='x'))
  with pytest.raises(ValueError, match='overlap: must be in'):
    sw.sliding_window_inference(identity, image,
                                options((8, 8, 8), overlap=1.0))
  with pytest.raises(ValueError, match='mirror_axes: expected'):
    sw.sliding_window_inference(identity, image,
                                options((8, 8, 8), mirror_axes=(3,)))
  with pytest.raises(ValueError, match='batch_size: must be'):
    sw.sliding_window_inference(identity, image,
                                options((8, 8, 8), batch_size=0))
  with pytest.raises(ValueError, match='strategy: expected'):
    sw.sliding_window_inference(identity, image, options((8, 8, 8)),
                                strategy='cpu')
  with pytest.raises(ValueError, match='patch_size: expected positive'):
    sw.sliding_window_inference(identity, image, options((8, 0, 8)))


# ----------------------------------------------------------------------------
# numpy predict functions (the host path)
# ----------------------------------------------------------------------------


def test_window_starts_cover_the_axis_with_the_overlap():
  assert wp.window_starts(10, 16, 0.5) == [0]
  assert wp.window_starts(16, 16, 0.5) == [0]
  assert wp.window_starts(32, 16, 0.5) == [0, 8, 16]
  starts = wp.window_starts(37, 16, 0.5)
  assert starts[0] == 0 and starts[-1] == 37 - 16
  assert all(b - a <= 8 for a, b in zip(starts, starts[1:]))
  with pytest.raises(ValueError, match='overlap: must be in'):
    wp.window_starts(32, 16, 1.0)


def test_gaussian_map_with_sigma_scale_matches_the_formula():
  weights = wp.gaussian_importance_map((9, 5), sigma_scale=0.25)
  z = np.arange(9) - 4.0
  y = np.arange(5) - 2.0
  expected = np.exp(-0.5 * ((z[:, None] / 2.25)**2 + (y[None, :] / 1.25)**2))
  np.testing.assert_allclose(weights, expected / expected.max(), rtol=1e-5)
  assert weights.min() > 0


@pytest.mark.parametrize('weighting', ['gaussian', 'constant'])
@pytest.mark.parametrize('shape', [(20, 24, 18), (12, 40, 16)])
def test_a_voxelwise_function_is_reproduced_exactly(weighting, shape):
  # A voxel-wise predict_fn has the same output in every window, so any
  # weighted average of the windows must equal it everywhere.
  rng = np.random.default_rng(0)
  image = rng.normal(size=shape + (2,)).astype(np.float32)

  def predict(batch):
    return np.concatenate([batch.sum(-1, keepdims=True),
                           np.tanh(batch[..., :1])], axis=-1)

  out = sw.sliding_window_inference(predict, image, sw.WindowOptions(
      (16, 16, 16), overlap=0.5, batch_size=3, weighting=weighting))
  assert out.shape == shape + (2,)
  np.testing.assert_allclose(out, predict(image[None])[0], rtol=1e-5,
                             atol=1e-5)


def test_constant_weighting_averages_overlapping_windows():
  # predict_fn returns the window's own mean; with constant weights the
  # result at a voxel is the mean over the windows that cover it.
  image = np.arange(8, dtype=np.float32).reshape(8, 1)

  def predict(batch):
    return np.broadcast_to(batch.mean(axis=(1, 2), keepdims=True), batch.shape)

  out = sw.sliding_window_inference(predict, image, sw.WindowOptions(
      (4,), overlap=0.5, weighting='constant'))
  # windows start at 0, 2, 4 with means 1.5, 3.5, 5.5
  expected = [1.5, 1.5, 2.5, 2.5, 4.5, 4.5, 5.5, 5.5]
  np.testing.assert_allclose(out[:, 0], expected)


def test_volume_smaller_than_the_window_is_padded_and_cropped_back():
  image = np.ones((5, 6, 7, 1), np.float32)
  seen = []

  def predict(batch):
    seen.append(batch.shape)
    return batch * 2

  out = sw.sliding_window_inference(predict, image,
                                    sw.WindowOptions((8, 8, 8)))
  assert seen == [(1, 8, 8, 8, 1)]
  assert out.shape == (5, 6, 7, 1)
  np.testing.assert_allclose(out, 2.0)


def test_bad_arguments_name_the_argument():
  image = np.zeros((8, 8, 8, 1), np.float32)
  with pytest.raises(ValueError, match='patch_size: expected 3 sizes'):
    sw.sliding_window_inference(lambda b: b, image, sw.WindowOptions((8, 8)))
  with pytest.raises(ValueError, match='weighting: expected'):
    sw.sliding_window_inference(lambda b: b, image,
                                sw.WindowOptions((8, 8, 8), weighting='x'))

"""Tests for unet3d/losses against numpy written from each formula."""

import dataclasses
import inspect
import logging
import math
import os

import numpy as np
import pytest
import tensorflow as tf

from unet3d import config
from unet3d import distribute
from unet3d import losses
from unet3d import ms_ssim

RNG = np.random.default_rng(0)
C = 3


def softmax(x):
  e = np.exp(x - x.max(-1, keepdims=True))
  return e / e.sum(-1, keepdims=True)


def sigmoid(x):
  return 1 / (1 + np.exp(-x))


def one_hot(labels, n=C):
  return np.eye(n)[labels]


def random_case(shape=(2, 6, 5, 4), n=C):
  logits = RNG.normal(size=shape + (n,)).astype(np.float32) * 2
  labels = RNG.integers(0, n, size=shape)
  return logits, labels


def run(name, labels, logits, **options):
  fn = losses.get_loss(name)
  return fn(tf.constant(labels), tf.constant(logits), **options).numpy()


# ---- numpy references --------------------------------------------------------


def np_dice(labels, logits, smooth=1e-5, include_background=True,
            batch=False, activation='softmax'):
  p = softmax(logits) if activation == 'softmax' else sigmoid(logits)
  t = one_hot(labels) if labels.ndim < logits.ndim else labels
  axes = tuple(range(1, logits.ndim - 1))
  tp, fp, fn = ((p * t).sum(axes), (p * (1 - t)).sum(axes),
                ((1 - p) * t).sum(axes))
  if batch:
    tp, fp, fn = tp.sum(0, keepdims=True), fp.sum(0, keepdims=True), fn.sum(
        0, keepdims=True)
  d = (2 * tp + smooth) / (2 * tp + fp + fn + smooth)
  if not include_background:
    d = d[:, 1:]
  loss = 1 - d.mean(-1)
  return np.broadcast_to(loss, (logits.shape[0],))


def np_cross_entropy(labels, logits, weights=None):
  logp = np.log(softmax(logits.astype(np.float64)))
  t = one_hot(labels)
  per_voxel = -(t * logp).sum(-1)
  if weights is not None:
    per_voxel *= (t * np.asarray(weights)).sum(-1)
  return per_voxel.reshape(len(labels), -1).mean(1)


# ---- tests -------------------------------------------------------------------


@pytest.mark.parametrize('include_background', [True, False])
@pytest.mark.parametrize('batch', [False, True])
def test_dice_matches_numpy(include_background, batch):
  logits, labels = random_case()
  got = run('dice', labels, logits, include_background=include_background,
            batch_dice=batch)
  np.testing.assert_allclose(
      got, np_dice(labels, logits, include_background=include_background,
                   batch=batch), rtol=1e-5)


def test_index_and_one_hot_labels_give_the_same_loss():
  logits, labels = random_case()
  for name in ('cross_entropy', 'dice', 'dice_ce', 'adaptive_dice32',
               'jaccard', 'tversky', 'focal', 'generalized_dice'):
    a = run(name, labels, logits)
    b = run(name, one_hot(labels).astype(np.float32), logits)
    np.testing.assert_allclose(a, b, rtol=1e-5, err_msg=name)


def test_cross_entropy_and_weighted_cross_entropy():
  logits, labels = random_case()
  np.testing.assert_allclose(run('cross_entropy', labels, logits),
                             np_cross_entropy(labels, logits), rtol=1e-5)
  w = [0.2, 1.0, 3.0]
  np.testing.assert_allclose(
      run('weighted_cross_entropy', labels, logits, class_weights=w),
      np_cross_entropy(labels, logits, w), rtol=1e-5)
  with pytest.raises(config.ConfigError, match='class_weights: required'):
    run('weighted_cross_entropy', labels, logits)


def np_batch_weighted_cross_entropy(labels, logits, extra=None):
  """pytorch-3dunet WeightedCrossEntropyLoss written out: weights from the
  batch's softmax, then torch's weighted mean over voxels."""
  p, t = softmax(logits), one_hot(labels)
  flat_p = p.reshape(-1, p.shape[-1])
  w = (1 - flat_p).sum(0) / flat_p.sum(0)
  if extra is not None:
    w = w * np.asarray(extra)
  ce = -(t * np.log(p)).sum(-1)
  vw = (t * w).sum(-1)
  return np.full(logits.shape[0], (vw * ce).sum() / vw.sum())


def test_pytorch_3dunet_loss_names():
  logits, labels = random_case()
  np.testing.assert_allclose(run('ce', labels, logits),
                             run('cross_entropy', labels, logits), rtol=1e-6)
  np.testing.assert_allclose(run('gdl', labels, logits),
                             run('generalized_dice', labels, logits),
                             rtol=1e-6)
  np.testing.assert_allclose(run('wce', labels, logits),
                             np_batch_weighted_cross_entropy(labels, logits),
                             rtol=1e-5)
  np.testing.assert_allclose(
      run('wce', labels, logits, class_weights=[1.0, 2.0, 0.5]),
      np_batch_weighted_cross_entropy(labels, logits, [1.0, 2.0, 0.5]),
      rtol=1e-5)
  assert losses.canonical_name('ce') == 'cross_entropy'
  assert losses.canonical_name('wce') == 'wce'


def test_wce_weights_carry_no_gradient():
  # With the weights constant, the gradient is that of a fixed-weight CE:
  # weighted_cross_entropy with the same weights, rescaled to torch's mean.
  logits, labels = random_case(shape=(1, 4, 4, 3))
  p = softmax(logits).reshape(-1, C)
  w = ((1 - p).sum(0) / p.sum(0)).astype(np.float32)
  x = tf.Variable(logits)
  with tf.GradientTape(persistent=True) as tape:
    got = losses.get_loss('wce')(tf.constant(labels), x)[0]
    fixed = losses.get_loss('weighted_cross_entropy')(
        tf.constant(labels), x, class_weights=w.tolist())[0]
  vw = w[labels].mean()  # weighted_cross_entropy divides by the voxel count
  np.testing.assert_allclose(tape.gradient(got, x).numpy(),
                             tape.gradient(fixed, x).numpy() / vw, rtol=1e-4,
                             atol=1e-7)


def test_wce_with_sigmoid_is_refused():
  cfg = config.merge(config.Config(), {'loss': 'wce', 'model': {
      'output_activation': 'sigmoid'}})
  with pytest.raises(config.ConfigError, match="loss: 'wce' is a softmax"):
    config.validate(cfg)


def test_adaptive_dice32_formula_and_empty_class():
  logits, labels = random_case()
  p, t = softmax(logits), one_hot(labels)
  axes = tuple(range(logits.ndim - 1))
  eps = 1e-7
  d = (2 * (p * t).sum(axes) + eps) / ((p + t).sum(axes) + eps)
  expected = 1 - (np.exp(-d) * d).sum() / (C * math.exp(-1))
  np.testing.assert_allclose(run('adaptive_dice32', labels, logits),
                             [expected] * 2, rtol=1e-5)
  # A class absent from label and (hard) prediction scores 1, not 2: a
  # perfect prediction then gives the loss of all classes scoring 1.
  labels = np.zeros((1, 4, 4, 4), int)
  labels[0, :2] = 1
  perfect = (one_hot(labels) * 40 - 20).astype(np.float32)
  d = np.array([1.0, 1.0, 1.0])
  expected = 1 - (np.exp(-d) * d).sum() / (C * math.exp(-1))
  np.testing.assert_allclose(run('adaptive_dice32', labels, perfect),
                             [expected], atol=1e-5)
  assert expected == pytest.approx(0.0, abs=1e-6)


def test_jaccard_tversky_generalized_dice_match_numpy():
  logits, labels = random_case()
  p, t = softmax(logits), one_hot(labels)
  axes = (1, 2, 3)
  tp, fp, fn = (p * t).sum(axes), (p * (1 - t)).sum(axes), ((1 - p) * t).sum(
      axes)
  s = 1e-5
  np.testing.assert_allclose(run('jaccard', labels, logits),
                             1 - ((tp + s) / (tp + fp + fn + s)).mean(-1),
                             rtol=1e-5)
  np.testing.assert_allclose(
      run('tversky', labels, logits, tversky_alpha=0.3, tversky_beta=0.7),
      1 - ((tp + s) / (tp + 0.3 * fp + 0.7 * fn + s)).mean(-1), rtol=1e-5)
  w = 1 / t.sum(axes)**2
  gd = 1 - (2 * (w * tp).sum(-1) + s) / ((w * (p + t).sum(axes)).sum(-1) + s)
  np.testing.assert_allclose(run('generalized_dice', labels, logits), gd,
                             rtol=1e-4)
  # Tversky with alpha = beta = 0.5 is dice.
  np.testing.assert_allclose(
      run('tversky', labels, logits, tversky_alpha=0.5, tversky_beta=0.5),
      np_dice(labels, logits), rtol=1e-5)


def test_focal_matches_numpy_and_gamma_zero_is_weighted_ce():
  logits, labels = random_case()
  p, t = softmax(logits), one_hot(labels)
  p_t = (p * t).sum(-1)
  alpha = np.where(labels > 0, 0.25, 0.75)  # RetinaNet: alpha on positives
  expected = (-alpha * (1 - p_t)**2 * np.log(p_t)).reshape(2, -1).mean(1)
  np.testing.assert_allclose(run('focal', labels, logits), expected,
                             rtol=1e-5)
  g0 = run('focal', labels, logits, focal_gamma=0.0, focal_alpha=0.5)
  np.testing.assert_allclose(g0, 0.5 * np_cross_entropy(labels, logits),
                             rtol=1e-5)


def test_sigmoid_losses_on_multi_label_targets():
  logits = RNG.normal(size=(2, 5, 5, 5, 3)).astype(np.float32)
  targets = (RNG.random((2, 5, 5, 5, 3)) > 0.6).astype(np.float32)
  p = sigmoid(logits.astype(np.float64))
  bce = -(targets * np.log(p) + (1 - targets) * np.log(1 - p))
  np.testing.assert_allclose(run('bce', targets, logits),
                             bce.reshape(2, -1).mean(1), rtol=1e-5)
  dice_sig = np_dice(targets, logits, activation='sigmoid')
  np.testing.assert_allclose(
      run('dice', targets, logits, output_activation='sigmoid'), dice_sig,
      rtol=1e-5)
  np.testing.assert_allclose(run('bce_dice', targets, logits),
                             bce.reshape(2, -1).mean(1) + dice_sig, rtol=1e-5)


def test_ignore_label_removes_voxels_from_every_loss():
  logits, labels = random_case()
  ignored = labels.copy()
  ignored[:, :2] = 7  # these voxels must not matter
  changed = logits.copy()
  changed[:, :2] = RNG.normal(size=changed[:, :2].shape) * 5
  for name in ('cross_entropy', 'dice', 'dice_ce', 'focal', 'jaccard',
               'tversky'):
    a = run(name, ignored, logits, ignore_label=7)
    b = run(name, ignored, changed, ignore_label=7)
    np.testing.assert_allclose(a, b, rtol=1e-5, err_msg=name)
  # Equal to computing on the kept voxels alone.
  kept_ce = np_cross_entropy(labels[:, 2:], logits[:, 2:])
  np.testing.assert_allclose(run('cross_entropy', ignored, logits,
                                 ignore_label=7), kept_ce, rtol=1e-5)


def test_hand_built_cases_perfect_disjoint_single_voxel():
  labels = np.zeros((1, 4, 4, 4), int)
  labels[0, 1, 1, 1] = 1  # a single foreground voxel
  perfect = (one_hot(labels, 2) * 60 - 30).astype(np.float32)
  disjoint = -perfect
  assert run('dice', labels, perfect)[0] == pytest.approx(0, abs=1e-5)
  assert run('dice', labels, disjoint)[0] == pytest.approx(1, abs=1e-4)
  assert run('jaccard', labels, perfect)[0] == pytest.approx(0, abs=1e-5)
  assert run('cross_entropy', labels, perfect)[0] == pytest.approx(0, abs=1e-6)
  assert run('cross_entropy', labels, disjoint)[0] == pytest.approx(60, rel=1e-3)
  # Background-only label with background-only prediction: dice 1 per class.
  empty = np.zeros((1, 4, 4, 4), int)
  bg = (one_hot(empty, 2) * 60 - 30).astype(np.float32)
  assert run('dice', empty, bg)[0] == pytest.approx(0, abs=1e-5)


def _ms_ssim_single_scale_reference(x, y, size, sigma):
  """SSIM by the formula at one scale, with a valid Gaussian window (2D)."""
  coords = np.arange(size) - (size - 1) / 2
  g = np.exp(-0.5 * (coords / sigma)**2)
  g /= g.sum()
  k = np.outer(g, g)

  def filt(a):
    h, w = a.shape
    out = np.zeros((h - size + 1, w - size + 1))
    for i in range(out.shape[0]):
      for j in range(out.shape[1]):
        out[i, j] = (a[i:i + size, j:j + size] * k).sum()
    return out

  c1, c2 = 0.01**2, 0.03**2
  mx, my = filt(x), filt(y)
  sx, sy = filt(x * x) - mx**2, filt(y * y) - my**2
  sxy = filt(x * y) - mx * my
  return (((2 * mx * my + c1) / (mx**2 + my**2 + c1)) *
          ((2 * sxy + c2) / (sx + sy + c2))).mean()


def test_ms_ssim_identity_one_scale_reference_and_scale_count():
  x = RNG.random((1, 12, 12, 1)).astype(np.float32)
  y = np.clip(x + RNG.normal(scale=0.2, size=x.shape), 0, 1).astype(np.float32)
  assert ms_ssim.ms_ssim(tf.constant(x), tf.constant(x)).numpy()[0, 0] == (
      pytest.approx(1.0, abs=1e-5))
  # 12 < 2 * 11: only one scale fits, so MS-SSIM is plain SSIM.
  expected = _ms_ssim_single_scale_reference(x[0, ..., 0].astype(np.float64),
                                             y[0, ..., 0].astype(np.float64),
                                             11, 1.5)
  got = ms_ssim.ms_ssim(tf.constant(x), tf.constant(y)).numpy()[0, 0]
  assert got == pytest.approx(expected, rel=1e-4)
  # A bigger 3D input uses several scales and is still 1 for identical input.
  z = tf.constant(RNG.random((1, 48, 48, 48, 2)).astype(np.float32))
  np.testing.assert_allclose(ms_ssim.ms_ssim(z, z).numpy(), 1.0, atol=1e-5)
  noisy = tf.clip_by_value(z + tf.random.normal(z.shape, stddev=0.3), 0, 1)
  assert np.all(ms_ssim.ms_ssim(z, noisy).numpy() < 0.9)


def test_hybrid_is_focal_plus_ms_ssim_plus_iou():
  logits, labels = random_case(shape=(1, 16, 16, 16))
  got = run('hybrid', labels, logits)
  p, t = softmax(logits), one_hot(labels)
  ssim = ms_ssim.ms_ssim(tf.constant(p, tf.float32),
                        tf.constant(t, tf.float32)).numpy().mean(-1)
  expected = (run('focal', labels, logits) + (1 - ssim) +
              run('jaccard', labels, logits))
  np.testing.assert_allclose(got, expected, rtol=1e-5)


@pytest.mark.parametrize('name', losses.LOSS_NAMES)
def test_gradients_are_finite_for_all_background_and_perfect(name):
  labels = np.zeros((2, 8, 8, 8), np.int32)
  options = {'class_weights': [1.0, 1.0, 1.0]}
  for target in (labels, np.where(np.arange(8)[None, :, None, None] > 3, 2,
                                  labels).astype(np.int32)):
    for scale in (0.0, 30.0):  # uniform, and a confident perfect prediction
      logits = tf.Variable(one_hot(target) * scale, dtype=tf.float32)
      y = tf.constant(target)
      if name in ('bce', 'bce_dice'):
        y = tf.constant(one_hot(target), tf.float32)
      with tf.GradientTape() as tape:
        loss = tf.reduce_mean(losses.get_loss(name)(
            y, logits, **losses.options_for(name, options)))
      grad = tape.gradient(loss, logits)
      assert np.isfinite(loss.numpy()), name
      assert grad is not None and np.all(np.isfinite(grad.numpy())), name


def test_mixed_precision_logits_compute_in_float32():
  logits, labels = random_case()
  half = tf.constant(logits, tf.float16)
  for name in ('dice_ce', 'hybrid', 'adaptive_dice32'):
    out = losses.get_loss(name)(tf.constant(labels), half)
    assert out.dtype == tf.float32
    np.testing.assert_allclose(out.numpy(), run(name, labels, logits),
                               rtol=2e-2, atol=2e-3)


def _cfg(**values):
  cfg = config.merge(config.Config(), values)
  config.validate(cfg)
  return cfg


def test_deep_supervision_weights_and_cgm_term():
  assert losses.deep_supervision_weights(None, 4) == [0.25] * 4
  nn = losses.deep_supervision_weights('nnunet', 3)
  assert nn == pytest.approx([4 / 7, 2 / 7, 1 / 7])
  with pytest.raises(config.ConfigError, match='has 3 heads, got 2'):
    losses.deep_supervision_weights([1, 1], 3)

  cfg = _cfg(loss='dice_ce', input_image_size=[16, 16, 16], num_classes=3,
             model={'deep_supervision_weights': 'nnunet',
                    'cgm_loss_weight': 0.5})
  logits, labels = random_case(shape=(2, 4, 4, 4))
  aux = RNG.normal(size=logits.shape).astype(np.float32)
  coarse = RNG.normal(size=(2, 2, 2, 2, C)).astype(np.float32)
  cls = RNG.normal(size=(2, 2)).astype(np.float32)
  labels[1] = 0  # the second example has no foreground
  outputs = {'logits': tf.constant(logits),
             'deep_supervision': [tf.constant(aux), tf.constant(coarse)],
             'classification': tf.constant(cls)}
  got = losses.build_loss_fn(cfg)(tf.constant(labels), outputs).numpy()
  coarse_labels = labels[:, 1::2, 1::2, 1::2]  # nearest, centre of 2x2x2
  expected = (4 / 7 * run('dice_ce', labels, logits) +
              2 / 7 * run('dice_ce', labels, aux) +
              1 / 7 * run('dice_ce', coarse_labels, coarse))
  presence = np.array([[0, 1], [1, 0]], np.float64)
  pc = sigmoid(cls.astype(np.float64))
  bce = -(presence * np.log(pc) + (1 - presence) * np.log(1 - pc)).mean(-1)
  np.testing.assert_allclose(got, expected + 0.5 * bce, rtol=1e-5)


def _tiny_model():
  inputs = tf.keras.Input([8, 8, 8, 1])
  outputs = tf.keras.layers.Conv3D(3, 3, padding='same',
                                   kernel_initializer='glorot_uniform')(inputs)
  return tf.keras.Model(inputs, outputs)


def test_mirrored_gradients_equal_single_device_on_the_same_global_batch():
  cfg = _cfg(loss='dice_ce', num_classes=3, input_image_size=[8, 8, 8])
  loss_fn = losses.build_loss_fn(cfg)
  images = tf.constant(RNG.normal(size=(4, 8, 8, 8, 1)), tf.float32)
  labels = tf.constant(RNG.integers(0, 3, size=(4, 8, 8, 8)), tf.int32)
  tf.keras.utils.set_random_seed(1)
  single = _tiny_model()
  weights = single.get_weights()

  with tf.GradientTape() as tape:
    loss = tf.nn.compute_average_loss(loss_fn(labels, single(images)),
                                      global_batch_size=4)
  expected = [g.numpy() for g in tape.gradient(loss,
                                               single.trainable_variables)]

  strategy = distribute.mirrored_strategy(['/cpu:0', '/cpu:1'])
  with strategy.scope():
    model = _tiny_model()
  model.set_weights(weights)
  dataset = strategy.experimental_distribute_dataset(
      tf.data.Dataset.from_tensors((images, labels)))

  @tf.function
  def grads(inputs):
    def fn(x, y):
      with tf.GradientTape() as tape:
        loss = tf.nn.compute_average_loss(loss_fn(y, model(x)),
                                          global_batch_size=4)
      g = tape.gradient(loss, model.trainable_variables)
      return tf.distribute.get_replica_context().all_reduce('sum', g)
    return strategy.run(fn, args=inputs)

  per_replica = grads(next(iter(dataset)))
  got = [strategy.experimental_local_results(g)[0].numpy() for g in per_replica]
  for a, b in zip(got, expected):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize('ignore_label', [None, 2])
@pytest.mark.parametrize('batch_dice', [False, True])
@pytest.mark.parametrize('include_background', [False, True])
@pytest.mark.parametrize('class_weights', [None, [0.5, 1.0, 2.0]])
def test_dice_ce_in_one_pass_equals_ce_plus_dice(ignore_label, batch_dice,
                                                 include_background,
                                                 class_weights):
  rng = np.random.default_rng(1)
  logits = tf.constant(rng.normal(size=(2, 6, 5, 4, 3)) * 2, tf.float32)
  labels = tf.constant(rng.integers(0, 3, size=(2, 6, 5, 4)))
  options = dict(ignore_label=ignore_label, batch_dice=batch_dice,
                 include_background=include_background,
                 class_weights=class_weights, smooth=1e-5,
                 output_activation='softmax')
  ce_options = losses.options_for('cross_entropy', options)
  expected_fn = lambda lg: (0.7 * losses.cross_entropy(labels, lg,
                                                       **ce_options)
                            + 1.3 * losses.dice(labels, lg, **options))
  got_fn = lambda lg: losses.dice_ce(labels, lg, ce_weight=0.7,
                                     dice_weight=1.3, **options)
  for fn in (expected_fn, got_fn):
    with tf.GradientTape() as tape:
      tape.watch(logits)
      value = fn(logits)
    if fn is expected_fn:
      expected, expected_grad = value.numpy(), tape.gradient(value, logits)
    else:
      got, got_grad = value.numpy(), tape.gradient(value, logits)
  np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(got_grad.numpy(), expected_grad.numpy(),
                             rtol=1e-4, atol=1e-6)


# ---- the option contract -----------------------------------------------------


def test_a_misspelt_option_names_the_loss_and_the_closest_option():
  logits, labels = random_case()
  with pytest.raises(config.ConfigError,
                     match="^dice: unknown option 'smoth'; did you mean "
                           "'smooth'\\?"):
    run('dice', labels, logits, smoth=1.0)
  with pytest.raises(config.ConfigError,
                     match="^focal: unknown option 'focal_gama'; did you "
                           "mean 'focal_gamma'\\?"):
    losses.focal(tf.constant(labels), tf.constant(logits), focal_gama=1.0)
  # An option of another loss is refused as well: dice has no focal_gamma.
  with pytest.raises(config.ConfigError, match="^dice: .*'focal_gamma'"):
    run('dice', labels, logits, focal_gamma=1.0)


@pytest.mark.parametrize('name', losses.LOSS_NAMES)
def test_each_loss_declares_its_options_and_no_catch_all(name):
  entry = losses.LOSSES[name]
  params = inspect.signature(entry.fn).parameters.values()
  assert all(p.kind is not p.VAR_KEYWORD for p in params), name
  assert entry.options == tuple(p.name for p in params)[2:]
  # Every option a loss declares is one the config can give it.
  assert set(entry.options) <= _config_option_names(), name


def _config_option_names():
  lo = config.Config().loss_options
  return {f.name for f in dataclasses.fields(lo)} | {
      'output_activation'}


def test_build_loss_fn_passes_only_the_declared_options():
  cfg = _cfg(loss='focal', loss_options={'focal_gamma': 1.0,
                                         'ignore_label': 2})
  assert losses.config_options(cfg) == {
      'output_activation': 'softmax', 'ignore_label': 2, 'focal_alpha': 0.25,
      'focal_gamma': 1.0}
  # Plain cross-entropy never weighs, even with class_weights set.
  cfg = _cfg(loss='ce', num_classes=3,
             loss_options={'class_weights': [1.0, 2.0, 3.0]})
  assert losses.config_options(cfg) == {'output_activation': 'softmax',
                                        'ignore_label': None}
  logits, labels = random_case()
  np.testing.assert_allclose(
      losses.build_loss_fn(cfg)(tf.constant(labels), tf.constant(logits)),
      np_cross_entropy(labels, logits), rtol=1e-5)


def test_config_options_the_loss_ignores_are_named_once(caplog,
                                                        monkeypatch):
  monkeypatch.setattr(losses.registry, '_warned', set())
  cfg = _cfg(loss='dice', loss_options={'focal_gamma': 3.0, 'smooth': 1.0})
  assert losses.unused_options(cfg) == ['focal_gamma']
  with caplog.at_level(logging.WARNING, logger='unet3d'):
    losses.build_loss_fn(cfg)
    losses.build_loss_fn(cfg)
  named = [r.getMessage() for r in caplog.records
           if 'focal_gamma' in r.getMessage()]
  assert named == ["loss_options.focal_gamma: set to 3.0, but loss 'dice' "
                   'does not use it']
  assert not any('smooth' in r.getMessage() for r in caplog.records)
  # Defaults are always present and never warned about.
  assert losses.unused_options(_cfg(loss='dice')) == []
  cfg = _cfg(loss='cross_entropy', num_classes=3,
             loss_options={'class_weights': [1.0, 1.0, 2.0]})
  assert losses.unused_options(cfg) == ['class_weights']
  cfg = _cfg(loss='weighted_cross_entropy', num_classes=3,
             loss_options={'class_weights': [1.0, 1.0, 2.0]})
  assert losses.unused_options(cfg) == []


@pytest.mark.parametrize('seed, ours', [
    ('GeneralizedDiceLoss', 'generalized_dice'), ('DiceLoss', 'dice'),
    ('BCEDiceLoss', 'bce_dice'), ('CrossEntropyLoss', 'cross_entropy'),
    ('WeightedCrossEntropyLoss', 'wce'), ('BCEWithLogitsLoss', 'bce')])
def test_pytorch_3dunet_loss_class_names_are_aliases(seed, ours):
  assert losses.get_loss(seed) is losses.get_loss(ours)
  assert losses.canonical_name(seed) == ours


def test_unsupported_pytorch_3dunet_loss_is_one_line():
  cfg = config.merge(config.Config(), {'loss': 'PixelWiseCrossEntropyLoss'})
  with pytest.raises(config.ConfigError,
                     match='^loss: .PixelWiseCrossEntropyLoss. is not '
                           'supported: .*weight map') as error:
    config.validate(cfg)
  assert '\n' not in str(error.value)


def test_pytorch3dunet_recipe_names_its_loss_as_pytorch_3dunet_does():
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  cfg = config.build_config(
      os.path.join(root, 'configs', 'hdf5', 'pytorch3dunet.yaml'), None, {})
  assert cfg.loss == 'CrossEntropyLoss'
  assert losses.canonical_name(cfg.loss) == 'cross_entropy'
  assert cfg.model.layer_order == 'gcr'

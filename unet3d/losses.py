"""Segmentation losses: pure functions of (labels, logits) -> per-example loss.

Shapes: logits [B, *spatial, C] (any float dtype; every loss computes in
float32). labels are class indices [B, *spatial] or one-hot / multi-hot
[B, *spatial, C]; the rank tells which. Each loss returns float32 [B], so the
training loop's `tf.nn.compute_average_loss(..., global_batch_size)` scales
it correctly under any tf.distribute strategy.

`output_activation` turns logits into probabilities: 'softmax' for exclusive
classes, 'sigmoid' for multi-label targets (e.g. BraTS regions).

Voxels whose index label equals `ignore_label` are left out of every loss.

`LOSS_NAMES` is the registry config validation asks (`check_loss_config`);
`build_loss_fn(cfg)` takes a `unet3d.config.Config` without importing that
module, which imports this one.
"""

from __future__ import annotations

import math
from typing import Callable, NamedTuple, Optional

import tensorflow as tf

from unet3d import labels as labels_lib
from unet3d import ms_ssim as ms_ssim_lib
from unet3d.errors import ConfigError, unknown_name
from unet3d.models import heads

EPSILON = 1e-7


# ----------------------------------------------------------------------------
# Shared pieces
# ----------------------------------------------------------------------------


def spatial_axes(logits) -> list[int]:
  return list(range(1, logits.shape.rank - 1))


def prepare(labels, logits, output_activation: str = 'softmax',
            ignore_label: Optional[int] = None):
  """Returns (probabilities, one-hot targets, voxel mask [B, *spatial, 1]).

  All float32. The mask is 0 where the label is `ignore_label`.
  """
  logits = tf.cast(logits, tf.float32)
  targets, mask = labels_lib.targets_and_mask(labels, logits.shape.rank,
                                   logits.shape[-1], ignore_label)
  if output_activation == 'sigmoid':
    probs = tf.sigmoid(logits)
  else:
    probs = tf.nn.softmax(logits)
  return probs, targets, mask


def _class_mean(scores, include_background: bool, weights=None):
  """Mean over the class axis of [B, C] (or [C]) scores."""
  if not include_background:
    scores = scores[..., 1:]
    if weights is not None:
      weights = weights[1:]
  if weights is None:
    return tf.reduce_mean(scores, axis=-1)
  weights = tf.constant(weights, tf.float32)
  return tf.reduce_sum(scores * weights, axis=-1) / tf.reduce_sum(weights)


def _per_example(value, logits):
  """Broadcasts a batch-level scalar loss to [B] (mean gives it back)."""
  return tf.fill(tf.shape(logits)[:1], value)


# ----------------------------------------------------------------------------
# Overlap losses
# ----------------------------------------------------------------------------


def adaptive_dice32(labels, logits, output_activation='softmax',
                    ignore_label=None, **unused):
  """The TF Model Garden's adaptive dice, computed over the whole batch.

  d_c = (2 I_c + eps) / (U_c + eps); w_c = exp(-d_c);
  L = 1 - sum_c w_c d_c / (C e^-1).
  The Model Garden wrote 2 (I_c + eps) / (U_c + eps), which scores a class
  absent from both label and prediction as 2; with eps outside the factor it
  scores 1, the dice of a perfect empty prediction. It is a batch-level loss:
  the value is returned for every example so that the mean restores it.
  """
  probs, targets, mask = prepare(labels, logits, output_activation,
                                 ignore_label)
  axes = list(range(logits.shape.rank - 1))
  intersection = tf.reduce_sum(probs * targets * mask, axis=axes)
  union = tf.reduce_sum((probs + targets) * mask, axis=axes)
  scores = (2.0 * intersection + EPSILON) / (union + EPSILON)
  weights = tf.exp(-scores)
  num_classes = float(logits.shape[-1])
  loss = 1.0 - tf.reduce_sum(weights * scores) / (num_classes * math.exp(-1.0))
  return _per_example(loss, logits)


def _overlap_sums(labels, logits, output_activation, ignore_label,
                  batch_dice: bool):
  """Soft true positives, false positives and false negatives per class.

  Returns three [B, C] tensors (or [1, C] summed over the batch when
  batch_dice).
  """
  probs, targets, mask = prepare(labels, logits, output_activation,
                                 ignore_label)
  axes = spatial_axes(logits)
  tp = tf.reduce_sum(probs * targets * mask, axis=axes)
  fp = tf.reduce_sum(probs * (1.0 - targets) * mask, axis=axes)
  fn = tf.reduce_sum((1.0 - probs) * targets * mask, axis=axes)
  return _over_batch(tp, fp, fn, batch_dice)


def _over_batch(tp, fp, fn, batch_dice: bool):
  """[B, C] sums, or [1, C] summed over the batch when batch_dice."""
  if batch_dice:
    tp, fp, fn = (tf.reduce_sum(t, axis=0, keepdims=True) for t in (tp, fp, fn))
  return tp, fp, fn


def _dice_loss(tp, fp, fn, logits, smooth, include_background, class_weights,
               batch_dice):
  scores = (2.0 * tp + smooth) / (2.0 * tp + fp + fn + smooth)
  return _finish(scores, logits, include_background, class_weights, batch_dice)


def _finish(scores, logits, include_background, class_weights, batch_dice):
  loss = 1.0 - _class_mean(scores, include_background, class_weights)
  if batch_dice:  # [1] -> broadcast to [B]
    return _per_example(loss[0], logits)
  return loss


def dice(labels, logits, output_activation='softmax', ignore_label=None,
         smooth=1e-5, include_background=True, batch_dice=False,
         class_weights=None, **unused):
  """1 - soft dice, (2 TP + s) / (2 TP + FP + FN + s), mean over classes.

  batch_dice sums TP/FP/FN over the batch before the ratio (nnU-Net's
  option); the loss is then the same for every example.
  """
  tp, fp, fn = _overlap_sums(labels, logits, output_activation, ignore_label,
                             batch_dice)
  return _dice_loss(tp, fp, fn, logits, smooth, include_background,
                    class_weights, batch_dice)


def jaccard(labels, logits, output_activation='softmax', ignore_label=None,
            smooth=1e-5, include_background=True, batch_dice=False,
            class_weights=None, **unused):
  """1 - soft IoU, (TP + s) / (TP + FP + FN + s), mean over classes."""
  tp, fp, fn = _overlap_sums(labels, logits, output_activation, ignore_label,
                             batch_dice)
  scores = (tp + smooth) / (tp + fp + fn + smooth)
  return _finish(scores, logits, include_background, class_weights, batch_dice)


def tversky(labels, logits, output_activation='softmax', ignore_label=None,
            smooth=1e-5, include_background=True, batch_dice=False,
            tversky_alpha=0.3, tversky_beta=0.7, class_weights=None, **unused):
  """1 - Tversky index TP / (TP + alpha FP + beta FN), mean over classes.

  alpha weighs false positives and beta false negatives (Salehi et al. 2017);
  alpha = beta = 0.5 is dice.
  """
  tp, fp, fn = _overlap_sums(labels, logits, output_activation, ignore_label,
                             batch_dice)
  scores = (tp + smooth) / (tp + tversky_alpha * fp + tversky_beta * fn +
                            smooth)
  return _finish(scores, logits, include_background, class_weights, batch_dice)


def generalized_dice(labels, logits, output_activation='softmax',
                     ignore_label=None, smooth=1e-5, include_background=True,
                     **unused):
  """Sudre et al. 2017: 1 - 2 sum_c w_c TP_c / sum_c w_c (2TP+FP+FN)_c,
  with w_c = 1 / (sum of the class's label volume)^2 per example.

  A class absent from an example's label gets weight 0 there (its infinite
  weight would otherwise dominate), as MONAI's `w_type='square'` does.
  """
  probs, targets, mask = prepare(labels, logits, output_activation,
                                 ignore_label)
  if not include_background:
    probs, targets = probs[..., 1:], targets[..., 1:]
  axes = spatial_axes(logits)
  volume = tf.reduce_sum(targets * mask, axis=axes)
  weights = tf.where(volume > 0, 1.0 / tf.maximum(volume, 1.0)**2, 0.0)
  tp = tf.reduce_sum(probs * targets * mask, axis=axes)
  total = tf.reduce_sum((probs + targets) * mask, axis=axes)
  numerator = 2.0 * tf.reduce_sum(weights * tp, axis=-1)
  denominator = tf.reduce_sum(weights * total, axis=-1)
  return 1.0 - (numerator + smooth) / (denominator + smooth)


# ----------------------------------------------------------------------------
# Voxel-wise losses
# ----------------------------------------------------------------------------


def _softmax_ce(targets, log_p, mask, logits, class_weights):
  """Cross-entropy of log-softmax `log_p`, each voxel's term scaled by its
  true class's weight when given; mean over unmasked voxels: [B]."""
  per_voxel = -tf.reduce_sum(targets * log_p, axis=-1)
  if class_weights is not None:
    per_voxel *= tf.reduce_sum(
        targets * tf.constant(class_weights, tf.float32), axis=-1)
  return _voxel_mean(per_voxel, mask, logits)


def _voxel_mean(per_voxel, mask, logits):
  """Mean over the voxels that are not ignored, per example: [B]."""
  axes = spatial_axes(logits)
  mask = mask[..., 0]
  return tf.reduce_sum(per_voxel * mask, axis=axes) / tf.maximum(
      tf.reduce_sum(mask, axis=axes), 1.0)


def cross_entropy(labels, logits, output_activation='softmax',
                  ignore_label=None, class_weights=None, **unused):
  """Softmax cross-entropy averaged over voxels: [B].

  Works with index and one-hot labels. With `class_weights`, each voxel's
  term is scaled by its true class's weight (weighted_cross_entropy).
  """
  if output_activation == 'sigmoid':
    return bce(labels, logits, ignore_label=ignore_label)
  logits = tf.cast(logits, tf.float32)
  _, targets, mask = prepare(labels, logits, 'softmax', ignore_label)
  return _softmax_ce(targets, tf.nn.log_softmax(logits), mask, logits,
                     class_weights)


def weighted_cross_entropy(labels, logits, class_weights=None, **options):
  """Cross-entropy with per-class weights (loss_options.class_weights)."""
  if class_weights is None:
    raise ConfigError('loss_options.class_weights: required by '
                      'weighted_cross_entropy')
  return cross_entropy(labels, logits, class_weights=class_weights, **options)


def bce(labels, logits, ignore_label=None, class_weights=None, **unused):
  """Binary cross-entropy per channel (multi-label), mean over voxels and
  channels: [B]."""
  logits = tf.cast(logits, tf.float32)
  _, targets, mask = prepare(labels, logits, 'sigmoid', ignore_label)
  per_channel = tf.nn.sigmoid_cross_entropy_with_logits(targets, logits)
  if class_weights is not None:
    per_channel *= tf.constant(class_weights, tf.float32)
  return _voxel_mean(tf.reduce_mean(per_channel, axis=-1), mask, logits)


def focal(labels, logits, output_activation='softmax', ignore_label=None,
          focal_alpha=0.25, focal_gamma=2.0, **unused):
  """Focal loss (Lin et al. 2017), mean over voxels: [B].

  softmax: -alpha (1 - p_t)^gamma log p_t over the true class, with alpha
  applied to foreground classes and (1 - alpha) to background.
  sigmoid: the binary form per channel, alpha for positives.
  """
  logits = tf.cast(logits, tf.float32)
  probs, targets, mask = prepare(labels, logits, output_activation,
                                 ignore_label)
  if output_activation == 'sigmoid':
    ce = tf.nn.sigmoid_cross_entropy_with_logits(targets, logits)
    p_t = targets * probs + (1 - targets) * (1 - probs)
    alpha = targets * focal_alpha + (1 - targets) * (1 - focal_alpha)
    per_voxel = tf.reduce_mean(alpha * (1 - p_t)**focal_gamma * ce, axis=-1)
  else:
    log_p = tf.nn.log_softmax(logits)
    p_t = tf.reduce_sum(targets * probs, axis=-1)
    log_p_t = tf.reduce_sum(targets * log_p, axis=-1)
    alpha = tf.where(targets[..., 0] > 0.5, 1.0 - focal_alpha, focal_alpha)
    per_voxel = -alpha * (1.0 - p_t)**focal_gamma * log_p_t
  return _voxel_mean(per_voxel, mask, logits)


# ----------------------------------------------------------------------------
# UNet 3+'s hybrid loss
# ----------------------------------------------------------------------------


def hybrid(labels, logits, output_activation='softmax', ignore_label=None,
           focal_alpha=0.25, focal_gamma=2.0, smooth=1e-5, **unused):
  """UNet 3+'s hybrid loss: focal + (1 - MS-SSIM) + IoU loss, per example."""
  probs, targets, mask = prepare(labels, logits, output_activation,
                                 ignore_label)
  focal_term = focal(labels, logits, output_activation, ignore_label,
                     focal_alpha, focal_gamma)
  ssim = tf.reduce_mean(ms_ssim_lib.ms_ssim(probs * mask, targets * mask),
                        axis=-1)
  iou_term = jaccard(labels, logits, output_activation, ignore_label, smooth)
  return focal_term + (1.0 - ssim) + iou_term


# ----------------------------------------------------------------------------
# Compound losses and the registry
# ----------------------------------------------------------------------------


def dice_ce(labels, logits, ce_weight=1.0, dice_weight=1.0, **options):
  """nnU-Net's ce_weight * CE + dice_weight * soft dice."""
  if options.get('output_activation', 'softmax') == 'softmax':
    return _softmax_dice_ce(labels, logits, ce_weight, dice_weight, **options)
  return (ce_weight * cross_entropy(labels, logits, **options) +
          dice_weight * dice(labels, logits, **options))


def _softmax_dice_ce(labels, logits, ce_weight, dice_weight,
                     ignore_label=None, smooth=1e-5, include_background=True,
                     batch_dice=False, class_weights=None, **unused):
  """dice_ce for softmax outputs with one log-softmax, one one-hot and one
  mask for both terms (calling cross_entropy and dice computes each twice).
  FP = sum(p) - TP and FN = sum(t) - TP over the unmasked voxels."""
  logits = tf.cast(logits, tf.float32)
  targets, mask = labels_lib.targets_and_mask(labels, logits.shape.rank,
                                   logits.shape[-1], ignore_label)
  log_p = tf.nn.log_softmax(logits)
  ce = _softmax_ce(targets, log_p, mask, logits, class_weights)
  axes = spatial_axes(logits)
  probs = tf.exp(log_p) * mask
  targets = targets * mask
  tp = tf.reduce_sum(probs * targets, axis=axes)
  fp = tf.reduce_sum(probs, axis=axes) - tp
  fn = tf.reduce_sum(targets, axis=axes) - tp
  tp, fp, fn = _over_batch(tp, fp, fn, batch_dice)
  dice_loss = _dice_loss(tp, fp, fn, logits, smooth, include_background,
                         class_weights, batch_dice)
  return ce_weight * ce + dice_weight * dice_loss


def bce_dice(labels, logits, ce_weight=1.0, dice_weight=1.0, **options):
  """Multi-label BCE + sigmoid dice (pytorch-3dunet's BCEDiceLoss)."""
  options['output_activation'] = 'sigmoid'
  return (ce_weight * bce(labels, logits, **options) +
          dice_weight * dice(labels, logits, **options))


def batch_weighted_cross_entropy(labels, logits, ignore_label=None,
                                 class_weights=None, **unused):
  """pytorch-3dunet's WeightedCrossEntropyLoss (Sudre et al. 2017).

  Class weights come from each batch's own softmax and carry no gradient:
  w_c = sum(1 - p_c) / sum(p_c) over every (not ignored) voxel of the
  batch. The loss is the weighted mean sum_v w_y(v) CE(v) / sum_v w_y(v),
  as torch's weighted cross_entropy; `class_weights` (optional) multiply
  w_c. It is a batch-level loss: the value is returned for every example
  so that the mean restores it.
  """
  logits = tf.cast(logits, tf.float32)
  probs, targets, mask = prepare(labels, logits, 'softmax', ignore_label)
  axes = list(range(logits.shape.rank - 1))
  weights = tf.stop_gradient(
      tf.reduce_sum((1.0 - probs) * mask, axis=axes) /
      tf.maximum(tf.reduce_sum(probs * mask, axis=axes), EPSILON))
  if class_weights is not None:
    weights *= tf.constant(class_weights, tf.float32)
  voxel_weights = tf.reduce_sum(targets * weights, axis=-1) * mask[..., 0]
  per_voxel = -tf.reduce_sum(targets * tf.nn.log_softmax(logits), axis=-1)
  loss = tf.reduce_sum(voxel_weights * per_voxel) / tf.maximum(
      tf.reduce_sum(voxel_weights), EPSILON)
  return _per_example(loss, logits)


class LossEntry(NamedTuple):
  """A registered loss: its function, a one-line description (the README
  and docs/config_reference.md show it) and, for an alias, the name it
  stands for."""
  fn: Callable
  description: str
  alias_of: Optional[str] = None


def _alias(name: str, seed: str) -> LossEntry:
  return LossEntry(LOSSES[name].fn, f'alias of `{name}` ({seed})', name)


# `loss` -> the loss. Aliases keep other projects' names working.
LOSSES: dict[str, LossEntry] = {
    'adaptive_dice32': LossEntry(
        adaptive_dice32, 'TF Model Garden adaptive dice over the whole batch, '
        'class weights exp(-dice)'),
    'cross_entropy': LossEntry(
        cross_entropy, 'softmax cross-entropy, mean over voxels (BCE for '
        'sigmoid models)'),
    'weighted_cross_entropy': LossEntry(
        weighted_cross_entropy, 'cross-entropy with fixed '
        '`loss_options.class_weights`'),
    'dice': LossEntry(dice, 'soft dice, mean over classes '
                      '(`include_background`, `batch_dice`, `smooth`)'),
    'generalized_dice': LossEntry(
        generalized_dice, 'generalized dice (Sudre 2017), class weights '
        '1/volume^2 per example'),
    'jaccard': LossEntry(jaccard, 'soft IoU (Jaccard) loss'),
    'iou': LossEntry(jaccard, 'alias of `jaccard`', 'jaccard'),
    'tversky': LossEntry(tversky, 'Tversky loss (`tversky_alpha` weighs '
                         'false positives, `tversky_beta` false negatives)'),
    'focal': LossEntry(focal, 'focal loss (`focal_alpha`, `focal_gamma`)'),
    'dice_ce': LossEntry(dice_ce, 'nnU-Net\'s `ce_weight` * CE + '
                         '`dice_weight` * dice'),
    'bce': LossEntry(bce, 'binary cross-entropy per channel (multi-label)'),
    'bce_dice': LossEntry(bce_dice, 'BCE + sigmoid dice (pytorch-3dunet '
                          'BCEDiceLoss)'),
    'hybrid': LossEntry(hybrid, 'UNet 3+ hybrid: focal + (1 - MS-SSIM) + '
                        'IoU'),
    'wce': LossEntry(batch_weighted_cross_entropy, 'pytorch-3dunet '
                     'WeightedCrossEntropyLoss: class weights sum(1-p)/sum(p) '
                     'from each batch\'s softmax'),
}
LOSSES['ce'] = _alias('cross_entropy', 'pytorch-3dunet CrossEntropyLoss')
LOSSES['gdl'] = _alias('generalized_dice',
                       'pytorch-3dunet GeneralizedDiceLoss')
LOSS_NAMES = tuple(LOSSES)


def canonical_name(name: str) -> str:
  """The registered name an alias stands for (`ce` -> `cross_entropy`)."""
  return LOSSES[name].alias_of or name


def get_loss(name: str) -> Callable:
  if name not in LOSSES:
    raise unknown_name('loss', name, LOSS_NAMES, 'loss')
  return LOSSES[name].fn


def check_loss_config(cfg) -> None:
  """Raises ConfigError (one line naming the key) for loss keys no loss can
  honour; config validation calls it."""
  get_loss(cfg.loss)
  if (canonical_name(cfg.loss) == 'wce' and
      cfg.model.output_activation == 'sigmoid'):
    raise ConfigError("loss: 'wce' is a softmax loss; sigmoid models use "
                      "'bce' or 'bce_dice'")
  lo = cfg.loss_options
  if lo.class_weights is not None and len(lo.class_weights) != cfg.num_classes:
    raise ConfigError(f'loss_options.class_weights: expected {cfg.num_classes} '
                      f'weights (num_classes), got {len(lo.class_weights)}')
  spec = cfg.model.deep_supervision_weights
  if isinstance(spec, str) and spec != 'nnunet':
    deep_supervision_weights(spec, 1)  # raises, naming the key


def deep_supervision_weights(spec, num_heads: int) -> list[float]:
  """Head weights, main head first: None equal, 'nnunet' 1/2^i, or a list.

  Always normalised to sum to 1.
  """
  if spec is None:
    weights = [1.0] * num_heads
  elif spec == 'nnunet':
    weights = [1.0 / 2**i for i in range(num_heads)]
  elif isinstance(spec, str):
    raise ConfigError(f"model.deep_supervision_weights: expected 'nnunet', a "
                      f'list or empty, got {spec!r}')
  else:
    weights = [float(w) for w in spec]
    if len(weights) != num_heads:
      raise ConfigError(f'model.deep_supervision_weights: the model has '
                        f'{num_heads} heads, got {len(weights)} weights')
  total = sum(weights)
  if total <= 0:
    raise ConfigError('model.deep_supervision_weights: must sum to > 0')
  return [w / total for w in weights]


def _resize_labels(labels, logits):
  """Nearest-neighbour labels at a head's resolution, if it differs."""
  label_spatial = labels.shape[1:1 + logits.shape.rank - 2]
  if list(label_spatial) == list(logits.shape[1:-1]):
    return labels
  factors = [l // h for l, h in zip(label_spatial, logits.shape[1:-1])]
  slices = [slice(None)] + [slice(f // 2, None, f) for f in factors]
  return labels[tuple(slices)]


def presence_targets(labels, num_classes: int, ignore_label=None):
  """[B, 2] one-hot of "any foreground voxel in this example"."""
  if labels.shape.rank >= 2 and labels.dtype.is_floating:
    foreground = tf.reduce_max(labels[..., 1:] if num_classes > 1 else labels,
                               axis=list(range(1, labels.shape.rank)))
  else:
    labels = tf.cast(labels, tf.int32)
    fg = labels > 0
    if ignore_label is not None:
      fg &= labels != ignore_label
    foreground = tf.reduce_max(tf.cast(fg, tf.float32),
                               axis=list(range(1, labels.shape.rank)))
  present = tf.cast(foreground > 0.5, tf.int32)
  return tf.one_hot(present, 2, dtype=tf.float32)


def build_loss_fn(cfg):
  """Returns fn(labels, outputs) -> [B] for the configured loss.

  `outputs` is a logits tensor or the dict of a multi-head model
  (`unet3d.models.heads`): every segmentation head is weighted by
  `model.deep_supervision_weights`, and a CGM head adds its BCE.
  """
  base = get_loss(cfg.loss)
  lo = cfg.loss_options
  options = {
      'output_activation': cfg.model.output_activation,
      'ignore_label': lo.ignore_label,
      'smooth': lo.smooth,
      'include_background': lo.include_background,
      'batch_dice': lo.batch_dice,
      'class_weights': lo.class_weights,
      'focal_alpha': lo.focal_alpha,
      'focal_gamma': lo.focal_gamma,
      'tversky_alpha': lo.tversky_alpha,
      'tversky_beta': lo.tversky_beta,
      'ce_weight': lo.ce_weight,
      'dice_weight': lo.dice_weight,
  }
  if canonical_name(cfg.loss) == 'cross_entropy':
    options['class_weights'] = None  # only weighted_cross_entropy weighs
  spec = cfg.model.deep_supervision_weights
  cgm_weight = cfg.model.cgm_loss_weight

  def loss_fn(labels, outputs):
    if not isinstance(outputs, dict):
      return base(labels, outputs, **options)
    head_logits = heads.all_logits(outputs)
    weights = deep_supervision_weights(spec, len(head_logits))
    total = 0.0
    for weight, head in zip(weights, head_logits):
      total += weight * base(_resize_labels(labels, head), head, **options)
    classification = heads.classification_logits(outputs)
    if classification is not None:
      targets = presence_targets(labels, cfg.num_classes, lo.ignore_label)
      total += cgm_weight * tf.reduce_mean(
          tf.nn.sigmoid_cross_entropy_with_logits(
              targets, tf.cast(classification, tf.float32)), axis=-1)
    return total

  return loss_fn

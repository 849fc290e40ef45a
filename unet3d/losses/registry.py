"""The loss registry: names and aliases, the options each loss declares,
config checks, deep-supervision weights and `build_loss_fn`.

`build_loss_fn(cfg)` takes a `unet3d.config.Config` without importing that
module, which imports this package to validate `loss`.

The option contract: a loss declares the options it reads as parameters
after (labels, logits); `build_loss_fn` passes it exactly those, taken from
`cfg.loss_options` (and `model.output_activation`); a direct call naming
another option fails in one line (`common.declares_options`); a
`loss_options` key changed from its default that the chosen loss does not
read is named in a warning, once.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Callable, NamedTuple, Optional

import tensorflow as tf

from unet3d.errors import ConfigError, unknown_name
from unet3d.losses import compound, overlap, voxelwise
from unet3d.losses.common import options_of
from unet3d.models import heads

_log = logging.getLogger('unet3d')
# (loss, option) pairs already named by `warn_unused_options`.
_warned: set[tuple[str, str]] = set()


class LossEntry(NamedTuple):
  """A registered loss: its function, a one-line description
  (docs/config_reference.md shows it), for an alias the name it stands
  for, and the options the function declares."""
  fn: Callable
  description: str
  alias_of: Optional[str] = None
  options: tuple[str, ...] = ()


def _entry(fn: Callable, description: str,
           alias_of: Optional[str] = None) -> LossEntry:
  """Reads the function's options from its signature, once."""
  return LossEntry(fn, description, alias_of, options_of(fn))


def _alias(name: str, seed: str) -> LossEntry:
  return _entry(LOSSES[name].fn, f'alias of `{name}` ({seed})', name)


# `loss` -> the loss. Aliases keep other projects' names working.
LOSSES: dict[str, LossEntry] = {
    'adaptive_dice32': _entry(
        overlap.adaptive_dice32, 'TF Model Garden adaptive dice over the '
        'whole batch, class weights exp(-dice)'),
    'cross_entropy': _entry(
        voxelwise.cross_entropy, 'softmax cross-entropy, mean over '
        'voxels (BCE for sigmoid models)'),
    'weighted_cross_entropy': _entry(
        voxelwise.weighted_cross_entropy, 'cross-entropy with fixed '
        '`loss_options.class_weights`'),
    'dice': _entry(overlap.dice, 'soft dice, mean over classes '
                   '(`include_background`, `batch_dice`, `smooth`)'),
    'generalized_dice': _entry(
        overlap.generalized_dice, 'generalized dice (Sudre 2017), class '
        'weights 1/volume^2 per example'),
    'jaccard': _entry(overlap.jaccard, 'soft IoU (Jaccard) loss'),
    'iou': _entry(overlap.jaccard, 'alias of `jaccard`', 'jaccard'),
    'tversky': _entry(overlap.tversky, 'Tversky loss (`tversky_alpha` '
                      'weighs false positives, `tversky_beta` false '
                      'negatives)'),
    'focal': _entry(voxelwise.focal, 'focal loss (`focal_alpha`, '
                    '`focal_gamma`)'),
    'dice_ce': _entry(compound.dice_ce, 'nnU-Net\'s `ce_weight` * CE + '
                      '`dice_weight` * dice'),
    'bce': _entry(voxelwise.bce, 'binary cross-entropy per channel '
                  '(multi-label)'),
    'bce_dice': _entry(compound.bce_dice, 'BCE + sigmoid dice '
                       '(pytorch-3dunet BCEDiceLoss)'),
    'hybrid': _entry(compound.hybrid, 'UNet 3+ hybrid: focal + (1 - '
                     'MS-SSIM) + IoU'),
    'wce': _entry(voxelwise.batch_weighted_cross_entropy,
                  'pytorch-3dunet WeightedCrossEntropyLoss: class weights '
                  'sum(1-p)/sum(p) from each batch\'s softmax'),
}
LOSSES['ce'] = _alias('cross_entropy', 'pytorch-3dunet CrossEntropyLoss')
LOSSES['gdl'] = _alias('generalized_dice',
                       'pytorch-3dunet GeneralizedDiceLoss')
# pytorch-3dunet's own `loss.name`s. Its DiceLoss is soft dice averaged
# over every channel (background too), normalised by sigmoid by default:
# here the model's output_activation normalises.
for _seed, _name in (('GeneralizedDiceLoss', 'generalized_dice'),
                     ('DiceLoss', 'dice'), ('BCEDiceLoss', 'bce_dice'),
                     ('CrossEntropyLoss', 'cross_entropy'),
                     ('WeightedCrossEntropyLoss', 'wce'),
                     ('BCEWithLogitsLoss', 'bce')):
  LOSSES[_seed] = _alias(_name, f'pytorch-3dunet {_seed}')
# Names of other projects' losses that have no counterpart here -> why.
UNSUPPORTED = {
    'PixelWiseCrossEntropyLoss': 'pytorch-3dunet PixelWiseCrossEntropyLoss '
                                 'needs a per-voxel weight map, which the '
                                 'records do not carry; use wce or '
                                 'weighted_cross_entropy',
}
LOSS_NAMES = tuple(LOSSES)


def canonical_name(name: str) -> str:
  """The registered name an alias stands for (`ce` -> `cross_entropy`)."""
  return LOSSES[name].alias_of or name


def get_loss(name: str) -> Callable:
  if name in UNSUPPORTED:
    raise ConfigError(f'loss: {name!r} is not supported: {UNSUPPORTED[name]}')
  if name not in LOSSES:
    raise unknown_name('loss', name, LOSS_NAMES, 'loss')
  return LOSSES[name].fn


def options_for(name: str, options: dict) -> dict:
  """The entries of `options` that loss `name` declares."""
  if name not in LOSSES:
    raise unknown_name('loss', name, LOSS_NAMES, 'loss')
  declared = LOSSES[name].options
  return {k: v for k, v in options.items() if k in declared}


def _read_options(cfg) -> tuple[str, ...]:
  """The `loss_options` keys the configured loss reads: the options it
  declares, but for plain cross_entropy not class_weights (only
  weighted_cross_entropy weighs)."""
  declared = LOSSES[cfg.loss].options
  if canonical_name(cfg.loss) == 'cross_entropy':
    return tuple(k for k in declared if k != 'class_weights')
  return declared


def config_options(cfg) -> dict:
  """The keyword options the configured loss is called with: those of its
  declared options that the config holds (`loss_options.*` and
  `model.output_activation`)."""
  lo = cfg.loss_options
  given = {'output_activation': cfg.model.output_activation,
           **{f.name: getattr(lo, f.name) for f in dataclasses.fields(lo)}}
  read = _read_options(cfg) + ('output_activation',)
  return {k: v for k, v in options_for(cfg.loss, given).items() if k in read}


def unused_options(cfg) -> list[str]:
  """`loss_options` keys set away from their defaults that the configured
  loss does not read."""
  lo = cfg.loss_options
  defaults = type(lo)()
  read = _read_options(cfg)
  return [f.name for f in dataclasses.fields(lo)
          if f.name not in read and
          getattr(lo, f.name) != getattr(defaults, f.name)]


def warn_unused_options(cfg) -> None:
  """Names, once per process, each `loss_options` key the loss ignores."""
  for name in unused_options(cfg):
    if (cfg.loss, name) in _warned:
      continue
    _warned.add((cfg.loss, name))
    _log.warning('loss_options.%s: set to %r, but loss %r does not use it',
                 name, getattr(cfg.loss_options, name), cfg.loss)


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
  options = config_options(cfg)
  warn_unused_options(cfg)
  lo = cfg.loss_options
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

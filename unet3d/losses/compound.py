"""Compound losses: weighted sums of the overlap and voxel-wise losses
(nnU-Net's dice_ce, pytorch-3dunet's BCE + dice, UNet 3+'s hybrid).

Shapes: logits [B, *spatial, C]; labels [B, *spatial] indices or
[B, *spatial, C] one-hot / multi-hot. Each loss returns float32 [B].
"""

from __future__ import annotations

import tensorflow as tf

from unet3d import labels as labels_lib
from unet3d import ms_ssim as ms_ssim_lib
from unet3d.losses.common import declares_options, prepare, spatial_axes
from unet3d.losses.voxelwise import bce, cross_entropy, focal, softmax_ce
from unet3d.losses.overlap import dice, dice_from_sums, jaccard, over_batch


@declares_options
def dice_ce(labels, logits, output_activation='softmax', ignore_label=None,
            smooth=1e-5, include_background=True, batch_dice=False,
            class_weights=None, ce_weight=1.0, dice_weight=1.0):
  """nnU-Net's ce_weight * CE + dice_weight * soft dice."""
  dice_options = dict(ignore_label=ignore_label, smooth=smooth,
                      include_background=include_background,
                      batch_dice=batch_dice, class_weights=class_weights)
  if output_activation == 'softmax':
    return _softmax_dice_ce(labels, logits, ce_weight, dice_weight,
                            **dice_options)
  return (ce_weight * cross_entropy(labels, logits, output_activation,
                                    ignore_label, class_weights) +
          dice_weight * dice(labels, logits, output_activation,
                             **dice_options))


def _softmax_dice_ce(labels, logits, ce_weight, dice_weight,
                     ignore_label=None, smooth=1e-5, include_background=True,
                     batch_dice=False, class_weights=None):
  """dice_ce for softmax outputs with one log-softmax, one one-hot and one
  mask for both terms (calling cross_entropy and dice computes each twice).
  FP = sum(p) - TP and FN = sum(t) - TP over the unmasked voxels."""
  logits = tf.cast(logits, tf.float32)
  targets, mask = labels_lib.targets_and_mask(labels, logits.shape.rank,
                                   logits.shape[-1], ignore_label)
  log_p = tf.nn.log_softmax(logits)
  ce = softmax_ce(targets, log_p, mask, logits, class_weights)
  axes = spatial_axes(logits)
  probs = tf.exp(log_p) * mask
  targets = targets * mask
  tp = tf.reduce_sum(probs * targets, axis=axes)
  fp = tf.reduce_sum(probs, axis=axes) - tp
  fn = tf.reduce_sum(targets, axis=axes) - tp
  tp, fp, fn = over_batch(tp, fp, fn, batch_dice)
  dice_loss = dice_from_sums(tp, fp, fn, logits, smooth, include_background,
                             class_weights, batch_dice)
  return ce_weight * ce + dice_weight * dice_loss


@declares_options
def bce_dice(labels, logits, ignore_label=None, smooth=1e-5,
             include_background=True, batch_dice=False, class_weights=None,
             ce_weight=1.0, dice_weight=1.0):
  """Multi-label BCE + sigmoid dice (pytorch-3dunet's BCEDiceLoss)."""
  return (ce_weight * bce(labels, logits, ignore_label, class_weights) +
          dice_weight * dice(labels, logits, 'sigmoid', ignore_label, smooth,
                             include_background, batch_dice, class_weights))


@declares_options
def hybrid(labels, logits, output_activation='softmax', ignore_label=None,
           focal_alpha=0.25, focal_gamma=2.0, smooth=1e-5):
  """UNet 3+'s hybrid loss: focal + (1 - MS-SSIM) + IoU loss, per example."""
  probs, targets, mask = prepare(labels, logits, output_activation,
                                 ignore_label)
  focal_term = focal(labels, logits, output_activation, ignore_label,
                     focal_alpha, focal_gamma)
  ssim = tf.reduce_mean(ms_ssim_lib.ms_ssim(probs * mask, targets * mask),
                        axis=-1)
  iou_term = jaccard(labels, logits, output_activation, ignore_label, smooth)
  return focal_term + (1.0 - ssim) + iou_term

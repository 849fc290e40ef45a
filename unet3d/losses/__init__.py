"""Segmentation losses: pure functions of (labels, logits) -> per-example loss.

Shapes: logits [B, *spatial, C] (any float dtype; every loss computes in
float32). labels are class indices [B, *spatial] or one-hot / multi-hot
[B, *spatial, C]; the rank tells which. Each loss returns float32 [B], so the
training loop's `tf.nn.compute_average_loss(..., global_batch_size)` scales
it correctly under any tf.distribute strategy.

`output_activation` turns logits into probabilities: 'softmax' for exclusive
classes, 'sigmoid' for multi-label targets (e.g. BraTS regions).

Voxels whose index label equals `ignore_label` are left out of every loss.

  common.py         shared pieces and the declared-options check
  overlap.py        dice, jaccard, tversky, generalized and adaptive dice
  voxelwise.py      cross-entropy (fixed or per-batch weights), BCE, focal
  compound.py       dice_ce, bce_dice, UNet 3+'s hybrid
  registry.py       LOSSES (names, aliases, options), check_loss_config,
                    deep-supervision weights, build_loss_fn

Each loss takes exactly the options it declares; `build_loss_fn` passes
those from `cfg.loss_options` (see `registry`).
"""

from unet3d.losses.common import EPSILON, prepare, spatial_axes
from unet3d.losses.compound import bce_dice, dice_ce, hybrid
from unet3d.losses.overlap import (adaptive_dice32, dice, generalized_dice,
                                   jaccard, tversky)
from unet3d.losses.registry import (LOSS_NAMES, LOSSES, LossEntry,
                                    build_loss_fn, canonical_name,
                                    check_loss_config, config_options,
                                    deep_supervision_weights, get_loss,
                                    options_for, presence_targets,
                                    unused_options)
from unet3d.losses.voxelwise import (batch_weighted_cross_entropy, bce,
                                     cross_entropy, focal,
                                     weighted_cross_entropy)

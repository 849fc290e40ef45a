"""How every conv unit of a model is built: `BlockSpec` and the choices it
holds (normalization, activation, down-sampling, `model.layer_order`).

`model.layer_order` (pytorch-3dunet's string, e.g. 'gcr', 'crg', 'cbr',
'cr') reorders conv (c), norm (g group, b batch, i instance) and activation
(r relu, l leaky relu, e elu) inside each conv layer, and picks the norm and
activation; a norm before the conv normalises its input channels.
"""

from __future__ import annotations

import dataclasses
from typing import Optional

from unet3d.errors import ConfigError

NORMALIZATIONS = ('batch', 'instance', 'group', 'none')
ACTIVATIONS = ('relu', 'leaky_relu', 'elu', 'prelu')
DOWNSAMPLINGS = ('maxpool', 'strided_conv')
# pytorch-3dunet's layer_order letters -> (role, our name).
LAYER_ORDER_LETTERS = {
    'c': ('conv', 'conv'),
    'g': ('norm', 'group'), 'b': ('norm', 'batch'), 'i': ('norm', 'instance'),
    'r': ('act', 'relu'), 'l': ('act', 'leaky_relu'), 'e': ('act', 'elu'),
}
# The order of the default unit: conv, norm, activation.
DEFAULT_ORDER = 'cna'


def parse_layer_order(text: str) -> tuple[str, str, Optional[str]]:
  """'gcr' -> ('nca', 'group', 'relu'): the generic order (c conv, n norm,
  a activation), the normalization ('none' without one) and the activation
  (None without one). Raises ConfigError naming model.layer_order."""
  key = 'model.layer_order'
  letters = ''.join(sorted(LAYER_ORDER_LETTERS))
  bad = [ch for ch in text if ch not in LAYER_ORDER_LETTERS]
  if bad or not text:
    raise ConfigError(f'{key}: {text!r} may only use the letters {letters} '
                      '(c conv; g/b/i group/batch/instance norm; r/l/e '
                      'relu/leaky relu/elu), e.g. gcr, crg, cbr, cr')
  roles = [LAYER_ORDER_LETTERS[ch] for ch in text]
  counts = {role: sum(r == role for r, _ in roles)
            for role in ('conv', 'norm', 'act')}
  if counts['conv'] != 1 or counts['norm'] > 1 or counts['act'] > 1:
    raise ConfigError(f'{key}: {text!r} needs exactly one c and at most one '
                      'norm and one activation letter')
  if roles[0][0] == 'act':
    raise ConfigError(f'{key}: {text!r} cannot start with an activation')
  order = ''.join({'conv': 'c', 'norm': 'n', 'act': 'a'}[r] for r, _ in roles)
  norm_name = next((n for r, n in roles if r == 'norm'), 'none')
  act_name = next((n for r, n in roles if r == 'act'), None)
  return order, norm_name, act_name


@dataclasses.dataclass(frozen=True)
class BlockSpec:
  """How every conv unit of a model is built."""
  rank: int = 3
  normalization: str = 'batch'
  num_groups: int = 8
  activation: str = 'relu'
  leaky_relu_alpha: float = 0.01
  residual: bool = False
  recompute: bool = False
  # Batch norm over the global batch (an all-reduce across replicas).
  sync_batch_norm: bool = False
  # Generic order of each conv layer: c conv, n norm, a activation (no 'n':
  # no norm; no 'a': no activation).
  order: str = DEFAULT_ORDER


def block_spec(cfg) -> BlockSpec:
  """The BlockSpec of a validated config; `model.normalization` None follows
  the flat `use_batch_norm` ('batch' or 'none'). `model.layer_order`, when
  set, gives the order, the norm and the activation instead.
  `model.sync_batch_norm` None is off (the trainer decides it for its
  strategy before building)."""
  m = cfg.model
  norm_name = m.normalization
  if norm_name is None:
    norm_name = 'batch' if cfg.use_batch_norm else 'none'
  act_name, order = m.activation, DEFAULT_ORDER
  if m.layer_order:
    order, norm_name, act_name = parse_layer_order(m.layer_order)
    act_name = act_name or m.activation  # unused when order has no 'a'
  return BlockSpec(rank=m.spatial_dims, normalization=norm_name,
                   num_groups=m.num_groups, activation=act_name,
                   leaky_relu_alpha=m.leaky_relu_alpha, residual=m.residual,
                   recompute=m.recompute_grad, order=order,
                   sync_batch_norm=bool(m.sync_batch_norm))

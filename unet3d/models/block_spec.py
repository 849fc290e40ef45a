"""How every conv unit of a model is built: `BlockSpec` and the choices it
holds (normalization, activation, down-sampling, `model.layer_order`).

`model.layer_order` (pytorch-3dunet's string, e.g. 'gcr', 'crg', 'cbr',
'cbrd', 'cr') reorders conv (c), norm (g group, b batch, i instance),
activation (r relu, l leaky relu, e elu) and dropout (d dropout, D channel
dropout, at `model.layer_dropout`) inside each conv layer, and picks the
norm and activation; a norm before the conv normalises its input channels.
The strings pytorch-3dunet's `create_conv` accepts (its letters c g b r l
e d D, with a c, not starting with r/l/e) all parse, plus 'i'; a letter
repeated (which pytorch-3dunet collapses by module name) is an error.
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
    'd': ('drop', 'dropout'), 'D': ('drop', 'spatial_dropout'),
}
# Role -> the letter of the generic order (dropout keeps its own letter).
_GENERIC = {'conv': 'c', 'norm': 'n', 'act': 'a'}
# The order of the default unit: conv, norm, activation.
DEFAULT_ORDER = 'cna'


def parse_layer_order(text: str) -> tuple[str, str, Optional[str]]:
  """'gcr' -> ('nca', 'group', 'relu'): the generic order (c conv, n norm,
  a activation, d dropout, D channel dropout), the normalization ('none'
  without one) and the activation (None without one). Raises ConfigError
  naming model.layer_order."""
  key = 'model.layer_order'
  letters = ''.join(sorted(LAYER_ORDER_LETTERS))
  bad = [ch for ch in text if ch not in LAYER_ORDER_LETTERS]
  if bad or not text:
    raise ConfigError(f'{key}: {text!r} may only use the letters {letters} '
                      '(c conv; g/b/i group/batch/instance norm; r/l/e '
                      'relu/leaky relu/elu; d/D dropout/channel dropout), '
                      'e.g. gcr, crg, cbr, cbrd')
  roles = [LAYER_ORDER_LETTERS[ch] for ch in text]
  counts = {role: sum(r == role for r, _ in roles)
            for role in ('conv', 'norm', 'act', 'drop')}
  if counts['conv'] != 1 or max(counts.values()) > 1:
    raise ConfigError(f'{key}: {text!r} needs exactly one c and at most one '
                      'norm, one activation and one dropout letter')
  if roles[0][0] == 'act':
    raise ConfigError(f'{key}: {text!r} cannot start with an activation')
  order = ''.join(_GENERIC.get(r, ch) for ch, (r, _) in zip(text, roles))
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
  # Generic order of each conv layer: c conv, n norm, a activation, d
  # dropout, D channel dropout (no 'n': no norm; no 'a': no activation).
  order: str = DEFAULT_ORDER
  # Rate of the order's d / D dropout.
  dropout_rate: float = 0.1


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
  if not 0.0 <= m.layer_dropout < 1.0:
    raise ConfigError(f'model.layer_dropout: must be in [0, 1), got '
                      f'{m.layer_dropout}')
  if m.recompute_grad and ('d' in order or 'D' in order):
    raise ConfigError(f'model.layer_order: {m.layer_order!r} has dropout, '
                      'which model.recompute_grad would redraw; drop one')
  return BlockSpec(rank=m.spatial_dims, normalization=norm_name,
                   num_groups=m.num_groups, activation=act_name,
                   leaky_relu_alpha=m.leaky_relu_alpha, residual=m.residual,
                   recompute=m.recompute_grad, order=order,
                   dropout_rate=m.layer_dropout,
                   sync_batch_norm=bool(m.sync_batch_norm))

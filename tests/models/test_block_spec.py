"""Tests for unet3d/models/block_spec.py: pytorch-3dunet's `layer_order`."""

import itertools

import numpy as np
import pytest

from unet3d import config
from unet3d import models
from unet3d.errors import ConfigError
from unet3d.models import block_spec


def _pytorch3dunet_accepts(text):
  """pytorch-3dunet's `create_conv` rules: its letters, a c, no leading
  non-linearity (letters repeated there collapse by module name, so the
  generated strings use each letter at most once)."""
  return (set(text) <= set('bgrlecdD') and 'c' in text and
          text[0] not in 'rle')


def _accepted_strings():
  """Every order of c with at most one norm (g, b), one activation (r, l,
  e) and one dropout (d, D) that pytorch-3dunet accepts."""
  found = set()
  for norm, act, drop in itertools.product(['', 'g', 'b'], ['', 'r', 'l', 'e'],
                                           ['', 'd', 'D']):
    for perm in itertools.permutations('c' + norm + act + drop):
      text = ''.join(perm)
      if _pytorch3dunet_accepts(text):
        found.add(text)
  return sorted(found)


ACCEPTED = _accepted_strings()
# Each letter in each position, pytorch-3dunet's defaults (gcr, cge) and the
# orders its configs and docs use.
BUILT = ['gcr', 'crg', 'cbr', 'cbrd', 'cbrD', 'gcrd', 'dcr', 'cr', 'c', 'ce',
         'cl', 'bcl', 'cge', 'gce', 'cgrD', 'Dbcr']


def test_every_string_pytorch3dunet_accepts_parses():
  assert len(ACCEPTED) == 300
  for text in ACCEPTED:
    order, _, _ = block_spec.parse_layer_order(text)
    assert len(order) == len(text), text


@pytest.mark.parametrize('text', BUILT)
def test_pytorch3dunet_layer_orders_build_and_run(text):
  assert text in ACCEPTED
  cfg = config.merge(config.Config(), {
      'num_classes': 2, 'num_base_filters': 4, 'depth': 2,
      'input_image_size': [8, 8, 8],
      'model': {'layer_order': text, 'num_groups': 2}})
  config.validate(cfg)
  model = models.build_model(cfg)
  out = model(np.ones([1, 8, 8, 8, 1], np.float32), training=False)
  assert tuple(out.shape) == (1, 8, 8, 8, 2)
  kinds = {type(l).__name__ for l in model.layers}
  if 'd' in text:
    assert 'Dropout' in kinds
  if 'D' in text:
    assert 'SpatialDropout3D' in kinds


@pytest.mark.parametrize('text', ['rcg', 'lc', 'gr', 'cgg', 'cdd', 'crr',
                                  'cxr', 'cbgr', 'cc', ''])
def test_a_rejected_layer_order_is_one_line_naming_the_key(text):
  with pytest.raises(ConfigError, match='^model.layer_order: ') as error:
    block_spec.parse_layer_order(text)
  assert '\n' not in str(error.value)


def test_layer_dropout_rate_reaches_the_layers():
  cfg = config.merge(config.Config(), {
      'num_classes': 2, 'num_base_filters': 4, 'depth': 2,
      'input_image_size': [8, 8, 8],
      'model': {'layer_order': 'cbrd', 'layer_dropout': 0.25}})
  config.validate(cfg)
  assert block_spec.block_spec(cfg).order == 'cnad'
  rates = {l.rate for l in models.build_model(cfg).layers
           if type(l).__name__ == 'Dropout'}
  assert rates == {0.25}

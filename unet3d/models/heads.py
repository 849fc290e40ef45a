"""The output contract of every model: one logits tensor, or a dict of heads.

A single-head model returns float32 logits [B, *spatial, num_classes].
A multi-head model returns a dict:
  LOGITS:           the main full-resolution head
  DEEP_SUPERVISION: the other heads, up-sampled to full resolution, finest
                    first
  CLASSIFICATION:   [B, 2] CGM logits (index 1: organ present), CGM only
Builders produce it, the loss builder trains every head, and inference uses
`inference_logits` / `probabilities`, so nothing else needs the keys.
"""

from __future__ import annotations

import tensorflow as tf

LOGITS = 'logits'
DEEP_SUPERVISION = 'deep_supervision'
CLASSIFICATION = 'classification'

# softmax: exclusive classes; sigmoid: multi-label (e.g. BraTS regions).
OUTPUT_ACTIVATIONS = ('softmax', 'sigmoid')

# A logit margin that decides softmax and sigmoid outright, yet is finite in
# float16 (max 65504).
_GATE_LOGIT = 1e4


def main_logits(outputs):
  """The full-resolution head's logits of any model output."""
  return outputs[LOGITS] if isinstance(outputs, dict) else outputs


def all_logits(outputs) -> list:
  """Every segmentation head, main head first."""
  if not isinstance(outputs, dict):
    return [outputs]
  return [outputs[LOGITS]] + list(outputs.get(DEEP_SUPERVISION, []))


def classification_logits(outputs):
  """The CGM head's [B, 2] logits, or None."""
  return outputs.get(CLASSIFICATION) if isinstance(outputs, dict) else None


def inference_logits(outputs, output_activation: str = 'softmax'):
  """The main head's logits [B, *spatial, C]; a CGM head gates them.

  Where the CGM argmax says "absent" (index 0), every voxel becomes
  background: with softmax, class 0 gets +1e4 and the others -1e4; with
  sigmoid (multi-label, no background channel) every channel gets -1e4.
  """
  logits = main_logits(outputs)
  classification = classification_logits(outputs)
  if classification is None:
    return logits
  logits = tf.convert_to_tensor(logits)
  present = tf.argmax(classification, axis=-1) > 0
  rank = logits.shape.rank
  present = tf.reshape(present, [-1] + [1] * (rank - 1))
  if output_activation == 'sigmoid':
    absent = tf.fill(tf.shape(logits), tf.cast(-_GATE_LOGIT, logits.dtype))
  else:
    absent = tf.one_hot(tf.zeros(tf.shape(logits)[:-1], tf.int32),
                        logits.shape[-1], on_value=_GATE_LOGIT,
                        off_value=-_GATE_LOGIT, dtype=logits.dtype)
  return tf.where(present, logits, absent)


def probabilities(outputs, output_activation: str = 'softmax'):
  """float32 [B, *spatial, C] softmax or sigmoid of the (gated) main head."""
  logits = tf.cast(inference_logits(outputs, output_activation), tf.float32)
  if output_activation == 'sigmoid':
    return tf.sigmoid(logits)
  return tf.nn.softmax(logits)

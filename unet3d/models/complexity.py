"""Parameter counts and forward FLOPs of a model, from layer shapes.

FLOPs count a multiply-add as 2 and are per sample (batch 1), inference mode:
  conv            2 * prod(kernel) * Cin / groups * Cout * output voxels
  conv transpose  2 * prod(kernel) * Cin * Cout * input voxels
  dense           2 * Cin * Cout
  normalisation   2 * elements (the folded scale and shift)
  activation, add 1 * output elements (add: per extra input)
  max-pool        prod(pool) * output elements; global pool: input elements
  linear upsample 3 * output elements per up-sampled axis (one lerp per
                  axis with factor > 1)
Biases, concatenation, nearest up-sampling and dropout count 0.
"""

from __future__ import annotations

import math

import keras

from unet3d.models import blocks

_CONV = (keras.layers.Conv1D, keras.layers.Conv2D, keras.layers.Conv3D)
_CONV_T = (keras.layers.Conv1DTranspose, keras.layers.Conv2DTranspose,
           keras.layers.Conv3DTranspose)
_NORM = (keras.layers.BatchNormalization, keras.layers.GroupNormalization,
         keras.layers.LayerNormalization)
_ACT = (keras.layers.ReLU, keras.layers.LeakyReLU, keras.layers.ELU,
        keras.layers.PReLU, keras.layers.Activation, keras.layers.Softmax)
_POOL = (keras.layers.MaxPool1D, keras.layers.MaxPool2D, keras.layers.MaxPool3D,
         keras.layers.AveragePooling1D, keras.layers.AveragePooling2D,
         keras.layers.AveragePooling3D)
_GLOBAL_POOL = (keras.layers.GlobalMaxPool1D, keras.layers.GlobalMaxPool2D,
                keras.layers.GlobalMaxPool3D,
                keras.layers.GlobalAveragePooling1D,
                keras.layers.GlobalAveragePooling2D,
                keras.layers.GlobalAveragePooling3D)


def _numel(shape) -> int:
  return math.prod(int(s) for s in shape[1:])


def layer_flops(layer, input_shapes: list, output_shape) -> int:
  """Forward FLOPs of one leaf layer for one sample (see module doc)."""
  out = _numel(output_shape)
  if isinstance(layer, _CONV):
    cin = int(input_shapes[0][-1])
    return (2 * math.prod(layer.kernel_size) * cin // layer.groups *
            int(output_shape[-1]) * (out // int(output_shape[-1])))
  if isinstance(layer, _CONV_T):
    cin = int(input_shapes[0][-1])
    in_voxels = _numel(input_shapes[0]) // cin
    return (2 * math.prod(layer.kernel_size) * cin * int(output_shape[-1]) *
            in_voxels)
  if isinstance(layer, keras.layers.Dense):
    return 2 * int(input_shapes[0][-1]) * out
  if isinstance(layer, _NORM):
    return 2 * out
  if isinstance(layer, _ACT):
    return out
  if isinstance(layer, keras.layers.Add):
    return out * (len(input_shapes) - 1)
  if isinstance(layer, _POOL):
    return math.prod(layer.pool_size) * out
  if isinstance(layer, _GLOBAL_POOL):
    return _numel(input_shapes[0])
  if isinstance(layer, blocks.LinearUpsample):
    factors = layer.axis_factors(len(output_shape) - 2)
    return 3 * sum(f > 1 for f in factors) * out
  return 0


def _shapes(tensors) -> list:
  if not isinstance(tensors, (list, tuple)):
    tensors = [tensors]
  return [tuple(t.shape) for t in tensors]


def model_summary(model: keras.Model, input_shape) -> dict:
  """Parameters and forward GFLOPs of `model` on one [*spatial, C] input.

  Args:
    model: a functional keras.Model (any spatial size).
    input_shape: [*spatial, C] of one sample, e.g. [128, 128, 128, 1].
  Returns:
    {'name', 'input_shape', 'trainable_params', 'non_trainable_params',
     'total_params', 'gflops', 'layers': [{'name', 'type', 'output_shape',
     'params', 'gflops'}]}.
  """
  input_shape = [int(s) for s in input_shape]
  # A clone on a fixed-size input gives every layer concrete shapes.
  fixed = keras.models.clone_model(
      model, input_tensors=keras.Input(batch_shape=[1] + input_shape))
  rows, total = [], 0
  for layer in fixed.layers:
    if isinstance(layer, keras.layers.InputLayer):
      continue
    in_shapes = _shapes(layer.input)
    out_shape = _shapes(layer.output)[0]
    if isinstance(layer, blocks.RecomputeUnit):
      flops = sum(layer_flops(leaf, i, o)
                  for leaf, i, o in layer.leaf_layers(in_shapes[0]))
    else:
      flops = layer_flops(layer, in_shapes, out_shape)
    total += flops
    rows.append({'name': layer.name, 'type': type(layer).__name__,
                 'output_shape': list(out_shape[1:]),
                 'params': layer.count_params(), 'gflops': flops / 1e9})
  trainable = sum(math.prod(v.shape) for v in model.trainable_weights)
  non_trainable = sum(math.prod(v.shape) for v in model.non_trainable_weights)
  return {'name': model.name, 'input_shape': input_shape,
          'trainable_params': int(trainable),
          'non_trainable_params': int(non_trainable),
          'total_params': int(trainable + non_trainable),
          'gflops': total / 1e9, 'layers': rows}


def format_summary(info: dict) -> str:
  """A fixed-width table of `model_summary` output with totals."""
  lines = [f"model {info['name']} on input {info['input_shape']}",
           f"{'layer':<28s} {'type':<22s} {'output':<22s} {'params':>10s} "
           f"{'GFLOPs':>10s}"]
  for row in info.get('layers', []):
    lines.append(f"{row['name']:<28.28s} {row['type']:<22.22s} "
                 f"{str(row['output_shape']):<22.22s} {row['params']:>10,d} "
                 f"{row['gflops']:>10.4f}")
  lines.append(f"trainable parameters:     {info['trainable_params']:,d}")
  lines.append(f"non-trainable parameters: {info['non_trainable_params']:,d}")
  lines.append(f"total parameters:         {info['total_params']:,d}")
  lines.append(f"forward GFLOPs / sample:  {info['gflops']:.3f}")
  return '\n'.join(lines)

"""Rank-generic building blocks: conv + norm + activation units, resampling.

Every function takes `rank` (2 or 3) and works on channels-last tensors
[B, *spatial, C]. Sizes, strides and factors (`Size`) are one int for every
spatial axis or a tuple with one per axis (anisotropic levels). A conv
"unit" is one or two conv + norm + act layers, the pytorch-3dunet
"cr"/"cbr" idea in function form:

  single unit:   convk -> norm -> act
  double unit:   convk -> norm -> act -> convk -> norm -> act
  residual unit: convk -> norm -> act -> convk -> norm, + shortcut -> act
                 (shortcut: identity, or conv1 + norm when shape changes)

k is the level's kernel size (3 by default).

`model.layer_order` (pytorch-3dunet's string, e.g. 'gcr', 'crg', 'cbr',
'cr') reorders conv (c), norm (g group, b batch, i instance) and activation
(r relu, l leaky relu, e elu) inside each conv layer, and picks the norm and
activation; a norm before the conv normalises its input channels. In a
residual unit the last activation still comes after the addition.

Units are composed from plain Keras layers, so a model stays an ordinary
functional graph. With `recompute` the same layers live inside a
`RecomputeUnit` layer whose forward pass is re-run during back-propagation
(tf.recompute_grad): activations inside the unit are not kept.
"""

from __future__ import annotations

import dataclasses
from typing import Optional, Sequence, Union

import keras
import tensorflow as tf

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

# One int for every spatial axis, or one int per spatial axis.
Size = Union[int, Sequence[int]]


def compact_size(size: Size) -> Union[int, tuple[int, ...]]:
  """An int, or a tuple of per-axis ints that differ: a uniform size keeps
  the int spelling that saved layer configs have always had."""
  if isinstance(size, int):
    return size
  size = tuple(int(v) for v in size)
  return size[0] if len(set(size)) == 1 else size


def axis_sizes(size: Size, rank: int) -> tuple[int, ...]:
  """The per-axis ints of `size` for `rank` spatial axes."""
  if isinstance(size, int):
    return (size,) * rank
  if len(size) != rank:
    raise ValueError(f'{tuple(size)}: expected {rank} sizes, one per '
                     'spatial axis')
  return tuple(size)


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


# ----------------------------------------------------------------------------
# Rank-generic layer constructors
# ----------------------------------------------------------------------------


def conv(rank: int, filters: int, kernel_size: Size, strides: Size = 1,
         name: Optional[str] = None, dtype=None) -> keras.layers.Layer:
  """Conv2D/Conv3D, 'same' padding, with bias (as the Model Garden)."""
  cls = {2: keras.layers.Conv2D, 3: keras.layers.Conv3D}[rank]
  return cls(filters, kernel_size, strides=strides, padding='same', name=name,
             dtype=dtype)


def conv_transpose(rank: int, filters: int, factor: Size = 2,
                   name: Optional[str] = None):
  """Transposed conv with kernel = strides = factor: multiplies each
  spatial size by its axis' factor (2: doubles every size)."""
  cls = {2: keras.layers.Conv2DTranspose, 3: keras.layers.Conv3DTranspose}
  return cls[rank](filters, factor, strides=factor, name=name)


def max_pool(rank: int, size: Size, name: Optional[str] = None):
  """Max-pool with strides = size: divides each spatial size by its axis'
  factor."""
  cls = {2: keras.layers.MaxPool2D, 3: keras.layers.MaxPool3D}[rank]
  dtype = None
  if (rank == 3 and
      keras.mixed_precision.global_policy().compute_dtype == 'float16' and
      not tf.config.list_physical_devices('GPU')):
    # TF has no float16 MaxPool3D kernel on CPU: pool in float32 there.
    dtype = 'float32'
  return cls(size, name=name, dtype=dtype)


def upsample_nearest(rank: int, size: Size, name: Optional[str] = None):
  """Repeats each voxel `size` times along each axis."""
  cls = {2: keras.layers.UpSampling2D, 3: keras.layers.UpSampling3D}[rank]
  return cls(size, name=name)


def spatial_dropout(rank: int, rate: float, name: Optional[str] = None):
  """Drops whole channels (feature maps), as nnU-Net's Dropout3d."""
  cls = {2: keras.layers.SpatialDropout2D, 3: keras.layers.SpatialDropout3D}
  return cls[rank](rate, name=name)


def global_max_pool(rank: int, name: Optional[str] = None, dtype=None):
  cls = {2: keras.layers.GlobalMaxPool2D, 3: keras.layers.GlobalMaxPool3D}
  return cls[rank](name=name, dtype=dtype)


@keras.saving.register_keras_serializable(package='unet3d')
class FusedBatchNormalization(keras.layers.BatchNormalization):
  """keras.layers.BatchNormalization computed by one FusedBatchNormV3 op.

  Keras 3 expresses batch norm as tf.nn.moments + tf.nn.batch_normalization:
  on a 5D tensor that is ~20 small ops forward and ~17 backward per layer.
  FusedBatchNormV3 does it in one kernel each way, and with oneDNN on a 4D
  NHWC input it runs oneDNN's batch norm; on 5D it falls back to a slower
  generic kernel, so channels-last 5D input [B, D, H, W, C] is viewed as
  [B, D*H, W, C] (the statistics are per channel either way).

  Same weights, checkpoint layout, momentum and epsilon as the base class;
  the moving variance is updated with the biased batch variance, as Keras
  does. Masks, renorm and synchronized BN, other axes and ranks go through
  the base class.
  """

  def call(self, inputs, training=None, mask=None):
    rank = inputs.shape.rank
    if (mask is not None or self.renorm or self.synchronized or
        rank not in (4, 5) or self.axis not in (-1, rank - 1) or
        not self.scale or not self.center):
      return super().call(inputs, training=training, mask=mask)
    x = tf.cast(inputs, tf.float32)
    shape = tf.shape(x)
    if rank == 5:
      x = tf.reshape(x, [shape[0], shape[1] * shape[2], shape[3], shape[4]])
    gamma = tf.cast(self.gamma, tf.float32)
    beta = tf.cast(self.beta, tf.float32)
    if training and self.trainable:
      y, mean, variance, _, _, _ = tf.raw_ops.FusedBatchNormV3(
          x=x, scale=gamma, offset=beta, mean=tf.zeros([0]),
          variance=tf.zeros([0]), epsilon=self.epsilon, data_format='NHWC',
          is_training=True)
      # The op returns the Bessel-corrected variance; Keras averages the
      # biased one.
      n = tf.cast(tf.size(x) // tf.shape(x)[-1], tf.float32)
      variance = variance * ((n - 1.0) / n)
      self.moving_mean.assign(self.moving_mean * self.momentum +
                              mean * (1.0 - self.momentum))
      self.moving_variance.assign(self.moving_variance * self.momentum +
                                  variance * (1.0 - self.momentum))
    else:
      y, _, _, _, _, _ = tf.raw_ops.FusedBatchNormV3(
          x=x, scale=gamma, offset=beta,
          mean=tf.cast(self.moving_mean, tf.float32),
          variance=tf.cast(self.moving_variance, tf.float32),
          epsilon=self.epsilon, data_format='NHWC', is_training=False)
    if rank == 5:
      y = tf.reshape(y, shape)
    return tf.cast(y, self.compute_dtype)


def norm(spec: BlockSpec, channels: int, name: str):
  """The normalisation layer over the channel axis (-1), or None.

  Group norm uses min(num_groups, channels) groups; instance norm is group
  norm with one group per channel. Batch norm with `spec.sync_batch_norm`
  all-reduces its batch statistics across replicas in training (outside a
  multi-replica strategy it is plain batch norm).
  """
  if spec.normalization == 'none':
    return None
  if spec.normalization == 'batch':
    # The Model Garden normalised axis 1 of channels-last data; -1 is right.
    return FusedBatchNormalization(
        axis=-1, synchronized=spec.sync_batch_norm, name=name)
  if spec.normalization == 'instance':
    return keras.layers.GroupNormalization(groups=-1, name=name)
  groups = min(spec.num_groups, channels)
  if channels % groups:
    raise ConfigError(f'model.num_groups: {spec.num_groups} groups do not '
                      f'divide the {channels} channels of layer {name}')
  return keras.layers.GroupNormalization(groups=groups, name=name)


def activation(spec: BlockSpec, name: str) -> keras.layers.Layer:
  if spec.activation == 'relu':
    return keras.layers.ReLU(name=name)
  if spec.activation == 'leaky_relu':
    return keras.layers.LeakyReLU(negative_slope=spec.leaky_relu_alpha,
                                  name=name)
  if spec.activation == 'elu':
    return keras.layers.ELU(name=name)
  # One slope per channel, starting at PyTorch's 0.25.
  return keras.layers.PReLU(
      alpha_initializer=keras.initializers.Constant(0.25),
      shared_axes=list(range(1, spec.rank + 1)), name=name)


# ----------------------------------------------------------------------------
# Conv units
# ----------------------------------------------------------------------------


def _sequence(spec: BlockSpec, num_convs: int) -> list[str]:
  """Layer keys in call order, e.g. ['conv1', 'norm1', 'act1', ...]; in a
  residual unit 'add' comes before the last activation."""
  keys = []
  for i in range(1, num_convs + 1):
    keys += [{'c': 'conv', 'n': 'norm', 'a': 'act'}[ch] + str(i)
             for ch in spec.order]
  if spec.residual and num_convs == 2:
    last_act = f'act{num_convs}'
    if last_act in keys:
      keys.remove(last_act)
      keys += ['add', last_act]
    else:
      keys.append('add')
  return keys


def _unit_layers(spec: BlockSpec, in_channels: int, filters: list[int],
                 strides: Size, name: str, kernel_size: Size = 3) -> dict:
  """Creates the layers of a unit with len(filters) (1 or 2) convs."""
  layers = {}
  norm_first = spec.order.index('n') < spec.order.index('c') if (
      'n' in spec.order) else False
  channels_in = in_channels
  for i, f in enumerate(filters, start=1):
    layers[f'conv{i}'] = conv(spec.rank, f, kernel_size,
                              strides if i == 1 else 1, name=f'{name}_conv{i}')
    if 'n' in spec.order:
      layers[f'norm{i}'] = norm(spec, channels_in if norm_first else f,
                                f'{name}_norm{i}')
    if 'a' in spec.order:
      layers[f'act{i}'] = activation(spec, f'{name}_act{i}')
    channels_in = f
  if spec.residual and len(filters) == 2:
    if in_channels != filters[-1] or compact_size(strides) != 1:
      layers['proj'] = conv(spec.rank, filters[-1], 1, strides,
                            name=f'{name}_proj')
      if 'n' in spec.order:
        layers['proj_norm'] = norm(spec, filters[-1], f'{name}_proj_norm')
    layers['add'] = keras.layers.Add(name=f'{name}_add')
  layers['sequence'] = _sequence(spec, len(filters))
  return layers


def _apply_unit(layers: dict, x, training=None):
  """Runs a unit's layers on a symbolic or eager tensor.

  `training` reaches the norms explicitly: the backward-pass recomputation
  of RecomputeUnit runs outside Keras' call context, where batch norm would
  otherwise fall back to its inference mode.
  """
  shortcut = x
  for key in layers['sequence']:
    if key == 'add':
      if 'proj' in layers:
        shortcut = layers['proj'](shortcut)
        if layers.get('proj_norm') is not None:
          shortcut = layers['proj_norm'](shortcut, training=training)
      x = layers['add']([x, shortcut])
      continue
    layer = layers[key]
    if layer is None:  # normalization 'none'
      continue
    x = layer(x, training=training) if key.startswith('norm') else layer(x)
  return x


@keras.saving.register_keras_serializable(package='unet3d')
class RecomputeUnit(keras.layers.Layer):
  """A conv unit whose activations are recomputed in the backward pass.

  The forward pass runs inside tf.recompute_grad, so only the unit's input
  is kept for back-propagation. Batch-norm moving statistics are updated a
  second time by the recomputation (a small bias of the running averages).
  """

  def __init__(self, spec: dict, in_channels: int, filters: list[int],
               strides: Size = 1, kernel_size: Size = 3, **kwargs):
    super().__init__(**kwargs)
    self.spec = dict(spec)
    self.in_channels = in_channels
    self.filters = list(filters)
    self.strides = compact_size(strides)
    self.kernel_size = compact_size(kernel_size)
    self.unit = _unit_layers(BlockSpec(**self.spec), in_channels,
                             self.filters, self.strides, self.name,
                             self.kernel_size)

  def build(self, input_shape):
    shape = tuple(input_shape)
    for key in self.unit['sequence']:
      layer = self.unit.get(key)
      if layer is None or key == 'add':
        continue
      if not layer.built:
        layer.build(shape)
      shape = layer.compute_output_shape(shape)
    if 'proj' in self.unit:
      self.unit['proj'].build(tuple(input_shape))
      proj_shape = self.unit['proj'].compute_output_shape(tuple(input_shape))
      if self.unit.get('proj_norm') is not None:
        self.unit['proj_norm'].build(proj_shape)
    self.built = True

  def call(self, x, training=None):
    training = bool(training)

    @tf.recompute_grad
    def forward(t):
      return _apply_unit(self.unit, t, training=training)
    return forward(x)

  def compute_output_shape(self, input_shape):
    shape = tuple(input_shape)
    shape = self.unit['conv1'].compute_output_shape(shape)
    return shape[:-1] + (self.filters[-1],)

  def leaf_layers(self, input_shape) -> list:
    """[(layer, [input shapes], output_shape)] of the inner layers."""
    out, shape = [], tuple(input_shape)
    start = shape
    for key in self.unit['sequence']:
      layer = self.unit.get(key)
      if layer is None:
        continue
      if key == 'add':
        if 'proj' in self.unit:
          new = self.unit['proj'].compute_output_shape(start)
          out.append((self.unit['proj'], [start], new))
          if self.unit.get('proj_norm') is not None:
            out.append((self.unit['proj_norm'], [new], new))
        out.append((layer, [shape, shape], shape))
        continue
      new = layer.compute_output_shape(shape)
      out.append((layer, [shape], new))
      shape = new
    return out

  def get_config(self):
    config = super().get_config()
    config.update(spec=self.spec, in_channels=self.in_channels,
                  filters=self.filters, strides=self.strides,
                  kernel_size=self.kernel_size)
    return config


def conv_unit(x, spec: BlockSpec, filters: list[int], name: str,
              strides: Size = 1, kernel_size: Size = 3):
  """One (len(filters) == 1) or two conv + norm + act layers.

  Args:
    x: [B, *spatial, Cin].
    filters: output channels of each conv.
    strides: per-axis stride of the first conv (and of a residual unit's
      projection shortcut); 2: strided-conv down-sampling.
    kernel_size: per-axis kernel of every conv of the unit.
  Returns:
    [B, *spatial / strides, filters[-1]].
  """
  in_channels = x.shape[-1]
  if spec.recompute:
    return RecomputeUnit(dataclasses.asdict(spec), in_channels, filters,
                         strides, kernel_size, name=name)(x)
  return _apply_unit(_unit_layers(spec, in_channels, filters, strides, name,
                                  kernel_size), x)


# ----------------------------------------------------------------------------
# Linear up-sampling
# ----------------------------------------------------------------------------


def _linear_axis(x, axis: int, factor: int):
  """Linear interpolation along `axis` by an integer factor, half-pixel
  centres with edge clamping (tf.image.resize 'bilinear' per axis)."""
  n = tf.shape(x)[axis]
  coords = (tf.cast(tf.range(n * factor), tf.float32) + 0.5) / factor - 0.5
  coords = tf.maximum(coords, 0.0)
  lo = tf.cast(tf.floor(coords), tf.int32)
  hi = tf.minimum(lo + 1, n - 1)
  w = coords - tf.cast(lo, tf.float32)
  shape = [1] * x.shape.rank
  shape[axis] = -1
  w = tf.cast(tf.reshape(w, shape), x.dtype)
  lo_v = tf.gather(x, lo, axis=axis)
  hi_v = tf.gather(x, hi, axis=axis)
  return lo_v + w * (hi_v - lo_v)


@keras.saving.register_keras_serializable(package='unet3d')
class LinearUpsample(keras.layers.Layer):
  """Bi/trilinear up-sampling by integer factors, one per spatial axis or
  one for all.

  [B, *spatial, C] -> [B, *(spatial * factor), C]. Keras has no trilinear
  UpSampling3D; this matches tf.image.resize(method='bilinear') per axis.
  Axes with factor 1 are left as they are.
  """

  def __init__(self, factor: Size, **kwargs):
    super().__init__(**kwargs)
    # An int for a uniform factor: the saved config of every model built
    # before per-axis factors.
    self.factor = compact_size(factor)

  def axis_factors(self, rank: int) -> tuple[int, ...]:
    """The factor of each of `rank` spatial axes."""
    return axis_sizes(self.factor, rank)

  def call(self, x):
    factors = self.axis_factors(x.shape.rank - 2)
    for axis, factor in enumerate(factors, start=1):
      if factor > 1:
        x = _linear_axis(x, axis, factor)
    return x

  def compute_output_shape(self, input_shape):
    factors = self.axis_factors(len(input_shape) - 2)
    return ((input_shape[0],) +
            tuple(None if s is None else s * f
                  for s, f in zip(input_shape[1:-1], factors)) +
            (input_shape[-1],))

  def get_config(self):
    config = super().get_config()
    config.update(factor=self.factor)
    return config


def upsample_linear(x, factor: Size, name: str, dtype=None):
  """`x` up-sampled by LinearUpsample(factor); `x` itself when every factor
  is 1."""
  if compact_size(factor) == 1:
    return x
  return LinearUpsample(factor, name=name, dtype=dtype)(x)

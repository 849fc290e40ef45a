"""3D (and 2D) augmentation as TensorFlow ops on one unbatched example.

Every function takes an explicit stateless seed (an int32/int64 [2] tensor),
so a seeded pipeline repeats its batches exactly. Shapes:
  image: float32 [*spatial, C]
  label: int32 [*spatial] class indices, or [*spatial, K] binary masks
    (multi-label). Spatial ops move labels with nearest-neighbour lookups or
    reversals only, so label values stay integral and within the input set.

Rotation, scaling and elastic deformation are applied while the patch is cut
out of the whole volume (`sample_patch_with_transform`), as nnU-Net does, so
patches carry real context at their borders rather than zero fill.
"""

from __future__ import annotations

import itertools
import math
from typing import Optional, Sequence

import tensorflow as tf

from unet3d.config import AugmentationConfig


def _uniform(seed, low, high, shape=()):
  return tf.random.stateless_uniform(shape, seed, low, high)


def _happens(seed, prob: float):
  return tf.random.stateless_uniform([], seed) < prob


def _spatial_rank(image) -> int:
  return image.shape.rank - 1


# --- coordinate sampling ---------------------------------------------------


def _inside(index, shape):
  """[N] bool: which integer coordinates [N, R] lie inside `shape` [R]."""
  return tf.reduce_all((index >= 0) & (index < shape[None, :]), axis=-1)


def interpolate_linear(volume, coords):
  """(Bi/tri)linear samples of volume [*S, C] at float coords [N, R] -> [N, C].

  Points outside the volume read as 0.
  """
  rank = coords.shape[-1]
  shape = tf.shape(volume)[:rank]
  base = tf.floor(coords)
  frac = coords - base
  base = tf.cast(base, tf.int32)
  out = 0.0
  for corner in itertools.product((0, 1), repeat=rank):
    offset = tf.constant(corner, tf.int32)
    index = base + offset[None, :]
    weight = tf.ones_like(frac[:, 0])
    for axis, bit in enumerate(corner):
      weight *= frac[:, axis] if bit else 1.0 - frac[:, axis]
    weight *= tf.cast(_inside(index, shape), weight.dtype)
    safe = tf.clip_by_value(index, 0, shape[None, :] - 1)
    out += tf.gather_nd(volume, safe) * weight[:, None]
  return out


def interpolate_nearest(volume, coords):
  """Nearest samples of volume [*S, ...] at float coords [N, R] -> [N, ...];
  points outside read as 0."""
  rank = coords.shape[-1]
  shape = tf.shape(volume)[:rank]
  index = tf.cast(tf.round(coords), tf.int32)
  inside = _inside(index, shape)
  safe = tf.clip_by_value(index, 0, shape[None, :] - 1)
  values = tf.gather_nd(volume, safe)
  mask = tf.reshape(inside, tf.concat(
      [tf.shape(inside), tf.ones([tf.rank(values) - 1], tf.int32)], 0))
  return tf.where(mask, values, tf.zeros_like(values))


def _grid(size: Sequence[int]):
  """Voxel coordinates of a patch, [prod(size), R] float32."""
  axes = [tf.range(s, dtype=tf.float32) for s in size]
  mesh = tf.meshgrid(*axes, indexing='ij')
  return tf.reshape(tf.stack(mesh, axis=-1), [-1, len(size)])


def rotation_matrix(angles, rank: int):
  """R x R rotation: one angle (2D) or rotations about each of 3 axes (3D)."""
  if rank == 2:
    c, s = tf.cos(angles[0]), tf.sin(angles[0])
    return tf.stack([tf.stack([c, -s]), tf.stack([s, c])])
  matrix = tf.eye(3)
  for axis in range(3):
    c, s = tf.cos(angles[axis]), tf.sin(angles[axis])
    i, j = [a for a in range(3) if a != axis]
    rows = [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]
    rows = [[tf.constant(v) for v in row] for row in rows]
    rows[i][i], rows[i][j], rows[j][i], rows[j][j] = c, -s, s, c
    matrix = tf.matmul(tf.stack([tf.stack(r) for r in rows]), matrix)
  return matrix


def _gaussian_kernel(sigma, radius: int):
  x = tf.range(-radius, radius + 1, dtype=tf.float32)
  kernel = tf.exp(-0.5 * tf.square(x / tf.maximum(sigma, 1e-3)))
  return kernel / tf.reduce_sum(kernel)


def gaussian_smooth(volume, sigma, radius: int):
  """Separable Gaussian blur of every channel of volume [*S, C].

  `radius` is static (3 x the largest sigma drawn); `sigma` may be a tensor.
  """
  rank = _spatial_rank(volume)
  kernel = _gaussian_kernel(sigma, radius)
  # Channels become the batch, so one conv filter blurs all of them.
  perm = [rank] + list(range(rank))
  x = tf.transpose(volume, perm)[..., None]
  conv = tf.nn.conv3d if rank == 3 else tf.nn.conv2d
  for axis in range(rank):
    shape = [1] * rank + [1, 1]
    shape[axis] = 2 * radius + 1
    strides = [1] * (rank + 2)
    x = conv(x, tf.reshape(kernel, shape), strides, 'SAME')
  inverse = list(range(1, rank + 1)) + [0]
  return tf.transpose(x[..., 0], inverse)


def elastic_displacement(size: Sequence[int], sigma: float, magnitude,
                         seed):
  """A smooth random displacement field [prod(size), R] whose largest
  component is `magnitude` voxels."""
  rank = len(size)
  noise = tf.random.stateless_uniform(list(size) + [rank], seed, -1.0, 1.0)
  radius = max(1, min(int(math.ceil(3 * sigma)), max(size)))
  field = gaussian_smooth(noise, sigma, radius)
  field /= tf.maximum(tf.reduce_max(tf.abs(field)), 1e-6)
  return tf.reshape(field * magnitude, [-1, rank])


def patch_coordinates(centre, size: Sequence[int], aug: AugmentationConfig,
                      seed):
  """Source coordinates [prod(size), R] of a patch centred at `centre`.

  With probability `affine_prob` the patch grid is rotated (each angle
  uniform in +-rotation_degrees) and isotropically scaled (factor uniform in
  scale_range; > 1 zooms in); with probability `elastic_prob` a smooth
  displacement is added.
  """
  rank = len(size)
  seeds = tf.random.experimental.stateless_split(seed, 5)
  do_affine, do_elastic = _transform_draws(aug, seed)
  half = (tf.constant(size, tf.float32) - 1.0) / 2.0
  offsets = _grid(size) - half[None, :]
  theta = math.radians(aug.rotation_degrees)
  num_angles = 1 if rank == 2 else 3
  angles = _uniform(seeds[0], -theta, theta, [num_angles])
  scale = _uniform(seeds[1], aug.scale_range[0], aug.scale_range[1])
  matrix = tf.where(do_affine, rotation_matrix(angles, rank) / scale,
                    tf.eye(rank))
  coords = tf.matmul(offsets, matrix, transpose_b=True)
  if aug.elastic_prob > 0:
    coords += tf.cond(
        do_elastic,
        lambda: elastic_displacement(size, aug.elastic_sigma,
                                     aug.elastic_magnitude, seeds[4]),
        lambda: tf.zeros_like(coords))
  # The plain slice starts at centre - size // 2; the geometric centre of
  # that slice is where the rotation pivots, so identity equals the slice.
  pivot = tf.cast(centre - tf.constant(list(size)) // 2, tf.float32) + half
  return coords + pivot[None, :]


def _transform_draws(aug: AugmentationConfig, seed):
  """Whether this example is rotated/scaled, and whether it is deformed."""
  seeds = tf.random.experimental.stateless_split(seed, 5)
  return (_happens(seeds[2], aug.affine_prob),
          _happens(seeds[3], aug.elastic_prob))


def cut_patch(image, label, centre, size: Sequence[int],
              aug: AugmentationConfig, seed):
  """A training patch: transformed when an affine or elastic draw says so,
  otherwise a plain slice (no interpolation cost)."""
  do_affine, do_elastic = _transform_draws(aug, seed)
  return tf.cond(
      do_affine | do_elastic,
      lambda: sample_patch(image, label, centre, size,
                           patch_coordinates(centre, size, aug, seed)),
      lambda: sample_patch(image, label, centre, size))


def sample_patch(image, label, centre, size: Sequence[int], coords=None):
  """Cuts a patch of `size` centred at `centre` (integer voxel [R]).

  Without `coords` the patch is a plain slice; with `coords` (from
  `patch_coordinates`) the image is read linearly and the label nearest.
  """
  size_t = tf.constant(list(size), tf.int32)
  extra = label.shape.rank - len(size)
  if coords is None:
    start = tf.cast(centre, tf.int32) - size_t // 2
    image = tf.slice(image, tf.concat([start, [0]], 0),
                     tf.concat([size_t, [-1]], 0))
    label = tf.slice(label, tf.concat([start, [0] * extra], 0),
                     tf.concat([size_t, [-1] * extra], 0))
    return image, label
  channels = tf.shape(image)[-1]
  patch_image = tf.reshape(interpolate_linear(image, coords),
                           tf.concat([size_t, [channels]], 0))
  patch_label = interpolate_nearest(label, coords)
  patch_label = tf.reshape(patch_label, tf.concat(
      [size_t, tf.shape(label)[len(size):]], 0))
  return patch_image, patch_label


# --- spatial ops on a patch -------------------------------------------------


def flip(image, label, aug: AugmentationConfig, seed,
         multi_label: bool = False):
  """Flips each axis in `flip_axes` (default: all) with probability
  `flip_prob`; a flip of `left_right_axis` swaps the classes of
  `left_right_label_pairs`."""
  axes = aug.flip_axes or list(range(_spatial_rank(image)))
  draws = tf.random.stateless_uniform([len(axes)], seed)
  swap = None
  if aug.left_right_label_pairs and not multi_label:
    size = max(max(p) for p in aug.left_right_label_pairs) + 1
    table = list(range(size))
    for a, b in aug.left_right_label_pairs:
      table[a], table[b] = b, a
    swap = tf.constant(table, tf.int32)
  for i, axis in enumerate(axes):
    do = draws[i] < aug.flip_prob
    image = tf.cond(do, lambda im=image, a=axis: tf.reverse(im, [a]),
                    lambda im=image: im)
    if swap is not None and axis == aug.left_right_axis:
      def flipped(lb=label, a=axis):
        lb = tf.reverse(lb, [a])
        in_table = lb < tf.size(swap)
        return tf.where(in_table, tf.gather(swap, tf.minimum(
            lb, tf.size(swap) - 1)), lb)
    else:
      def flipped(lb=label, a=axis):
        return tf.reverse(lb, [a])
    label = tf.cond(do, flipped, lambda lb=label: lb)
  return image, label


def rot90(image, label, aug: AugmentationConfig, seed):
  """With probability `rot90_prob`, rotates the `rot90_axes` plane by 90,
  180 or 270 degrees (the plane must be square, which config validates)."""
  a, b = aug.rot90_axes
  seeds = tf.random.experimental.stateless_split(seed, 2)
  k = tf.random.stateless_uniform([], seeds[1], 1, 4, dtype=tf.int32)
  k = tf.where(_happens(seeds[0], aug.rot90_prob), k, 0)

  def rotate_once(x):
    perm = list(range(x.shape.rank))
    perm[a], perm[b] = perm[b], perm[a]
    return tf.reverse(tf.transpose(x, perm), [a])

  def rotate(x, times):
    for _ in range(times):
      x = rotate_once(x)
    return x

  branches = [lambda t=t: (rotate(image, t), rotate(label, t))
              for t in range(4)]
  return tf.switch_case(k, branches)


# --- intensity ops (image only) ---------------------------------------------


def _channel_stats(image):
  axes = list(range(_spatial_rank(image)))
  return (tf.reduce_mean(image, axes, keepdims=True),
          tf.math.reduce_std(image, axes, keepdims=True),
          tf.reduce_min(image, axes, keepdims=True),
          tf.reduce_max(image, axes, keepdims=True))


def gaussian_noise(image, aug: AugmentationConfig, seed):
  seeds = tf.random.experimental.stateless_split(seed, 3)
  std = _uniform(seeds[1], 0.0, aug.noise_std)
  return tf.cond(
      _happens(seeds[0], aug.noise_prob),
      lambda: image + tf.random.stateless_normal(tf.shape(image),
                                                 seeds[2]) * std,
      lambda: image)


def gaussian_blur(image, aug: AugmentationConfig, seed):
  seeds = tf.random.experimental.stateless_split(seed, 2)
  low, high = aug.blur_sigma_range
  sigma = _uniform(seeds[1], low, high)
  radius = max(1, int(math.ceil(3 * high)))
  return tf.cond(_happens(seeds[0], aug.blur_prob),
                 lambda: gaussian_smooth(image, sigma, radius),
                 lambda: image)


def brightness(image, aug: AugmentationConfig, seed):
  """Multiplies the image by a factor uniform in `brightness_range`."""
  seeds = tf.random.experimental.stateless_split(seed, 2)
  factor = _uniform(seeds[1], *aug.brightness_range)
  return tf.cond(_happens(seeds[0], aug.brightness_prob),
                 lambda: image * factor, lambda: image)


def contrast(image, aug: AugmentationConfig, seed):
  """Scales each channel about its mean, keeping its original range."""
  seeds = tf.random.experimental.stateless_split(seed, 2)
  factor = _uniform(seeds[1], *aug.contrast_range)

  def changed():
    mean, _, low, high = _channel_stats(image)
    return tf.clip_by_value((image - mean) * factor + mean, low, high)

  return tf.cond(_happens(seeds[0], aug.contrast_prob), changed,
                 lambda: image)


def gamma(image, aug: AugmentationConfig, seed):
  """x -> x^gamma on each channel rescaled to [0, 1], then restored to the
  channel's original mean and standard deviation (nnU-Net's retain_stats)."""
  seeds = tf.random.experimental.stateless_split(seed, 2)
  g = _uniform(seeds[1], *aug.gamma_range)

  def changed():
    mean, std, low, high = _channel_stats(image)
    span = tf.maximum(high - low, 1e-7)
    curved = tf.pow((image - low) / span, g) * span + low
    new_mean, new_std, _, _ = _channel_stats(curved)
    return (curved - new_mean) / tf.maximum(new_std, 1e-7) * std + mean

  return tf.cond(_happens(seeds[0], aug.gamma_prob), changed, lambda: image)


def low_resolution(image, aug: AugmentationConfig, seed):
  """Simulates a coarser scan: nearest down-sampling by a zoom uniform in
  `low_resolution_zoom_range`, then linear up-sampling to the patch size."""
  seeds = tf.random.experimental.stateless_split(seed, 2)
  zoom = _uniform(seeds[1], *aug.low_resolution_zoom_range)
  rank = _spatial_rank(image)

  def degrade():
    size = tf.shape(image)[:rank]
    small = tf.maximum(1, tf.cast(
        tf.round(tf.cast(size, tf.float32) * zoom), tf.int32))
    step = tf.cast(size, tf.float32) / tf.cast(small, tf.float32)
    axes = [tf.range(small[i], dtype=tf.float32) for i in range(rank)]
    coarse_coords = tf.reshape(
        tf.stack(tf.meshgrid(*axes, indexing='ij'), -1), [-1, rank])
    coarse = interpolate_nearest(image, (coarse_coords + 0.5) * step - 0.5)
    coarse = tf.reshape(coarse, tf.concat([small, [tf.shape(image)[-1]]], 0))
    full_axes = [tf.range(size[i], dtype=tf.float32) for i in range(rank)]
    fine_coords = tf.reshape(
        tf.stack(tf.meshgrid(*full_axes, indexing='ij'), -1), [-1, rank])
    # Clamp into the coarse grid so edges replicate instead of fading to 0.
    source = tf.clip_by_value((fine_coords + 0.5) / step - 0.5, 0.0,
                              tf.cast(small - 1, tf.float32)[None, :])
    return tf.reshape(interpolate_linear(coarse, source), tf.shape(image))

  return tf.cond(_happens(seeds[0], aug.low_resolution_prob), degrade,
                 lambda: image)


def augment_patch(image, label, aug: AugmentationConfig, seed,
                  multi_label: bool = False):
  """Intensity ops in nnU-Net's order, then flips and rot90."""
  seeds = tf.random.experimental.stateless_split(seed, 8)
  intensity_ops = ((gaussian_noise, aug.noise_prob),
                   (gaussian_blur, aug.blur_prob),
                   (brightness, aug.brightness_prob),
                   (contrast, aug.contrast_prob),
                   (low_resolution, aug.low_resolution_prob),
                   (gamma, aug.gamma_prob))
  for i, (op, prob) in enumerate(intensity_ops):
    if prob > 0:
      image = op(image, aug, seeds[i])
  if aug.flip_prob > 0:
    image, label = flip(image, label, aug, seeds[6], multi_label)
  if aug.rot90_prob > 0:
    image, label = rot90(image, label, aug, seeds[7])
  return image, label


def uses_spatial_transform(aug: Optional[AugmentationConfig]) -> bool:
  return bool(aug and aug.enabled and
              (aug.affine_prob > 0 or aug.elastic_prob > 0))

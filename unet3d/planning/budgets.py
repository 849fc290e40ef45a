"""What a plan may spend: the named budgets and the training-memory estimate.

The estimate counts the planned 3D U-Net (unet3d with `model.filters`,
per-axis `model.pool_sizes` / `model.kernel_sizes`, batch norm, ReLU,
transposed-conv up-sampling, one 1x1 head) from its shapes, without
building it: parameters (weights, gradients and Adam's two moments, float32)
plus every layer's output per sample times the batch, in the compute
precision, times ACTIVATION_FACTOR for what backpropagation holds at its
peak. tests/planning check the counts against the built Keras model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence

from unet3d.errors import ConfigError

GIB = 2**30
# Peak training memory over the sum of layer outputs. On CPU, TensorFlow's
# allocator peaked at 0.88x (4.67 KB per voxel per sample for a float32
# 3D U-Net whose layer outputs total 5.28 KB; docs/benchmarks.md, "Memory of
# a training step", measured with benchmarks/models.py at 32^3 and 64^3);
# 1.0 leaves a margin.
ACTIVATION_FACTOR = 1.0
# Parameter bytes while training: float32 weights, gradients, Adam m and v.
BYTES_PER_PARAMETER = 16


@dataclass(frozen=True)
class Budget:
  """A machine the plan sizes the recipe for."""
  name: str
  device: str  # 'gpu' or 'cpu'
  # Memory the training step may use (GPU memory; CPU: RAM).
  memory_gib: float
  # Mixed precision compute dtype (float32 variables either way).
  precision: str
  # nnU-Net's widths: base * 2^level, capped.
  base_filters: int
  max_filters: int
  # Levels at most (nnU-Net: 6 at full resolution in 3D).
  max_levels: int
  # Memory the runtime takes before the model (CUDA context and cuDNN
  # workspace; TensorFlow's CPU runtime and the input pipeline).
  reserved_gib: float
  # RAM of the host, for the choice to cache decoded records in memory
  # (CPU budgets: memory_gib, which training shares).
  host_memory_gib: float = 0.0
  # CPU: hours of training train_steps is sized for, from a measured step
  # timed on this many cores.
  train_hours: Optional[float] = None
  cores: Optional[int] = None
  description: str = ''

  @property
  def usable_bytes(self) -> float:
    return (self.memory_gib - self.reserved_gib) * GIB


def _gpu(gib: int) -> Budget:
  # A GPU machine's host: twice the GPU's memory, at least 16 GB.
  host = max(16, 2 * gib)
  return Budget(f'gpu{gib}g', 'gpu', gib, 'float16', 32, 320, 6, 1.5,
                host_memory_gib=host,
                description=f'one {gib} GB GPU, mixed float16, {host} GB '
                'host RAM')


BUDGETS = {b.name: b for b in [
    Budget('cpu2', 'cpu', 4, 'float32', 16, 128, 5, 1.0, host_memory_gib=4,
           train_hours=0.5, cores=2,
           description='2 CPU cores, 4 GB for training, 30 minutes'),
    Budget('cpu8', 'cpu', 16, 'float32', 16, 256, 5, 2.0, host_memory_gib=16,
           train_hours=4.0, cores=8,
           description='8 CPU cores, 16 GB for training, 4 hours'),
    _gpu(8), _gpu(11), _gpu(16), _gpu(24), _gpu(40), _gpu(80),
]}


def get_budget(name: str, train_hours: Optional[float] = None) -> Budget:
  """The named budget; `train_hours` replaces a CPU budget's hours."""
  if name not in BUDGETS:
    raise ConfigError(f"--budget: unknown budget '{name}' (expected one of "
                      f"{', '.join(BUDGETS)})")
  budget = BUDGETS[name]
  if train_hours is not None:
    if not (math.isfinite(train_hours) and train_hours > 0):
      raise ConfigError('--train_hours: must be a positive number of hours, '
                        f'got {train_hours}')
    if budget.device != 'cpu':
      raise ConfigError('--train_hours: only CPU budgets size train_steps '
                        'from a measured step; GPU budgets train nnU-Net\'s '
                        '250,000 steps')
    budget = Budget(**{**budget.__dict__, 'train_hours': train_hours})
  return budget


BYTES_PER_ELEMENT = {'float32': 4, 'float16': 2, 'bfloat16': 2}


def unet_parameters(filters: Sequence[int], kernels: Sequence[Sequence[int]],
                    pools: Sequence[Sequence[int]], channels: int,
                    classes: int) -> int:
  """Weights of the planned U-Net: per level two convs + batch norms (4
  values per channel) in the encoder; per decoder level a transposed conv
  (kernel = pool), two convs + norms; the 1x1 head."""
  total, cin = 0, channels
  for f, k in zip(filters, kernels):
    total += (math.prod(k) * cin * f + f + 4 * f) + (
        math.prod(k) * f * f + f + 4 * f)
    cin = f
  for level in range(len(filters) - 2, -1, -1):
    f, k, up = filters[level], kernels[level], cin
    total += math.prod(pools[level]) * up * up + up
    total += (math.prod(k) * (up + f) * f + f + 4 * f) + (
        math.prod(k) * f * f + f + 4 * f)
    cin = f
  return total + cin * classes + classes


def unet_activations(patch: Sequence[int], filters: Sequence[int],
                     pools: Sequence[Sequence[int]], classes: int) -> int:
  """Elements of every layer's output for one sample: per conv its conv,
  norm and activation outputs; the pools, transposed convs and concats;
  the head."""
  voxels = [math.prod(patch)]
  for pool in pools:
    voxels.append(voxels[-1] // math.prod(pool))
  total = 0
  for level, (f, v) in enumerate(zip(filters, voxels)):
    if level:
      total += filters[level - 1] * v  # the pool's output
    total += 2 * 3 * f * v
  up = filters[-1]
  for level in range(len(filters) - 2, -1, -1):
    f, v = filters[level], voxels[level]
    total += up * v + (up + f) * v + 2 * 3 * f * v
    up = f
  return total + classes * voxels[0]


def training_bytes(parameters: int, activations: int, batch: int,
                   precision: str) -> float:
  """Estimated peak memory of one training step."""
  return (BYTES_PER_PARAMETER * parameters + ACTIVATION_FACTOR * batch *
          activations * BYTES_PER_ELEMENT[precision])

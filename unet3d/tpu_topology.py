"""The TPU mesh: which block of cores one spatially partitioned replica uses.

With `input_partition_dims`, one replica spans prod(input_partition_dims) TPU
cores and `tf.tpu.experimental.DeviceAssignment.build` needs that block's
shape in the mesh. The shape is derived here from the topology that
`initialize_tpu_system` returns, never from a table, because the mesh differs
between generations. `topology.mesh_shape` is [x, y, z, devices per chip],
where a device is what TensorFlow counts as one TPU core:

  generation  TensorCores/chip  devices/chip  example mesh_shape
  v2, v3      2                 2             v3-8 [2,2,1,2], v3-32 [4,4,1,2]
  v4, v5p     2 (megacore)      1             v4-32 [2,2,4,1], v5p-8 [2,2,1,1]
  v5e, v6e    1                 1             v5litepod-8 [2,4,1,1]

(on v4/v5p megacore fuses a chip's two TensorCores into one device, so "cores
per replica" counts chips there). These shapes come from the Cloud TPU
documentation and public device listings, not from hardware at hand; the
code only relies on `mesh_shape`, whatever it is.

Topology and DeviceAssignment.build are plain Python over numpy, so all of
this runs (and is tested) on a CPU with constructed topologies.
"""

from __future__ import annotations

import itertools
import math
from typing import Sequence

import numpy as np
import tensorflow as tf

from unet3d.errors import ConfigError


def _divisors(n: int) -> list[int]:
  return [d for d in range(1, n + 1) if n % d == 0]


def _mesh(mesh_shape: Sequence[int]) -> list[int]:
  mesh = [int(d) for d in np.asarray(mesh_shape).ravel()]
  if len(mesh) != 4 or any(d < 1 for d in mesh):
    raise ValueError(f'TPU mesh_shape must be 4 positive ints [x, y, z, '
                     f'devices_per_chip], got {list(mesh_shape)}')
  return mesh


def valid_cores_per_replica(mesh_shape: Sequence[int]) -> list[int]:
  """Every cores-per-replica count whose block tiles the mesh exactly."""
  return sorted({math.prod(block) for block in
                 itertools.product(*(_divisors(d) for d in _mesh(mesh_shape)))})


def computation_shape(mesh_shape: Sequence[int],
                      cores_per_replica: int) -> list[int]:
  """The [x, y, z, c] block of TPU devices that one replica occupies.

  The block tiles the mesh exactly (each entry divides the mesh's), so
  prod(mesh) / cores_per_replica replicas use every core. Among such blocks
  the preference is, in order: all devices of a chip (the two cores of a
  v2/v3 chip share the fastest link); the most compact block of chips
  (smallest x + y + z, then smallest max), so neighbouring spatial tiles stay
  close; then larger x, then larger y. A block that spans whole chips and a
  full tiling let DeviceAssignment.build order a replica's cores along a ring
  of adjacent chips.

  Args:
    mesh_shape: `topology.mesh_shape`, [x, y, z, devices_per_chip].
    cores_per_replica: prod(input_partition_dims).

  Returns:
    [x, y, z, c] with x * y * z * c == cores_per_replica.

  Raises:
    ConfigError: naming input_partition_dims, when the count is not positive,
      exceeds the TPU, or no block of that many cores tiles the mesh.
  """
  mesh = _mesh(mesh_shape)
  n = int(cores_per_replica)
  total = math.prod(mesh)
  if n < 1:
    raise ConfigError(f'input_partition_dims: cores per replica must be >= 1, '
                      f'got {n}')
  if n > total:
    raise ConfigError(
        f'input_partition_dims: {n} cores per replica, but the TPU has only '
        f'{total} (mesh_shape [x, y, z, devices_per_chip] = {mesh})')
  candidates = []
  for c in _divisors(mesh[3]):
    if n % c:
      continue
    for x in _divisors(mesh[0]):
      for y in _divisors(mesh[1]):
        z, remainder = divmod(n, c * x * y)
        if not remainder and mesh[2] % z == 0:
          candidates.append((x, y, z, c))
  if not candidates:
    raise ConfigError(
        f'input_partition_dims: {n} cores per replica cannot tile the TPU mesh '
        f'{mesh} ([x, y, z, devices_per_chip], {total} cores); use one of '
        f'{valid_cores_per_replica(mesh)}')
  best = min(candidates, key=lambda s: (-s[3], s[0] + s[1] + s[2], max(s[:3]),
                                        -s[0], -s[1]))
  return list(best)


def device_assignment(topology: tf.tpu.experimental.Topology,
                      cores_per_replica: int
                     ) -> tf.tpu.experimental.DeviceAssignment:
  """Every core in use: prod(mesh) / cores_per_replica replicas, each a
  `computation_shape(topology.mesh_shape, cores_per_replica)` block."""
  shape = computation_shape(topology.mesh_shape, cores_per_replica)
  num_replicas = math.prod(_mesh(topology.mesh_shape)) // int(cores_per_replica)
  return tf.tpu.experimental.DeviceAssignment.build(
      topology, computation_shape=shape, num_replicas=num_replicas)

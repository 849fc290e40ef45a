"""Constructed TPU topologies of each generation, for tests on a CPU.

`tf.tpu.experimental.Topology(mesh_shape=, device_coordinates=)` and
`DeviceAssignment.build` are plain Python, so a slice's topology can be built
without a TPU. `fake_topology` numbers hosts and devices the way a real v2-8
reports them (a test compares it with a real serialized TopologyProto).
"""

import itertools

import numpy as np
import tensorflow as tf

# Slice -> (mesh_shape, the block of the mesh one host (TF task) owns).
# v2/v3 hosts hold 2x2 chips of 2 devices; v4/v5p hosts 2x2x1 chips of one
# megacore device; a v5e-8 host holds all 8 single-core chips (2x4), hosts
# of larger v5e slices 2x2 chips.
SLICES = {
    'v2-8': ([2, 2, 1, 2], [2, 2, 1, 2]),
    'v3-8': ([2, 2, 1, 2], [2, 2, 1, 2]),
    'v3-32': ([4, 4, 1, 2], [2, 2, 1, 2]),
    'v3-128': ([8, 8, 1, 2], [2, 2, 1, 2]),
    'v4-8': ([2, 2, 1, 1], [2, 2, 1, 1]),
    'v4-32': ([2, 2, 4, 1], [2, 2, 1, 1]),
    'v5litepod-8': ([2, 4, 1, 1], [2, 4, 1, 1]),
    'v5litepod-16': ([4, 4, 1, 1], [2, 2, 1, 1]),
    'v5p-8': ([2, 2, 1, 1], [2, 2, 1, 1]),
}


def fake_topology(mesh_shape, host_shape) -> tf.tpu.experimental.Topology:
  """The Topology a slice of `mesh_shape` reports when each host owns a
  `host_shape` block: hosts numbered over the blocks x fastest, then y, z;
  a host's devices numbered core fastest, then x, y, z."""
  mesh = np.asarray(mesh_shape, np.int32)
  host = np.asarray(host_shape, np.int32)
  if mesh.shape != (4,) or host.shape != (4,) or np.any(mesh % host):
    raise ValueError(f'host_shape {list(host)} must tile mesh_shape '
                     f'{list(mesh)}')
  grid = mesh // host
  coords = []
  for hc, hz, hy, hx in itertools.product(
      range(grid[3]), range(grid[2]), range(grid[1]), range(grid[0])):
    origin = np.array([hx, hy, hz, hc]) * host
    coords.append([origin + [x, y, z, c] for z, y, x, c in itertools.product(
        range(host[2]), range(host[1]), range(host[0]), range(host[3]))])
  return tf.tpu.experimental.Topology(
      mesh_shape=mesh.tolist(), device_coordinates=np.asarray(coords, np.int32))


def topology(name: str) -> tf.tpu.experimental.Topology:
  return fake_topology(*SLICES[name])

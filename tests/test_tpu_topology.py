"""Tests for unet3d/tpu_topology.py on constructed TPU topologies (CPU)."""

import base64

import numpy as np
import pytest
import tensorflow as tf
from tensorflow.core.protobuf.tpu import topology_pb2

from tests import tpu_slices
from unet3d import tpu_topology
from unet3d.config import ConfigError

# A real v2-8 / v3-8 TopologyProto, serialized (as published in a public
# test): mesh [2, 2, 1, 2], one task of 8 devices.
_V2_8_PROTO = 'CgQCAgECEAEYCCIgAAAAAAAAAAEBAAAAAQAAAQABAAAAAQABAQEAAAEBAAE='

# The fixed table unet3d/distribute.py used before (two cores per chip).
_OLD_TABLE = {1: [1, 1, 1, 1], 2: [1, 1, 1, 2], 4: [1, 2, 1, 2],
              8: [2, 2, 1, 2], 16: [4, 2, 1, 2], 32: [4, 4, 1, 2]}


def test_constructed_topology_matches_a_real_v2_8():
  proto = topology_pb2.TopologyProto()
  proto.ParseFromString(base64.b64decode(_V2_8_PROTO))
  real = tf.tpu.experimental.Topology(serialized=proto.SerializeToString())
  fake = tpu_slices.topology('v2-8')
  np.testing.assert_array_equal(real.mesh_shape, fake.mesh_shape)
  np.testing.assert_array_equal(real.device_coordinates,
                                fake.device_coordinates)


@pytest.mark.parametrize('name', sorted(tpu_slices.SLICES))
def test_every_valid_count_uses_every_core_once(name):
  mesh, _ = tpu_slices.SLICES[name]
  topology = tpu_slices.topology(name)
  total = int(np.prod(mesh))
  counts = tpu_topology.valid_cores_per_replica(mesh)
  assert counts[0] == 1 and counts[-1] == total
  for n in counts:
    shape = tpu_topology.computation_shape(topology.mesh_shape, n)
    assert int(np.prod(shape)) == n
    assert all(m % s == 0 for m, s in zip(mesh, shape))
    assignment = tpu_topology.device_assignment(topology, n)
    assert assignment.num_replicas == total // n
    assert assignment.num_cores_per_replica == n
    cores = assignment.core_assignment.reshape(-1, 4)
    assert len({tuple(c) for c in cores}) == total
    # Device names resolve through the topology's task and device maps.
    assert assignment.tpu_device(0, 0, job='worker').startswith(
        '/job:worker/task:')
    assert assignment.host_device(assignment.num_replicas - 1, n - 1,
                                  job='worker').endswith('CPU:0')


@pytest.mark.parametrize('name, n, expected', [
    ('v2-8', 8, [2, 2, 1, 2]),      # configs/cloud/v3-8_*: [1, 8, 1, 1, 1]
    ('v3-32', 16, [4, 2, 1, 2]),    # configs/cloud/v3-32_*: [1, 16, 1, 1, 1]
    ('v3-32', 2, [1, 1, 1, 2]),     # the two cores of one chip
    ('v3-128', 16, [4, 2, 1, 2]),
    ('v4-32', 16, [2, 2, 4, 1]),    # megacore: 16 devices are 16 chips
    ('v4-32', 4, [2, 2, 1, 1]),     # one host's 2 x 2 chips
    ('v4-32', 8, [2, 2, 2, 1]),
    ('v5litepod-8', 8, [2, 4, 1, 1]),
    ('v5litepod-16', 4, [2, 2, 1, 1]),
    ('v5p-8', 4, [2, 2, 1, 1]),
    ('v5p-8', 2, [2, 1, 1, 1]),
])
def test_computation_shape_per_generation(name, n, expected):
  assert tpu_topology.computation_shape(tpu_slices.SLICES[name][0],
                                        n) == expected


def test_two_core_chips_get_the_old_blocks_up_to_x_y_order():
  mesh = tpu_slices.SLICES['v3-32'][0]
  for n, old in _OLD_TABLE.items():
    new = tpu_topology.computation_shape(mesh, n)
    assert new[3] == old[3] and sorted(new[:3]) == sorted(old[:3]), (n, new)


@pytest.mark.parametrize('name', ['v4-8', 'v4-32', 'v5p-8', 'v5litepod-8'])
def test_the_old_table_does_not_fit_one_device_chips(name):
  topology = tpu_slices.topology(name)
  with pytest.raises(ValueError, match='does not fit in TPU topology shape'):
    tf.tpu.experimental.DeviceAssignment.build(
        topology, computation_shape=_OLD_TABLE[4], num_replicas=1)
  assert tpu_topology.device_assignment(topology,
                                        4).num_cores_per_replica == 4


@pytest.mark.parametrize('name, n', [('v3-32', 16), ('v3-32', 8),
                                     ('v3-128', 16), ('v4-32', 16),
                                     ('v4-32', 8), ('v5litepod-16', 16),
                                     ('v5p-8', 4)])
def test_spatial_tiles_sit_on_the_same_or_a_neighbouring_chip(name, n):
  """Tile i + 1 of a replica is on tile i's chip or one hop away, so the
  halo exchange between neighbouring tiles is short."""
  assignment = tpu_topology.device_assignment(tpu_slices.topology(name), n)
  for replica in range(assignment.num_replicas):
    chips = assignment.core_assignment[replica, :, :3]
    hops = np.abs(np.diff(chips, axis=0)).sum(axis=1)
    assert hops.max() <= 1, (replica, chips.tolist())


@pytest.mark.parametrize('mesh, n, message', [
    ([2, 2, 1, 2], 3, r'input_partition_dims: 3 cores per replica cannot '
                      r'tile the TPU mesh \[2, 2, 1, 2\].*use one of '
                      r'\[1, 2, 4, 8\]'),
    ([2, 2, 1, 2], 16, r'16 cores per replica, but the TPU has only 8'),
    ([2, 2, 1, 1], 8, r'8 cores per replica, but the TPU has only 4'),
    ([4, 4, 1, 2], 6, r'cannot tile'),
    ([2, 2, 1, 2], 0, r'must be >= 1'),
])
def test_a_partition_that_does_not_fit_is_one_line_naming_the_key(mesh, n,
                                                                   message):
  with pytest.raises(ConfigError, match=message) as e:
    tpu_topology.computation_shape(mesh, n)
  assert '\n' not in str(e.value)


def test_a_malformed_mesh_is_rejected():
  with pytest.raises(ValueError, match='4 positive ints'):
    tpu_topology.computation_shape([2, 2, 2], 2)


def test_the_v3_32_recipe_on_a_v3_8_fails_before_any_tpu_work():
  with pytest.raises(ConfigError, match='16 cores per replica, but the TPU '
                     'has only 8'):
    tpu_topology.device_assignment(tpu_slices.topology('v3-8'), 16)

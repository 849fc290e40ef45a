"""Shared test setup.

The CPU is split into two logical devices before TensorFlow initialises, so
any test can build a two-replica MirroredStrategy; every test starts from
Keras' float32 policy.
"""

import os

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

import keras  # pylint: disable=g-import-not-at-top
import pytest  # pylint: disable=g-import-not-at-top
import tensorflow as tf  # pylint: disable=g-import-not-at-top

_cpus = tf.config.list_physical_devices('CPU')
try:
  tf.config.set_logical_device_configuration(
      _cpus[0], [tf.config.LogicalDeviceConfiguration()] * 2)
except RuntimeError:  # already initialised by an earlier import
  pass


@pytest.fixture(autouse=True)
def _float32_keras_policy():
  """Every test starts from Keras' float32 policy: runs in-process (a TPU
  config's bfloat16, a mixed-precision test) set the global policy, and a
  later test in the same worker would otherwise build its model in it."""
  keras.mixed_precision.set_global_policy('float32')
  yield
  keras.mixed_precision.set_global_policy('float32')

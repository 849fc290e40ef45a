"""Every device fact in one place: the strategy factory `build_strategy(cfg)`
(tpu, mirrored, multi_worker, cpu), the precision policy, XLA, determinism,
and which worker is the chief.

TPU and GPU paths follow TensorFlow's documented tf.distribute API; on this
project's CI only the CPU, MirroredStrategy over logical CPU devices and
MultiWorkerMirroredStrategy over local processes are exercised.
"""

from __future__ import annotations

from typing import Optional

import keras
import tensorflow as tf

from unet3d.config import Config, ConfigError

_PRECISION_POLICIES = {'float32': 'float32', 'bfloat16': 'mixed_bfloat16',
                       'float16': 'mixed_float16'}


def strategy_name(cfg: Config) -> str:
  """The distribution strategy to use, resolving an empty value: tpu when
  `tpu` is set, mirrored when GPUs are visible, else cpu."""
  if cfg.distribution_strategy:
    return cfg.distribution_strategy
  if cfg.tpu:
    return 'tpu'
  return 'mirrored' if tf.config.list_physical_devices('GPU') else 'cpu'


def compute_dtype(cfg: Config) -> str:
  """float32 | bfloat16 | float16, resolving an empty `dtype` (bfloat16 on
  TPU, the Model Garden default; float32 elsewhere)."""
  if cfg.dtype:
    return cfg.dtype
  return 'bfloat16' if strategy_name(cfg) == 'tpu' else 'float32'


def set_precision_policy(cfg: Config) -> None:
  """Sets Keras' global policy before any model is built."""
  keras.mixed_precision.set_global_policy(
      _PRECISION_POLICIES[compute_dtype(cfg)])


def steps_per_loop(cfg: Config) -> int:
  """`train.steps_per_loop`, or by strategy when empty: 100 on TPU (host
  round trips are costly there), 50 on GPUs, 10 on CPU (feedback within
  seconds)."""
  if cfg.train.steps_per_loop:
    return cfg.train.steps_per_loop
  name = strategy_name(cfg)
  if name == 'tpu':
    return 100
  return 10 if name == 'cpu' or not has_accelerator() else 50


def set_determinism(cfg: Config) -> None:
  """Seeds Python, numpy and TF from `seed`; `deterministic` makes TF ops
  deterministic."""
  if cfg.seed is not None:
    keras.utils.set_random_seed(cfg.seed)
  if cfg.deterministic:
    tf.config.experimental.enable_op_determinism()


def _tpu_strategy(cfg: Config) -> tf.distribute.Strategy:
  resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=cfg.tpu or '')
  tf.config.experimental_connect_to_cluster(resolver)
  topology = tf.tpu.experimental.initialize_tpu_system(resolver)
  if not cfg.input_partition_dims:
    return tf.distribute.TPUStrategy(resolver)
  # Spatial partitioning: each replica spans prod(input_partition_dims) cores,
  # and the input tensor is split along the partitioned spatial axes.
  cores_per_replica = 1
  for d in cfg.input_partition_dims:
    cores_per_replica *= d
  num_replicas = resolver.get_tpu_system_metadata().num_cores // cores_per_replica
  if num_replicas < 1:
    raise ConfigError(
        f'input_partition_dims: {cfg.input_partition_dims} needs '
        f'{cores_per_replica} cores per replica, more than the TPU has')
  device_assignment = tf.tpu.experimental.DeviceAssignment.build(
      topology, num_replicas=num_replicas,
      computation_shape=_computation_shape(cores_per_replica))
  return tf.distribute.TPUStrategy(
      resolver, experimental_device_assignment=device_assignment,
      experimental_spmd_xla_partitioning=False)


def _computation_shape(cores_per_replica: int) -> list[int]:
  """Lays out cores_per_replica TPU cores as [x, y, z, cores_per_chip]."""
  # A TPU v3/v4 chip has 2 cores; replicas span chips along x, then y.
  shapes = {1: [1, 1, 1, 1], 2: [1, 1, 1, 2], 4: [1, 2, 1, 2],
            8: [2, 2, 1, 2], 16: [4, 2, 1, 2], 32: [4, 4, 1, 2]}
  if cores_per_replica not in shapes:
    raise ConfigError(f'input_partition_dims: {cores_per_replica} cores per '
                      f'replica is not supported (use 1, 2, 4, 8, 16 or 32)')
  return shapes[cores_per_replica]


def mirrored_strategy(devices: Optional[list[str]] = None
                      ) -> tf.distribute.MirroredStrategy:
  """MirroredStrategy over `devices`; CPU-only replicas reduce on one device.

  On CPUs the default cross-device ops are collectives whose instance keys
  restart for each new strategy, so a second MirroredStrategy in the same
  process aborts with "Shape mismatch in the collective instance". Reducing
  through one host device avoids that and costs nothing in shared memory.
  """
  names = devices or [d.name for d in tf.config.list_logical_devices('GPU')]
  on_cpu = bool(names) and all('CPU' in n.upper() for n in names)
  if on_cpu or not names:
    return tf.distribute.MirroredStrategy(
        devices, cross_device_ops=tf.distribute.ReductionToOneDevice())
  return tf.distribute.MirroredStrategy(devices)


def build_strategy(cfg: Config,
                   devices: Optional[list[str]] = None) -> tf.distribute.Strategy:
  """Returns the tf.distribute strategy named by `cfg.distribution_strategy`.

  Args:
    cfg: the run's config (`distribution_strategy`, `num_gpus`, `tpu`).
    devices: explicit devices for `mirrored` (tests pass logical CPUs).
  """
  name = strategy_name(cfg)
  if name == 'tpu':
    return _tpu_strategy(cfg)
  if cfg.input_partition_dims and any(d > 1 for d in cfg.input_partition_dims):
    raise ConfigError('input_partition_dims: spatial partitioning needs '
                      "distribution_strategy 'tpu', got "
                      f"'{name}'")
  if name == 'mirrored':
    if devices is None:
      gpus = tf.config.list_logical_devices('GPU')
      if cfg.num_gpus > len(gpus):
        raise ConfigError(f'num_gpus: asked for {cfg.num_gpus} GPUs, this '
                          f'machine has {len(gpus)}')
      if cfg.num_gpus > 0:
        devices = [g.name for g in gpus[:cfg.num_gpus]]
      elif not gpus:
        devices = [d.name for d in tf.config.list_logical_devices('CPU')]
    return mirrored_strategy(devices)
  if name == 'multi_worker':
    # The cluster comes from the TF_CONFIG environment variable.
    return tf.distribute.MultiWorkerMirroredStrategy()
  if name == 'cpu':
    return tf.distribute.OneDeviceStrategy('/cpu:0')
  raise ConfigError(f'distribution_strategy: unknown strategy {name!r}')


def has_accelerator() -> bool:
  return bool(tf.config.list_logical_devices('GPU') or
              tf.config.list_logical_devices('TPU'))


def use_jit_compile(cfg: Config) -> bool:
  """XLA: as configured, else on for GPU/TPU and off on CPU (slower there)."""
  if cfg.train.jit_compile is not None:
    return cfg.train.jit_compile
  return strategy_name(cfg) == 'tpu' or has_accelerator()


def is_chief() -> bool:
  """True on the worker that writes checkpoints, summaries and reports."""
  resolver = tf.distribute.cluster_resolver.TFConfigClusterResolver()
  task_type, task_id = resolver.task_type, resolver.task_id
  if task_type is None:
    return True
  return (task_type == 'chief' or
          (task_type == 'worker' and task_id == 0 and
           'chief' not in resolver.cluster_spec().as_dict()))


def task_id() -> int:
  """This worker's index in TF_CONFIG (0 when not in a cluster)."""
  return tf.distribute.cluster_resolver.TFConfigClusterResolver().task_id or 0

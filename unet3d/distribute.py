"""Every device fact in one place: the strategy factory `build_strategy(cfg)`
(tpu, mirrored, multi_worker, cpu) and its batch-size check, TPU spatial
partitioning of a replica's inputs, the precision policy, XLA, synchronised
batch norm, determinism, and which worker is the chief.

docs/distribution.md says which of these paths ran on this
project's 2-core CPU machine (the CPU strategy, MirroredStrategy over two
logical CPUs, MultiWorkerMirroredStrategy over local processes, TPU device
assignment on constructed topologies) and which follow TensorFlow's
documented API without having run here (GPUs, TPUs).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Optional

from absl import logging
import keras
import tensorflow as tf

from unet3d import config as config_lib
from unet3d import errors
from unet3d import tpu_topology
from unet3d.config import Config, ConfigError
from unet3d.errors import StartupError
from unet3d.models import blocks

_PRECISION_POLICIES = {'float32': 'float32', 'bfloat16': 'mixed_bfloat16',
                       'float16': 'mixed_float16'}

# model.sync_batch_norm None: on below this many cases per replica.
SYNC_BATCH_NORM_BELOW = 4


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


def set_inference_precision(cfg: Config) -> None:
  """`inference.onednn_bfloat16`: grappler rewrites the graphs built after
  this call (CPU, oneDNN) to compute in bfloat16. Process-wide."""
  if cfg.inference.onednn_bfloat16:
    tf.config.optimizer.set_experimental_options(
        {'auto_mixed_precision_onednn_bfloat16': True})


def steps_per_loop(cfg: Config) -> int:
  """`train.steps_per_loop`, or by strategy when empty: 100 on TPU (host
  round trips are costly there), 50 on GPUs, 10 on CPU (feedback within
  seconds)."""
  if cfg.train.steps_per_loop:
    return cfg.train.steps_per_loop
  name = strategy_name(cfg)
  if name == 'tpu':
    return 100
  return 50 if name != 'cpu' and tf.config.list_logical_devices('GPU') else 10


def set_determinism(cfg: Config) -> None:
  """Seeds Python, numpy and TF from `seed`; `deterministic` makes TF ops
  deterministic."""
  if cfg.seed is not None:
    keras.utils.set_random_seed(cfg.seed)
  if cfg.deterministic:
    tf.config.experimental.enable_op_determinism()


# ----------------------------------------------------------------------------
# Strategies
# ----------------------------------------------------------------------------


def _tpu_strategy(cfg: Config) -> tf.distribute.Strategy:
  """TPUStrategy on cfg.tpu; with input_partition_dims, replicas of
  prod(input_partition_dims) cores laid out from the TPU's own topology."""
  name = cfg.tpu or '(none named: TPU_NAME or this TPU VM)'
  stage = 'finding the TPU'
  try:
    resolver = tf.distribute.cluster_resolver.TPUClusterResolver(
        tpu=cfg.tpu or '')
    stage = 'connecting to the TPU'
    tf.config.experimental_connect_to_cluster(resolver)
    stage = 'initialising the TPU system'
    topology = tf.tpu.experimental.initialize_tpu_system(resolver)
  except Exception as e:  # pylint: disable=broad-except
    # ValueError, URLError, OpError, RuntimeError...: whatever the cause, the
    # TPU did not start. Say which TPU and which step, in one line.
    raise StartupError(f'tpu {name}: {stage} failed: {errors.first_line(e)}') from e
  if math.prod(cfg.input_partition_dims or [1]) == 1:
    return tf.distribute.TPUStrategy(resolver)
  # Spatial partitioning: a replica spans prod(input_partition_dims) cores
  # (a block of the mesh derived from its shape), and every input of the
  # replica function is split along the partitioned spatial axes.
  assignment = tpu_topology.device_assignment(
      topology, math.prod(cfg.input_partition_dims))
  return tf.distribute.TPUStrategy(
      resolver, experimental_device_assignment=assignment,
      experimental_spmd_xla_partitioning=cfg.spmd_xla_partitioning)


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


def _gpu_devices(cfg: Config) -> Optional[list[str]]:
  """The GPUs `num_gpus` names (a count, 0 = all, or a list of ids); None
  when the machine has none and none were asked for."""
  gpus = tf.config.list_logical_devices('GPU')
  wanted = cfg.num_gpus
  if isinstance(wanted, list):
    by_id = {int(g.name.rsplit(':', 1)[1]): g.name for g in gpus}
    missing = [i for i in wanted if i not in by_id]
    if missing:
      raise ConfigError(f'num_gpus: GPU ids {missing} are not visible; this '
                        f'machine shows {sorted(by_id) or "no GPUs"}')
    return [by_id[i] for i in wanted]
  if wanted > len(gpus):
    raise ConfigError(f'num_gpus: asked for {wanted} GPUs, this machine has '
                      f'{len(gpus)}')
  if not gpus:
    return None
  return [g.name for g in gpus[:wanted or len(gpus)]]


def build_strategy(cfg: Config, devices: Optional[list[str]] = None,
                   training: bool = True) -> tf.distribute.Strategy:
  """Returns the tf.distribute strategy named by `cfg.distribution_strategy`,
  its batch sizes checked against its replicas (`check_batch_sizes`).

  Args:
    cfg: the run's config (`distribution_strategy`, `num_gpus`, `tpu`,
      `input_partition_dims`, `spmd_xla_partitioning`, batch sizes).
    devices: explicit devices for `mirrored` (tests pass logical CPUs).
    training: check train_batch_size too (evaluation alone does not).

  Raises:
    ConfigError: a key does not fit the devices.
    StartupError: the TPU could not be found, reached or initialised.
  """
  name = strategy_name(cfg)
  if name == 'tpu':
    strategy = _tpu_strategy(cfg)
  elif cfg.input_partition_dims and any(d > 1 for d in
                                        cfg.input_partition_dims):
    raise ConfigError('input_partition_dims: spatial partitioning needs '
                      f"distribution_strategy 'tpu', got '{name}'")
  elif name == 'mirrored':
    if devices is None:
      devices = _gpu_devices(cfg) or [
          d.name for d in tf.config.list_logical_devices('CPU')]
    strategy = mirrored_strategy(devices)
  elif name == 'multi_worker':
    # The cluster comes from the TF_CONFIG environment variable.
    strategy = tf.distribute.MultiWorkerMirroredStrategy()
  elif name == 'cpu':
    strategy = tf.distribute.OneDeviceStrategy('/cpu:0')
  else:
    raise ConfigError(f'distribution_strategy: unknown strategy {name!r}')
  check_batch_sizes(cfg, strategy.num_replicas_in_sync, training=training)
  return strategy


def check_batch_sizes(cfg: Config, num_replicas: int,
                      training: bool = True) -> None:
  """The training batch splits evenly over the replicas (when training).

  Checked as soon as the strategy exists. With TPU spatial partitioning a
  replica is prod(input_partition_dims) cores: a v3-32 split 16 ways has 2
  replicas. eval_batch_size needs no check: evaluation pads a step to a
  multiple of the replicas with masked examples
  (`unet3d.evaluation.evaluator.padded_batch`).
  """
  if training:
    config_lib.check_divisible_by_replicas(
        'train_batch_size', cfg.train_batch_size, num_replicas)


def label_partition_dims(dims: list[int], label_rank: int) -> list[int]:
  """Partition dims for labels: index labels [b, *spatial] have no channel
  entry, one-hot labels [b, *spatial, K] take the images' dims."""
  return list(dims) if label_rank == len(dims) else list(dims[:-1])


def partition_inputs(strategy: tf.distribute.Strategy,
                     dims: Optional[list[int]], images, labels):
  """TPU spatial partitioning of one replica's batch, inside strategy.run.

  images [b, *spatial, C] are split by `dims` over the replica's cores, and
  labels the same way along their spatial axes, so every tensor entering the
  model is split (what the SPMD partitioner requires). Unchanged off TPU or
  without dims.
  """
  if not dims or not isinstance(strategy, tf.distribute.TPUStrategy):
    return images, labels
  images = strategy.experimental_split_to_logical_devices(images, dims)
  labels = strategy.experimental_split_to_logical_devices(
      labels, label_partition_dims(dims, labels.shape.rank))
  return images, labels


def partitioned(predict_fn, strategy: Optional[tf.distribute.Strategy],
                dims: Optional[list[int]]):
  """predict_fn with its input batch [b, *spatial, C] split over the
  replica's TPU cores by `dims` (it runs inside strategy.run, e.g. the
  sliding window's batches); predict_fn itself off TPU or without dims."""
  if not dims or not isinstance(strategy, tf.distribute.TPUStrategy):
    return predict_fn

  def split_then_predict(batch):
    return predict_fn(strategy.experimental_split_to_logical_devices(
        batch, list(dims)))

  return split_then_predict


def check_same_on_every_worker(strategy: tf.distribute.Strategy, value: int,
                               what: str) -> None:
  """Raises ConfigError when the workers of a MultiWorkerMirroredStrategy
  hold different values (e.g. the restored checkpoint step, when model_dir
  is not storage every worker reads). A collective: every worker calls it.
  No-op for single-host strategies, whose replicas share one process."""
  if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
    return

  @tf.function
  def gather():
    per_replica = strategy.run(lambda: tf.constant([value], tf.int64))
    return strategy.gather(per_replica, axis=0)

  values = sorted({int(v) for v in gather().numpy()})
  if len(values) > 1:
    raise ConfigError(f'model_dir: the workers restored different {what}s '
                      f'{values}; every worker must read the same model_dir '
                      '(shared storage such as gs://)')


# ----------------------------------------------------------------------------
# What the model and the training step do under a strategy
# ----------------------------------------------------------------------------


def resolve_sync_batch_norm(cfg: Config, strategy: tf.distribute.Strategy
                           ) -> Config:
  """`cfg` with model.sync_batch_norm decided for `strategy`, and logged.

  None becomes True under MirroredStrategy / MultiWorkerMirroredStrategy
  with several replicas when a replica gets fewer than 4 cases of
  train_batch_size (batch statistics of one volume are meaningless: 8
  cases on 8 GPUs normalise each case with itself), else False. Models
  without batch norm are returned unchanged.
  """
  if blocks.block_spec(cfg).normalization != 'batch':
    return cfg
  replicas = strategy.num_replicas_in_sync
  per_replica = cfg.train_batch_size // max(replicas, 1)
  value = cfg.model.sync_batch_norm
  if value is None:
    mirrored = isinstance(strategy, (tf.distribute.MirroredStrategy,
                                     tf.distribute.MultiWorkerMirroredStrategy))
    value = mirrored and replicas > 1 and per_replica < SYNC_BATCH_NORM_BELOW
    why = (f'default: on for mirrored/multi_worker below '
           f'{SYNC_BATCH_NORM_BELOW} cases per replica')
  else:
    why = 'as configured'
  if replicas > 1:  # one replica has nothing to synchronise
    logging.info('model.sync_batch_norm: %s (%d replicas, %d cases per '
                 'replica; %s)', 'on' if value else 'off', replicas,
                 per_replica, why)
  return dataclasses.replace(
      cfg, model=dataclasses.replace(cfg.model, sync_batch_norm=bool(value)))


def _sync_batch_norm_layers(model: keras.Model) -> list[str]:
  return [layer.name for layer in model._flatten_layers(include_self=False)  # pylint: disable=protected-access
          if isinstance(layer, keras.layers.BatchNormalization)
          and layer.synchronized]


def use_jit_compile(cfg: Config,
                    strategy: Optional[tf.distribute.Strategy] = None,
                    model: Optional[keras.Model] = None) -> bool:
  """Whether the trainer XLA-compiles each replica's forward and backward
  pass: only when `train.jit_compile` asks for it.

  Off by default: on CPU XLA is slower, Keras itself turns automatic XLA off
  under tf.distribute, and under MirroredStrategy only the forward/backward
  pass can be compiled (an XLA cluster cannot reach the other replicas'
  variables, so the all-reduce and update stay outside). Never inside a TPU
  replica function, which XLA compiles as a whole anyway. Dropped with a
  warning when `model` has synchronised batch norm and `strategy` several
  replicas: its all-reduce is a merge_call, which cannot run inside a nested
  tf.function (verified on CPU replicas; not tried on GPUs).
  """
  if not cfg.train.jit_compile:
    return False
  if (strategy_name(cfg) == 'tpu' or
      isinstance(strategy, tf.distribute.TPUStrategy)):
    logging.info('train.jit_compile: ignored on TPU, where XLA compiles the '
                 'whole step')
    return False
  if (strategy is not None and model is not None and
      strategy.num_replicas_in_sync > 1):
    layers = _sync_batch_norm_layers(model)
    if layers:
      logging.warning(
          'train.jit_compile: off, because synchronised batch norm (%d '
          'layers, e.g. %s) all-reduces inside the forward pass; set '
          'model.sync_batch_norm=false to compile it', len(layers), layers[0])
      return False
  return True


# ----------------------------------------------------------------------------
# Workers
# ----------------------------------------------------------------------------


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

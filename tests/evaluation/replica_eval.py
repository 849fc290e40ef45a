"""Tiny cloud recipes evaluated on N logical CPU replicas, for the eval
padding tests (test_eval_padding.py).

The published recipe with its sizes shrunk (16^3, 2 filters, depth 2, no
TPU partitioning); the reports of one device and of a MirroredStrategy over
N logical CPUs. Run as a module to use a device count other than the
2 that tests/conftest.py makes:

  python -m tests.evaluation.replica_eval <replicas> <records> <recipe>:<eval_batch_size>...

prints one `RESULT {json}` line: {"<recipe>:<batch>": true when the N-replica
report equals the one-device one}.
"""

import json
import os
import pathlib
import sys

REPO = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
# Report keys that name files or folders rather than scores.
_PATH_KEYS = ('report_dir', 'report_files')


def tiny_cloud_config(recipe: str, records: pathlib.Path, **override):
  """configs/cloud/<recipe> at test size, reading runs.make_records'
  validation shard; `override` applies last."""
  from unet3d import config  # pylint: disable=g-import-not-at-top
  from tests import runs  # pylint: disable=g-import-not-at-top
  cfg = config.build_config(os.path.join(REPO, 'configs', 'cloud', recipe))
  cfg = config.merge(cfg, {
      'model_dir': '', 'eval_file_pattern': str(records / 'val-*'),
      'input_image_size': [runs.SIZE] * 3, 'input_partition_dims': None,
      'num_classes': 4, 'num_base_filters': 2, 'depth': 2, 'seed': 0,
      'data': {'eval_image_size': [runs.SIZE] * 3},
      'metrics': {'overlays': False}})
  cfg = config.merge(cfg, override)
  config.validate(cfg)
  return cfg


def evaluate_on(cfg, devices):
  """The evaluator's report (scores only) of a seeded model on `devices`
  (one: OneDeviceStrategy; more: MirroredStrategy)."""
  import keras  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from unet3d import distribute  # pylint: disable=g-import-not-at-top
  from unet3d import models  # pylint: disable=g-import-not-at-top
  from unet3d.evaluation import evaluator  # pylint: disable=g-import-not-at-top
  strategy = (tf.distribute.OneDeviceStrategy(devices[0]) if len(devices) == 1
              else distribute.mirrored_strategy(devices))
  keras.utils.set_random_seed(0)
  with strategy.scope():
    model = models.build_model(cfg)
  report = evaluator.evaluate(cfg, strategy=strategy, model=model, step=0)
  return {k: v for k, v in report.items() if k not in _PATH_KEYS}


def main(argv):
  replicas, records = int(argv[1]), pathlib.Path(argv[2])
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  tf.config.set_logical_device_configuration(
      tf.config.list_physical_devices('CPU')[0],
      [tf.config.LogicalDeviceConfiguration()] * replicas)
  devices = [f'/cpu:{i}' for i in range(replicas)]
  result, reference = {}, {}
  for item in argv[3:]:
    recipe, batch = item.split(':')
    cfg = tiny_cloud_config(recipe, records, eval_batch_size=int(batch))
    if recipe not in reference:
      reference[recipe] = evaluate_on(cfg, devices[:1])
    result[item] = evaluate_on(cfg, devices) == reference[recipe]
  print('RESULT ' + json.dumps(result))


if __name__ == '__main__':
  main(sys.argv)

r"""The pictures of docs/, made from a reduced demo run (no hand drawing).

  python -m unet3d.examples.docs_figures [--work_dir=docs_figures_run]
  python scripts/make_docs_figures.py        # the same

Writes into docs/images/ of this checkout (`--images_dir`):

- `data_flow.mmd`: the data flow as a Mermaid diagram (docs/development.md
  holds the same text between its GENERATED markers, rewritten here too);
- `prediction_overlay.png`: a held-out synthetic case, label and prediction
  contours (unet3d/evaluation/overlays.py, as eval writes them);
- `training_curve.png`: training loss and learning rate against the step,
  read from the run's TensorBoard events;
- `planned_patch.png`: the patch `--mode=plan` chose, drawn as a box over
  the middle slices of the median-size case of the records.

The run is a reduced demo: `--num_cases` (12) synthetic cases, the demo
recipe for `--train_steps` (150) steps; about two minutes on two cores.
The data is synthetic, not medical data.
"""

import os
import re
import shutil

from unet3d import errors
from unet3d import startup

startup.prepare_environment()  # before TensorFlow is imported

from absl import app  # pylint: disable=g-import-not-at-top
from absl import flags

from unet3d import recipes  # pylint: disable=g-import-not-at-top

REPO = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))

flags.DEFINE_string('work_dir', 'docs_figures_run',
                    'Where the synthetic task, records, plan and run go.')
flags.DEFINE_string('images_dir', os.path.join(REPO, 'docs', 'images'),
                    'Where the pictures go.')
flags.DEFINE_integer('num_cases', 12, 'Synthetic cases to make.')
flags.DEFINE_integer('train_steps', 150, 'Training steps of the demo recipe.')
flags.DEFINE_string('budget', 'cpu2', 'The plan budget whose patch is drawn.')
FLAGS = flags.FLAGS

# The data flow: (from, via, to). One module per arrow, as in STYLE.md.
DATA_FLOW = (
    ('NIfTI / HDF5 / npy', 'unet3d-convert<br/>unet3d/preprocess',
     'TFRecords + dataset.json'),
    ('TFRecords + dataset.json', 'unet3d --mode=plan<br/>unet3d/planning',
     'plan_&lt;budget&gt;.yaml'),
    ('TFRecords + dataset.json', 'unet3d/input<br/>parse, patch, augment, batch',
     'batches'),
    ('batches', 'unet3d/models', 'logits'),
    ('logits', 'unet3d/losses<br/>unet3d/training', 'checkpoints + params.yaml'),
    ('checkpoints + params.yaml', 'unet3d/inference<br/>sliding window',
     'probabilities'),
    ('probabilities', 'unet3d/evaluation', 'reports: JSON, CSV, PNG'),
    ('probabilities', 'unet3d/inference/predict', 'NIfTI on the input grid'),
    ('checkpoints + params.yaml', 'unet3d/inference/export', 'SavedModel'),
)
MERMAID_BEGIN = '<!-- BEGIN GENERATED: data flow (unet3d/examples/docs_figures.py) -->'
MERMAID_END = '<!-- END GENERATED: data flow -->'


def mermaid() -> str:
  """The DATA_FLOW as a Mermaid flowchart (left to right)."""
  names = {}
  for source, _, target in DATA_FLOW:
    for node in (source, target):
      names.setdefault(node, f'n{len(names)}')
  lines = ['flowchart LR']
  lines += [f'  {key}["{node}"]' for node, key in names.items()]
  lines += [f'  {names[s]} -- "{via}" --> {names[t]}'
            for s, via, t in DATA_FLOW]
  return '\n'.join(lines) + '\n'


def mermaid_block() -> str:
  return f'{MERMAID_BEGIN}\n```mermaid\n{mermaid()}```\n{MERMAID_END}'


def replace_mermaid_block(text: str, where: str) -> str:
  start, end = text.find(MERMAID_BEGIN), text.find(MERMAID_END)
  if start < 0 or end < 0:
    raise ValueError(f'{where}: markers {MERMAID_BEGIN!r} ... {MERMAID_END!r} '
                     'not found')
  return text[:start] + mermaid_block() + text[end + len(MERMAID_END):]


def _events(train_dir: str) -> dict[str, list[tuple[int, float]]]:
  """{tag: [(step, value)]} of the scalar summaries in train_dir."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  out = {}
  for path in sorted(tf.io.gfile.glob(os.path.join(train_dir, 'events.*'))):
    for record in tf.data.TFRecordDataset(path):
      event = tf.compat.v1.Event.FromString(record.numpy())
      for value in event.summary.value:
        if value.HasField('tensor'):
          array = tf.make_ndarray(value.tensor)
          if array.size != 1 or array.dtype.kind not in 'fiu':
            continue  # images, text
          number = float(array.reshape(()))
        else:
          number = value.simple_value
        out.setdefault(value.tag, []).append((event.step, number))
  return out


def training_curve(train_dir: str, path: str) -> None:
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  from matplotlib import pyplot as plt  # pylint: disable=g-import-not-at-top
  series = _events(train_dir)
  loss_tag = next(t for t in series if re.search(r'loss', t))
  fig, ax = plt.subplots(figsize=(6, 3.2), dpi=100)
  steps, values = zip(*sorted(series[loss_tag]))
  ax.plot(steps, values, color='tab:blue', label=loss_tag)
  ax.set_xlabel('step')
  ax.set_ylabel('training loss (dice + CE)')
  lr_tag = next((t for t in series if 'learning_rate' in t), None)
  if lr_tag:
    twin = ax.twinx()
    s, v = zip(*sorted(series[lr_tag]))
    twin.plot(s, v, color='tab:orange', linestyle='--', label=lr_tag)
    twin.set_ylabel('learning rate', color='tab:orange')
  ax.set_title('Reduced demo: configs/demo.yaml on synthetic volumes')
  fig.tight_layout()
  fig.savefig(path)
  plt.close(fig)


def planned_patch(records_dir: str, plan: dict, path: str) -> None:
  """The planned patch as a box over the middle slices of the median case."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import numpy as np  # pylint: disable=g-import-not-at-top
  from matplotlib import patches  # pylint: disable=g-import-not-at-top
  from matplotlib import pyplot as plt  # pylint: disable=g-import-not-at-top
  from unet3d import fileio  # pylint: disable=g-import-not-at-top
  from unet3d.input import schema  # pylint: disable=g-import-not-at-top
  from unet3d.planning import fingerprint  # pylint: disable=g-import-not-at-top

  fp = fingerprint.read(records_dir)
  sizes = [int(np.prod(c.stored_shape)) for c in fp.cases]
  median_case = fp.cases[int(np.argsort(sizes)[len(sizes) // 2])]
  volume = None
  for shard in sorted(fileio.glob(os.path.join(records_dir, '*.tfrecord'))):
    for record in schema.read_records(shard, fp.compressed):
      candidate = schema.decode_volume(record)
      if candidate.case_id == median_case.case_id:
        volume = candidate
        break
    if volume is not None:
      break
  if volume is None:
    raise ValueError(f'{records_dir}: case {median_case.case_id} not in the '
                     'records')
  patch = [int(v) for v in plan['input_image_size']]
  image = volume.image[..., 0]
  spacing = [float(s) for s in volume.spacing]
  fig, axes = plt.subplots(1, 3, figsize=(9, 3.4), dpi=90)
  for axis, ax in enumerate(axes):
    middle = image.shape[axis] // 2
    plane = np.take(image, middle, axis=axis)
    rows, cols = [a for a in range(3) if a != axis]
    ax.imshow(plane.T, cmap='gray', origin='lower',
              aspect=spacing[cols] / spacing[rows])
    width, height = patch[rows], patch[cols]
    x0 = (image.shape[rows] - width) / 2 - 0.5
    y0 = (image.shape[cols] - height) / 2 - 0.5
    ax.add_patch(patches.Rectangle((x0, y0), width, height, fill=False,
                                   edgecolor='yellow', linewidth=2))
    ax.set_title(f'axis {axis} middle slice\npatch {width}x{height} of '
                 f'{image.shape[rows]}x{image.shape[cols]}', fontsize=9)
    ax.set_axis_off()
  fig.suptitle(f'{FLAGS.budget} plan: patch {"x".join(map(str, patch))}, '
               f'median case {median_case.case_id} '
               f'{"x".join(map(str, image.shape))}', fontsize=10)
  fig.tight_layout()
  fig.savefig(path)
  plt.close(fig)


def main(argv):
  del argv
  startup.import_tensorflow()
  # pylint: disable=g-import-not-at-top
  from unet3d import config
  from unet3d import fileio
  from unet3d.planning import run as plan_run
  from unet3d.preprocess import datasets
  from unet3d.preprocess import synthetic
  from unet3d.training import trainer
  # pylint: enable=g-import-not-at-top

  os.makedirs(FLAGS.images_dir, exist_ok=True)
  with open(os.path.join(FLAGS.images_dir, 'data_flow.mmd'), 'w') as f:
    f.write(mermaid())
  development = os.path.join(REPO, 'docs', 'development.md')
  if os.path.exists(development):
    text = fileio.read_text(development)
    fileio.write_text(development, replace_mermaid_block(text, development))

  task_dir = os.path.join(FLAGS.work_dir, 'Task00_SyntheticDemo')
  records_dir = os.path.join(FLAGS.work_dir, 'tfrecords')
  model_dir = os.path.join(FLAGS.work_dir, 'model')
  for folder in (task_dir, model_dir):
    if os.path.isdir(folder):
      shutil.rmtree(folder)
  print(f'[1/4] {FLAGS.num_cases} synthetic cases -> {records_dir}')
  synthetic.write_demo_decathlon_task(task_dir, num_cases=FLAGS.num_cases,
                                      seed=0)
  datasets.convert_decathlon(task_dir, records_dir, overwrite=True,
                             num_shards=2, validation_fraction=0.25, seed=0)

  print(f'[2/4] --mode=plan --budget={FLAGS.budget}')
  planned = plan_run.plan_dataset(records_dir, FLAGS.budget)
  planned_patch(records_dir, planned['values'],
                os.path.join(FLAGS.images_dir, 'planned_patch.png'))

  print(f'[3/4] training configs/demo.yaml for {FLAGS.train_steps} steps')
  cfg = config.build_config(
      recipes.recipe('demo.yaml'),
      f'train_steps={FLAGS.train_steps},train.summary_every_n_steps=5,'
      'train.checkpoint_every_n_steps=1000',
      {'model_dir': model_dir,
       'training_file_pattern': os.path.join(records_dir, 'train-*'),
       'eval_file_pattern': os.path.join(records_dir, 'val-*')})
  report = trainer.train_and_evaluate(cfg)
  print(f'mean foreground dice {report["mean_foreground_dice"]:.3f}')

  print('[4/4] pictures')
  training_curve(os.path.join(model_dir, 'train'),
                 os.path.join(FLAGS.images_dir, 'training_curve.png'))
  overlays = sorted(fileio.glob(os.path.join(model_dir, 'eval', 'overlays',
                                             '*.png')))
  if not overlays:
    raise ValueError(f'{model_dir}/eval/overlays: no overlay written')
  shutil.copyfile(overlays[0], os.path.join(FLAGS.images_dir,
                                            'prediction_overlay.png'))
  for name in sorted(os.listdir(FLAGS.images_dir)):
    size = os.path.getsize(os.path.join(FLAGS.images_dir, name))
    print(f'  {name}: {size / 1024:.0f} KB')


def run_main() -> None:
  app.run(errors.one_line_errors(main))


if __name__ == '__main__':
  run_main()

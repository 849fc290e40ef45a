r"""A Medical Segmentation Decathlon task folder -> TFRecords.

  python data_preprocess/convert_decathlon.py \
      --input_path=/data/Task02_Heart --output_path=/data/heart_tfrecords \
      --num_processes=4 --num_folds=5 --fold=0

Modalities and labels come from the task's dataset.json; 4D images become
channels. CT channels are clipped to the foreground [0.5, 99.5] percentiles
(or --ct_window) and z-scored with dataset statistics; MRI channels are
z-scored per image (--nonzero_mask: within the nonzero mask).
"""

from absl import flags

import common_flags

flags.DEFINE_string('input_path', None, 'The task folder (dataset.json, '
                    'imagesTr/, labelsTr/).')
flags.DEFINE_bool('nonzero_mask', False, 'Z-score MRI channels within the '
                  'nonzero mask (zero outside).')
flags.DEFINE_string('ct_window', None, 'low,high: clip CT channels to this '
                    'window instead of the foreground percentiles.')
common_flags.define_convert_flags()
flags.mark_flag_as_required('input_path')
flags.adopt_module_key_flags(common_flags)
FLAGS = flags.FLAGS


def run_conversion():
  from unet3d.preprocess import datasets  # pylint: disable=g-import-not-at-top
  return datasets.convert_decathlon(
      FLAGS.input_path, FLAGS.output_path, nonzero_mask=FLAGS.nonzero_mask,
      ct_window=common_flags.parse_floats(FLAGS.ct_window, 'ct_window', 2),
      progress=common_flags.progress_bar(), **common_flags.convert_options())


if __name__ == '__main__':
  common_flags.run(run_conversion)

r"""BraTS case folders -> 4-channel TFRecords.

  python data_preprocess/convert_brats.py \
      --input_path=/data/MICCAI_BraTS2020_TrainingData \
      --output_path=/data/brats_tfrecords --num_processes=4 [--regions]

Each case folder holds <case>_t1, _t1ce, _t2, _flair and _seg NIfTI files.
Labels {0, 1, 2, 4} become {0, 1, 2, 3}; --regions stores three binary
masks (whole tumour, tumour core, enhancing tumour) for sigmoid training.
Each channel is z-scored within the brain (nonzero) mask, and volumes are
cropped to the nonzero bounding box.
"""

from absl import flags

import common_flags

flags.DEFINE_string('input_path', None, 'Folder of BraTS case folders.')
flags.DEFINE_list('modalities', ['t1', 't1ce', 't2', 'flair'],
                  'Channels, in this order.')
flags.DEFINE_bool('regions', False, 'Store WT/TC/ET binary masks instead of '
                  'class indices.')
common_flags.define_convert_flags()
flags.mark_flag_as_required('input_path')
flags.adopt_module_key_flags(common_flags)
FLAGS = flags.FLAGS


def run_conversion():
  from unet3d.preprocess import datasets  # pylint: disable=g-import-not-at-top
  return datasets.convert_brats(
      FLAGS.input_path, FLAGS.output_path, modalities=FLAGS.modalities,
      regions=FLAGS.regions, progress=common_flags.progress_bar(),
      **common_flags.convert_options())


if __name__ == '__main__':
  common_flags.run(run_conversion)

r"""BraTS case folders -> 4-channel TFRecords.

  unet3d-convert brats \
      --input_path=/data/MICCAI_BraTS2020_TrainingData \
      --output_path=/data/brats_tfrecords --num_processes=4 [--regions]

  # NVIDIA UNet_3D_Medical's command line works too (BraTS 2019 HGG/LGG):
  unet3d-convert brats -i /data/MICCAI_BraTS_2019_Data_Training \
      -o /data/brats_tfrecords -v --vol_per_file 2

Layouts: BraTS 2018/2019 `HGG/` and `LGG/` of case folders, BraTS 2020/2021
case folders (`BraTS20_Training_001/BraTS20_Training_001_t1.nii.gz`,
`BraTS2021_00000/...`), and the 2023 naming (`-t1n`, `-t1c`, `-t2w`, `-t2f`,
`-seg`). Labels {0, 1, 2, 4} become {0, 1, 2, 3}; --regions stores three
binary masks (whole tumour, tumour core, enhancing tumour) for sigmoid
training. Each channel is z-scored within the brain (nonzero) mask, and
volumes are cropped to the nonzero bounding box.
"""

import sys

from absl import flags

from unet3d.cli.convert import common_flags

flags.DEFINE_string('input_path', None, 'Folder of BraTS case folders (or '
                    'of HGG/ and LGG/).')
flags.DEFINE_list('modalities', ['t1', 't1ce', 't2', 'flair'],
                  'Channels, in this order.')
flags.DEFINE_bool('regions', False, 'Store WT/TC/ET binary masks instead of '
                  'class indices.')
flags.DEFINE_bool('single_data_dir', False, 'The input folder holds the case '
                  'folders directly; do not look into HGG/ and LGG/.')
flags.DEFINE_bool('verbose', False, 'List every stored case (NVIDIA: -v).')
common_flags.define_convert_flags()
flags.mark_flag_as_required('input_path')
# NVIDIA UNet_3D_Medical's names: -i/--input_dir, -o/--output_dir.
flags.DEFINE_alias('input_dir', 'input_path')
flags.DEFINE_alias('i', 'input_path')
flags.DEFINE_alias('output_dir', 'output_path')
flags.DEFINE_alias('o', 'output_path')
flags.DEFINE_alias('vol_per_file', 'cases_per_shard')
flags.adopt_module_key_flags(common_flags)
FLAGS = flags.FLAGS


def run_conversion():
  from unet3d.preprocess import datasets  # pylint: disable=g-import-not-at-top
  options = common_flags.convert_options()
  return datasets.convert_brats(
      FLAGS.input_path, FLAGS.output_path, modalities=FLAGS.modalities,
      regions=FLAGS.regions, single_data_dir=FLAGS.single_data_dir,
      progress=common_flags.progress_bar(), **options)


def main(argv=None) -> None:
  """Runs the converter on argv (default sys.argv; argv[0] is the program)."""
  argv = common_flags.bare_flag_to(argv or sys.argv, 'v', 'verbose')
  common_flags.run(run_conversion, argv=argv, verbose_flag='verbose')


if __name__ == '__main__':
  main()

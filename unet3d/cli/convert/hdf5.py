r"""pytorch-3dunet HDF5 files (/raw, /label) -> TFRecords.

  unet3d-convert hdf5 --input_path=/data/train_h5 \
      --output_path=/data/h5_tfrecords --spacing=0.29,0.11,0.11

/raw is (Z, Y, X) or (C, Z, Y, X); /label is (Z, Y, X) class indices or
(K, Z, Y, X) binary masks. Arrays keep the (Z, Y, X) order; the spacing
comes from --spacing, the raw dataset's element_size_um, or 1 mm.
"""

from absl import flags

from unet3d.cli.convert import common_flags

flags.DEFINE_string('input_path', None, 'A folder of .h5/.hdf5 files, a '
                    'glob pattern, or one file.')
flags.DEFINE_string('raw_key', 'raw', 'The image dataset.')
flags.DEFINE_string('label_key', 'label', 'The label dataset.')
flags.DEFINE_string('spacing', None, 'Voxel size z,y,x in mm.')
flags.DEFINE_list('class_names', None, 'Names of classes 0..K-1 (or of the '
                  'K mask channels); other label values are an error.')
flags.DEFINE_enum('normalization', 'zscore', ['zscore', 'none'],
                  'Per-image, per-channel z-score, or none.')
common_flags.define_convert_flags()
flags.mark_flag_as_required('input_path')
flags.adopt_module_key_flags(common_flags)
FLAGS = flags.FLAGS


def run_conversion():
  from unet3d.preprocess import datasets  # pylint: disable=g-import-not-at-top
  return datasets.convert_hdf5(
      FLAGS.input_path, FLAGS.output_path, raw_key=FLAGS.raw_key,
      label_key=FLAGS.label_key,
      spacing=common_flags.parse_floats(FLAGS.spacing, 'spacing', 3),
      class_names=FLAGS.class_names, normalization=FLAGS.normalization,
      progress=common_flags.progress_bar(), **common_flags.convert_options())


def main(argv=None) -> None:
  """Runs the converter on argv (default sys.argv; argv[0] is the program)."""
  common_flags.run(run_conversion, argv=argv)


if __name__ == '__main__':
  main()

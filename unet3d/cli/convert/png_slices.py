r"""The UNet 3+ repository's LiTS PNG slices -> 2D TFRecords.

  unet3d-convert png_slices --input_path=<UNet-3-Plus>/data \
      --output_path=/data/lits_png_2d

Reads `images/image_<volume>_<slice>.png` (3 channels: the slice and its
neighbours) with `mask/mask_<volume>_<slice>.png` (0 background, 1 liver),
in --input_path or its train/ and val/ folders. Images are scaled to 0..1
(the repository's /255); records `volume-<v>#z<kkkk>`; volumes are split
into train/val whole (--validation_fraction), never their slices.
"""

from absl import flags

from unet3d.cli.convert import common_flags

flags.DEFINE_string('input_path', None, 'The folder with images/ and mask/ '
                    '(or train/ and val/ of them).', short_name='i')
flags.DEFINE_list('label_names', ['background', 'liver'], 'Names of the '
                  'mask values 0, 1, ...')
flags.mark_flag_as_required('input_path')
common_flags.define_convert_flags()
flags.adopt_module_key_flags(common_flags)
FLAGS = flags.FLAGS


def run_conversion():
  from unet3d.preprocess import datasets  # pylint: disable=g-import-not-at-top
  options = common_flags.convert_options()
  for key in ('target_spacing', 'reorient', 'crop_nonzero'):
    options.pop(key, None)  # PNG slices have no geometry to change
  return datasets.convert_png_slices(
      FLAGS.input_path, FLAGS.output_path, label_names=FLAGS.label_names,
      progress=common_flags.progress_bar(), **options)


def main(argv=None) -> None:
  """Runs the converter on argv (default sys.argv; argv[0] is the program)."""
  common_flags.run(run_conversion, argv=argv)


if __name__ == '__main__':
  main()

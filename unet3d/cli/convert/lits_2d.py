r"""LiTS CT volumes -> 2D axial-slice TFRecords for 2D models (UNet 3+).

  unet3d-convert lits_2d \
      --image_file_pattern=/data/LiTS/volume-{}.nii \
      --label_file_pattern=/data/LiTS/segmentation-{}.nii \
      --output_path=/data/lits_2d --num_processes=4 [--skip_empty_slices]

As the UNet 3+ repository prepares LiTS: CT clipped to the HU window
(default -200..250), each axial slice resized to --slice_size^2 (320) and
stacked with its lower and upper neighbours as 3 channels
(--context_slices=1); --label_map=liver merges tumour into liver as it
does (default liver_tumour: {0 background, 1 liver, 2 tumour}). Unlike
it, intensities are z-scored with the dataset's foreground statistics (not
scaled to 0..255 per slice), and slices stay in their case's
train/val split. --skip_empty_slices drops training slices without liver.
Records are named `volume-N#zKKKK`; train a model with
`model.spatial_dims: 2` and `num_channels: 3` on them
(configs/lits/unet3plus_2d.yaml).
"""

from absl import flags

from unet3d.cli.convert import common_flags

common_flags.define_lits_flags()
flags.DEFINE_integer('slice_size', 320, 'Resize each slice in-plane to this '
                     'many pixels per side; 0 keeps the scan grid.')
flags.DEFINE_integer('context_slices', 1, 'Neighbour slices on each side '
                     'stacked as channels (1: 3 channels, as UNet 3+).')
flags.DEFINE_bool('skip_empty_slices', False, 'Drop training slices without '
                  'any liver or tumour label.')
common_flags.define_convert_flags()
# Slices keep the scan's grid unless asked (UNet 3+ does not resample).
flags.FLAGS.set_default('target_spacing', 'original')
flags.adopt_module_key_flags(common_flags)
FLAGS = flags.FLAGS


def run_conversion():
  from unet3d.preprocess import datasets  # pylint: disable=g-import-not-at-top
  return datasets.convert_lits_2d(
      FLAGS.image_file_pattern, FLAGS.label_file_pattern, FLAGS.output_path,
      hu_window=common_flags.hu_window(), slice_size=FLAGS.slice_size,
      context_slices=FLAGS.context_slices,
      skip_empty_slices=FLAGS.skip_empty_slices,
      shard_start=FLAGS.shard_start, shard_stride=FLAGS.shard_stride,
      label_map=FLAGS.label_map, progress=common_flags.progress_bar(), **common_flags.convert_options())


def main(argv=None) -> None:
  """Runs the converter on argv (default sys.argv; argv[0] is the program)."""
  common_flags.run(run_conversion, argv=argv)


if __name__ == '__main__':
  main()

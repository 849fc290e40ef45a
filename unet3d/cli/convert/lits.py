r"""LiTS CT volumes -> TFRecords (the Model Garden's flags, its defects fixed).

  unet3d-convert lits \
      --image_file_pattern=/data/LiTS/Train/volume-{}.nii \
      --label_file_pattern=/data/LiTS/Train/segmentation-{}.nii \
      --output_path=/data/lits_tfrecords --num_processes=4

Inputs are .nii, .nii.gz, or .npy from `unet3d-convert lits_nii_to_npy`.
Versus the Model Garden script: CT is clipped to --hu_window (default -200..250 HU,
as UNet 3+) and z-scored; volumes are resampled to a spacing (the dataset
median by default) rather than squashed to a cube, and the stored spacing
and affine describe the stored array; labels are class indices in both
modes (the pipeline one-hots them when a loss needs it); output shards are
train-*.tfrecord / val-*.tfrecord.

--crop_liver_region crops each case to its liver box grown to at least
--output_size voxels per axis; --apply_data_aug adds --augment_times random
--output_size^3 crops per training case with the Model Garden's intensity
scaling; --resize_size=N resizes every volume to N^3 voxels instead of
resampling to a spacing (the Model Garden's behaviour, spacing recorded).
"""

from absl import flags

from unet3d.cli.convert import common_flags

common_flags.define_lits_flags()
flags.DEFINE_bool('crop_liver_region', True, 'Crop each case to its liver '
                  'region (at least --output_size voxels per axis).')
flags.DEFINE_bool('apply_data_aug', False, 'Add --augment_times augmented '
                  'random crops per training case.')
flags.DEFINE_integer('augment_times', 8, 'Augmented crops per training case '
                     'with --apply_data_aug.')
flags.DEFINE_integer('output_size', 128, 'Liver crops are at least this many '
                     'voxels per axis; size of augmented crops.')
flags.DEFINE_integer('resize_size', 0, '> 0: resize each volume to this many '
                     'voxels per axis instead of resampling to '
                     '--target_spacing.')
common_flags.define_convert_flags()
flags.adopt_module_key_flags(common_flags)
FLAGS = flags.FLAGS


def run_conversion():
  from unet3d.preprocess import datasets  # pylint: disable=g-import-not-at-top
  options = common_flags.convert_options()
  if FLAGS.resize_size < 0:
    raise ValueError(f'--resize_size: must be >= 0, got {FLAGS.resize_size}')
  if FLAGS.resize_size:
    options['target_shape'] = [FLAGS.resize_size] * 3
  return datasets.convert_lits(
      FLAGS.image_file_pattern, FLAGS.label_file_pattern, FLAGS.output_path,
      hu_window=common_flags.hu_window(), crop_liver_region=FLAGS.crop_liver_region,
      output_size=FLAGS.output_size, apply_data_aug=FLAGS.apply_data_aug,
      augment_times=FLAGS.augment_times, shard_start=FLAGS.shard_start,
      shard_stride=FLAGS.shard_stride, label_map=FLAGS.label_map,
      progress=common_flags.progress_bar(),
      **options)


def main(argv=None) -> None:
  """Runs the converter on argv (default sys.argv; argv[0] is the program)."""
  common_flags.run(run_conversion, argv=argv)


if __name__ == '__main__':
  main()

r"""LiTS .nii -> .npy, keeping the geometry (run once; optional).

  unet3d-convert lits_nii_to_npy \
      --input_path=/data/LiTS/Train --output_path=/data/LiTS/Train_np \
      --num_processes=4

Writes volume-N.npy (the file's dtype) and segmentation-N.npy (uint8), each
with a volume-N.json / segmentation-N.json sidecar holding the affine and
spacing, which `unet3d-convert lits` reads; that command reads .nii and
.nii.gz directly too, so this step is only for users of the Model Garden
flow.
"""

from absl import flags

from unet3d.cli.convert import common_flags

flags.DEFINE_string('input_path', None, 'Folder with volume-N.nii[.gz] and '
                    'segmentation-N.nii[.gz].')
common_flags.define_output_flags()
flags.mark_flag_as_required('input_path')
flags.adopt_module_key_flags(common_flags)
FLAGS = flags.FLAGS


def run_conversion():
  from unet3d.preprocess import datasets  # pylint: disable=g-import-not-at-top
  return datasets.convert_lits_to_npy(
      FLAGS.input_path, FLAGS.output_path, num_processes=FLAGS.num_processes,
      overwrite=FLAGS.overwrite, on_error=FLAGS.on_error,
      progress=common_flags.progress_bar())


def main(argv=None) -> None:
  """Runs the converter on argv (default sys.argv; argv[0] is the program)."""
  common_flags.run(run_conversion, argv=argv)


if __name__ == '__main__':
  main()

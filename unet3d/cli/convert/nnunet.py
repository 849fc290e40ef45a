r"""An nnU-Net raw dataset -> TFRecords.

  unet3d-convert nnunet \
      --input_path=$nnUNet_raw/Dataset004_Hippocampus \
      --output_path=/data/hippocampus_tfrecords --num_processes=4

v2 folders (`DatasetXXX_Name`: dataset.json with channel_names, labels,
numTraining, file_ending) list their cases in imagesTr/ as
`<case>_0000.nii.gz`, `<case>_0001.nii.gz`, ... (one file per channel) with
`labelsTr/<case>.nii.gz`; v1 folders (`TaskXXX_Name`: the Decathlon's
dataset.json with modality and training) are read too. file_ending must be
.nii.gz or .nii. Channels named "CT" get CT normalisation (clip to the
foreground [0.5, 99.5] percentiles or --ct_window, dataset z-score),
"noNorm" none, all others a per-image z-score, as in nnU-Net: within the
nonzero mask when the cases have a zero background (--nonzero_mask /
--nononzero_mask force it).

Region labels (v2 `labels` values that are lists, e.g. "whole tumor":
[1, 2, 3]) are stored as one binary mask per region, for
model.output_activation: sigmoid; dataset.json records the regions and
regions_class_order. imagesTs/ is not converted: predict reads it directly
(`_0000` channel files are grouped into one case).
"""

from absl import flags

from unet3d.cli.convert import common_flags

flags.DEFINE_string('input_path', None, 'The nnU-Net raw dataset folder '
                    '(dataset.json, imagesTr/, labelsTr/).')
common_flags.define_task_folder_flags()
common_flags.define_convert_flags()
flags.mark_flag_as_required('input_path')
flags.adopt_module_key_flags(common_flags)
FLAGS = flags.FLAGS


def run_conversion():
  from unet3d.preprocess import datasets  # pylint: disable=g-import-not-at-top
  return datasets.convert_nnunet(
      FLAGS.input_path, FLAGS.output_path, nonzero_mask=FLAGS.nonzero_mask,
      ct_window=common_flags.parse_floats(FLAGS.ct_window, 'ct_window', 2),
      multi_label=FLAGS.multi_label,
      allow_outside_paths=FLAGS.allow_outside_paths,
      progress=common_flags.progress_bar(), **common_flags.convert_options())


def main(argv=None) -> None:
  """Runs the converter on argv (default sys.argv; argv[0] is the program)."""
  common_flags.run(run_conversion, argv=argv)


if __name__ == '__main__':
  main()

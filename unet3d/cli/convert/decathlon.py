r"""A Medical Segmentation Decathlon task folder -> TFRecords.

  unet3d-convert decathlon \
      --input_path=/data/Task02_Heart --output_path=/data/heart_tfrecords \
      --num_processes=4 --num_folds=5 --fold=0

  # Intel's 3D U-Net recipe: FLAIR only, labels 1-3 merged (whole tumour),
  # one binary mask for a sigmoid model
  unet3d-convert decathlon \
      --input_path=/data/Task01_BrainTumour --output_path=/data/wt_records \
      --modalities=FLAIR --label_map=1:1,2:1,3:1 \
      --label_names=background,whole_tumor --multi_label

Modalities and labels come from the task's dataset.json; 4D images become
channels (--modalities keeps some, by name or index). CT channels are
clipped to the foreground [0.5, 99.5] percentiles (or --ct_window) and
z-scored with dataset statistics; MRI channels are z-scored per image,
within the nonzero mask when the cases have a zero background (nnU-Net's
rule; --nonzero_mask / --nononzero_mask force it).
"""

from absl import flags

from unet3d.cli.convert import common_flags

flags.DEFINE_string('input_path', None, 'The task folder (dataset.json, '
                    'imagesTr/, labelsTr/).')
flags.DEFINE_list('modalities', None, 'Keep only these channels, by their '
                  'dataset.json name (case-insensitive) or index, e.g. FLAIR.')
flags.DEFINE_string('label_map', None, 'old:new label merges, e.g. '
                    '1:1,2:1,3:1 (whole tumour); other labels keep their '
                    'value. New labels must be 0..K-1.')
flags.DEFINE_list('label_names', None, 'Names of the new labels 0..K-1 '
                  '(default: merged names joined by +).')
common_flags.define_task_folder_flags()
common_flags.define_convert_flags()
flags.mark_flag_as_required('input_path')
flags.adopt_module_key_flags(common_flags)
FLAGS = flags.FLAGS


def run_conversion():
  from unet3d.preprocess import datasets  # pylint: disable=g-import-not-at-top
  return datasets.convert_decathlon(
      FLAGS.input_path, FLAGS.output_path, nonzero_mask=FLAGS.nonzero_mask,
      ct_window=common_flags.parse_floats(FLAGS.ct_window, 'ct_window', 2),
      modalities=FLAGS.modalities,
      label_map=common_flags.parse_label_map(FLAGS.label_map),
      label_names=FLAGS.label_names, multi_label=FLAGS.multi_label,
      allow_outside_paths=FLAGS.allow_outside_paths,
      progress=common_flags.progress_bar(), **common_flags.convert_options())


def main(argv=None) -> None:
  """Runs the converter on argv (default sys.argv; argv[0] is the program)."""
  common_flags.run(run_conversion, argv=argv)


if __name__ == '__main__':
  main()

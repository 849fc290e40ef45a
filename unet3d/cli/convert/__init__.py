"""`unet3d-convert <dataset> [--flags]`: one command over the converters.

  unet3d-convert decathlon --input_path=/data/Task02_Heart \
      --output_path=/data/heart_tfrecords --num_processes=4
  unet3d-convert brats -i /data/MICCAI_BraTS_2019_Data_Training -o /data/brats
  unet3d-convert lits --help      # one converter's flags

Each dataset is a module here (decathlon.py, ...) that defines its flags when
imported, so only the chosen one is imported. data_preprocess/convert_*.py
run the same modules with the same flags.
"""

import importlib
import sys

# Subcommand -> what it converts (the module of the same name).
CONVERTERS = {
    'decathlon': 'a Medical Segmentation Decathlon task folder -> TFRecords',
    'brats': 'BraTS case folders -> 4-channel TFRecords',
    'lits': 'LiTS CT volumes -> TFRecords',
    'lits_2d': 'LiTS CT volumes -> 2D axial-slice TFRecords (UNet 3+)',
    'png_slices': "the UNet 3+ repo's LiTS PNG slices -> 2D TFRecords",
    'lits_nii_to_npy': 'LiTS .nii -> .npy with geometry sidecars (optional)',
    'hdf5': 'pytorch-3dunet HDF5 files (/raw, /label) -> TFRecords',
    'nnunet': 'an nnU-Net raw dataset (v2 DatasetXXX, v1 TaskXXX) -> TFRecords',
}


def usage() -> str:
  width = max(len(name) for name in CONVERTERS)
  lines = ['usage: unet3d-convert <dataset> [--flags]  '
           '(unet3d-convert <dataset> --help: its flags)', '', 'datasets:']
  lines += [f'  {name:<{width}}  {what}' for name, what in CONVERTERS.items()]
  return '\n'.join(lines)


def main(argv=None) -> None:
  """Runs the converter argv[1] names on the rest of argv (default sys.argv).

  Exits 0 after printing the usage for --help, 2 for a missing or unknown
  dataset.
  """
  argv = list(sys.argv if argv is None else argv)
  name = argv[1] if len(argv) > 1 else None
  if name in ('-h', '--help', 'help'):
    print(usage())
    return
  if name not in CONVERTERS:
    print(usage(), file=sys.stderr)
    print(f'error: unet3d-convert: expected a dataset ('
          f"{', '.join(CONVERTERS)}), got {name!r}", file=sys.stderr)
    sys.exit(2)
  module = importlib.import_module(f'{__name__}.{name}')
  module.main([f'{argv[0]} {name}'] + argv[2:])

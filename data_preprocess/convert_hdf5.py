"""`unet3d-convert hdf5` from a checkout, with the same flags
(unet3d/cli/convert/hdf5.py)."""

from unet3d.cli.convert import hdf5

if __name__ == '__main__':
  hdf5.main()
